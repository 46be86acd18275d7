"""Class-means extraction equals a slow per-sample reference, in the shared file format."""

import pytest
import torch
from torch.utils.data import DataLoader

from nd_det.class_means import load_class_means, save_class_means
from nd_det.class_means.classification import extract_class_means
from nd_det.classification import build_classifier
from nd_det.classification.config import get_cfg
from nd_det.classification.data import ShardSampler, build_dataset
from nd_det.errors import DataError


def _digits(train_subset: int):
    cfg = get_cfg()
    cfg.data.name, cfg.data.train_subset = "digits", train_subset
    return cfg.data


def _slow_reference(model, dataset, num_classes):
    """One image at a time, plain Python sums in float64."""
    model.eval()
    sums = [None] * num_classes
    counts = [0] * num_classes
    with torch.no_grad():
        for i in range(len(dataset)):
            image, label = dataset[i]
            embedding = model(image[None]).embedding[0].double()
            sums[label] = embedding if sums[label] is None else sums[label] + embedding
            counts[label] += 1
    return torch.stack([s / c for s, c in zip(sums, counts)]).float(), torch.tensor(counts)


def test_extraction_matches_the_per_sample_reference(tmp_path):
    dataset, info = build_dataset(_digits(120), train=True, augment=False)
    torch.manual_seed(0)
    model = build_classifier("wrn_16_1", info.num_classes, info.in_channels)
    model.train()  # extraction must switch to eval mode itself (BatchNorm running statistics)
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for images, _ in DataLoader(dataset, batch_size=60):
            model(images)
    expected_means, expected_counts = _slow_reference(model, dataset, info.num_classes)
    model.train()
    table = extract_class_means(
        model,
        DataLoader(dataset, batch_size=32),
        info.num_classes,
        torch.device("cpu"),
        {"teacher_model": "wrn_16_1"},
        class_names=info.classes,
    )
    assert model.training  # mode restored
    torch.testing.assert_close(table.means, expected_means, rtol=1e-5, atol=1e-5)
    assert torch.equal(table.counts, expected_counts)
    assert table.metadata["num_samples"] == 120 and table.metadata["teacher_model"] == "wrn_16_1"

    # two shards (as two ranks would see them) merged give the same table
    from nd_det.class_means import ClassMeanAccumulator

    merged = ClassMeanAccumulator(info.num_classes, model.embedding_dim)
    for rank in range(2):
        part = extract_class_means(
            model,
            DataLoader(dataset, batch_size=16, sampler=ShardSampler(len(dataset), rank, 2)),
            info.num_classes,
            torch.device("cpu"),
        )
        merged.sums += part.means.double() * part.counts[:, None]
        merged.counts += part.counts
    torch.testing.assert_close(merged.finalize().means, table.means, rtol=1e-5, atol=1e-5)

    path = tmp_path / "means.pth"
    save_class_means(str(path), table)
    loaded = load_class_means(str(path), num_classes=10, dim=model.embedding_dim)
    assert torch.equal(loaded.means, table.means) and loaded.metadata == table.metadata
    with pytest.raises(
        DataError,
        match=r"embedding dimension 64 but the teacher's embedding "
        r"has 128",
    ):
        load_class_means(str(path), num_classes=10, dim=128)


def test_a_class_without_samples_is_an_error():
    dataset, info = build_dataset(_digits(3), train=True, augment=False)
    model = build_classifier("resnet8", info.num_classes, info.in_channels)
    with pytest.raises(DataError, match=r"no samples for class\(es\) .*\(\d\)"):
        extract_class_means(
            model,
            DataLoader(dataset, batch_size=3),
            info.num_classes,
            torch.device("cpu"),
            class_names=info.classes,
        )
