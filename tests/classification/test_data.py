"""Dataset readers: CIFAR-100 official pickle files, ImageNet-style folders, Fashion-MNIST IDX
files, scikit-learn digits; subsets and the evaluation shard sampler."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from nd_det.classification.data import (
    CIFAR100Dataset,
    ShardSampler,
    build_dataset,
    load_digits_split,
    load_fashion_mnist,
    read_idx,
)
from nd_det.classification.data.transforms import CIFAR100_MEAN, CIFAR100_STD
from nd_det.errors import ConfigError, FileError, input_stage

from .helpers import data_cfg, write_tiny_cifar100


def test_cifar100_reads_the_official_pickle_format(tmp_path):
    written = write_tiny_cifar100(tmp_path, n_train=6, n_test=4)
    # the files really use the official byte-string keys
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"} <= set(raw)

    for split, train in (("train", True), ("test", False)):
        data, fine = written[split]
        dataset = CIFAR100Dataset(str(tmp_path), train, verify_checksums=False)
        assert len(dataset) == len(fine)
        assert dataset.classes[:2] == ["fine00", "fine01"] and len(dataset.classes) == 100
        for i in range(len(fine)):
            image, label = dataset[i]
            expected = data[i].reshape(3, 32, 32).transpose(1, 2, 0)  # planes -> HWC
            assert np.array_equal(np.asarray(image), expected)
            assert label == fine[i]

    # through the config builder: normalised tensors of the test split
    test_set, info = build_dataset(
        data_cfg(name="cifar100", root=str(tmp_path), verify_checksums=False),
        train=False,
        augment=False,
    )
    image, label = test_set[1]
    data, fine = written["test"]
    expected = torch.from_numpy(data[1].reshape(3, 32, 32)).float() / 255
    expected = (expected - torch.tensor(CIFAR100_MEAN)[:, None, None]) / torch.tensor(CIFAR100_STD)[
        :, None, None
    ]
    torch.testing.assert_close(image, expected)
    assert (label, info.num_classes, info.in_channels) == (fine[1], 100, 3)


def test_cifar100_errors_name_the_file_and_the_fix(tmp_path):
    fix = r"extract cifar-100-python\.tar\.gz .* into data\.root, set data\.download true"
    with pytest.raises(
        FileError, match=r"cifar-100-python/train is missing or not the official CIFAR-100 file: "
    ):
        CIFAR100Dataset(str(tmp_path), True)
    write_tiny_cifar100(tmp_path)
    with pytest.raises(
        FileError,
        match=r"cifar-100-python/(train|test|meta) is missing or not "
        r"the official CIFAR-100 file: " + fix + r", or data.verify_checksums false",
    ):
        CIFAR100Dataset(str(tmp_path), True, verify_checksums=True)


def test_image_folder(tmp_path):
    rng = np.random.RandomState(0)
    for split, per_class in (("train", 3), ("val", 2)):
        for cls in ("cat", "ant"):
            os.makedirs(tmp_path / split / cls)
            for i in range(per_class):
                pixels = rng.randint(0, 256, size=(40, 50, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    folder = data_cfg(name="image_folder", root=str(tmp_path), image_size=32)
    train, info = build_dataset(folder, train=True, augment=True)
    val, _ = build_dataset(folder, train=False, augment=False)
    assert (len(train), len(val), info.classes, info.num_classes) == (6, 4, ["ant", "cat"], 2)
    image, label = val[3]
    assert image.shape == (3, 32, 32) and label == 1
    # torchvision's own error, one line through the tools' input stage
    with pytest.raises(ConfigError, match=r"data: FileNotFoundError: .*nowhere/train"):
        with input_stage("data"):
            build_dataset(data_cfg(name="image_folder", root=str(tmp_path / "nowhere")), 1, 1)


def _write_idx(path, array: np.ndarray, type_code: int = 0x08) -> None:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_fashion_mnist_idx_files(tmp_path):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(5, 28, 28)).astype(np.uint8)
    labels = np.array([3, 0, 9, 9, 1], dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    assert np.array_equal(read_idx(str(tmp_path / "t10k-images-idx3-ubyte.gz")), images)
    dataset = load_fashion_mnist(str(tmp_path), train=False)
    assert len(dataset) == 5 and dataset.classes[9] == "Ankle boot"
    image, label = dataset[2]
    assert torch.equal(image, torch.from_numpy(images[2])[None]) and label == 9

    with pytest.raises(
        FileError,
        match=r"train-images-idx3-ubyte\(\.gz\) not found.*"
        r"apt-get install dataset-fashion-mnist",
    ):
        load_fashion_mnist(str(tmp_path), train=True)
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(FileError, match=r"bad\.gz is not an IDX file \(bad magic number 01020801"):
        read_idx(str(bad))
    with gzip.open(bad, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 7)
    with pytest.raises(ValueError, match=r"cannot reshape array of size 7 into shape \(10,\)"):
        read_idx(str(bad))  # numpy's own check of a truncated file


def test_digits_split_is_stratified_disjoint_and_fixed():
    train, test = load_digits_split(True), load_digits_split(False)
    assert (len(train), len(test)) == (1438, 359)
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    counts = torch.bincount(test.targets, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20 % of each class
    all_images = torch.cat([train.images, test.images]).flatten(1)
    assert torch.unique(all_images, dim=0).shape[0] >= 1797 - 20  # (sklearn has a few duplicates)
    assert torch.equal(load_digits_split(False).images, test.images)


def test_subset_is_fixed_and_checked():
    cfg = data_cfg(name="digits", train_subset=50, subset_seed=3)
    a, _ = build_dataset(cfg, True, False)
    b, _ = build_dataset(cfg, True, False)
    assert len(a) == 50 and a.indices == b.indices
    with pytest.raises(ConfigError, match=r"data.train_subset 5000: give 1 to 1438"):
        build_dataset(data_cfg(name="digits", train_subset=5000), True, False)
    with pytest.raises(
        ConfigError,
        match=r"unknown dataset data.name='mnist'; available: cifar100, "
        r"digits, fashion_mnist, image_folder",
    ):
        build_dataset(data_cfg(name="mnist"), True, False)


def test_shard_sampler_covers_every_index_once():
    for size, world in ((10, 3), (2, 4), (7, 1)):
        shards = [list(ShardSampler(size, r, world)) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(size))
        assert [len(ShardSampler(size, r, world)) for r in range(world)] == [len(s) for s in shards]
