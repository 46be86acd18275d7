"""Class-mean tables: accumulation, merging, all-reduce, the file format and its validation."""

import os

import pytest
import torch
import torch.multiprocessing as mp

from nd_det.class_means import (
    ClassMeanAccumulator,
    ClassMeans,
    load_class_means,
    metadata_mismatches,
    save_class_means,
)
from nd_det.errors import DataError

NUM_CLASSES, DIM = 5, 7
METADATA = {
    "teacher_config": "configs/teacher.yaml",
    "teacher_weights": "teacher.pkl",
    "num_images": 12,
}


def _samples(n, seed, num_classes=NUM_CLASSES, dim=DIM):
    g = torch.Generator()
    g.manual_seed(seed)
    feats = torch.randn(n, dim, generator=g) * 10 + 3
    labels = torch.randint(0, num_classes, (n,), generator=g)
    labels[:num_classes] = torch.arange(num_classes)  # every class present
    return feats, labels


def _table(seed=0):
    feats, labels = _samples(60, seed)
    acc = ClassMeanAccumulator(NUM_CLASSES, DIM)
    acc.update(feats, labels)
    return acc.finalize(METADATA)


def _raw_payload(table, **overrides):
    payload = {
        "format": "nd_det.class_means",
        "version": 1,
        "means": table.means.clone(),
        "counts": table.counts.clone(),
        "metadata": dict(table.metadata),
    }
    payload.update(overrides)
    return payload


# ----------------------------------------------------------------------------- accumulation
def test_two_halves_merged_equal_one_pass_and_the_plain_per_class_mean():
    feats, labels = _samples(101, seed=1)
    one_pass = ClassMeanAccumulator(NUM_CLASSES, DIM)
    one_pass.update(feats, labels)

    first, second = ClassMeanAccumulator(NUM_CLASSES, DIM), ClassMeanAccumulator(NUM_CLASSES, DIM)
    first.update(feats[:40], labels[:40])
    second.update(feats[40:], labels[40:])
    merged = first.merge(second)

    assert merged.sums.dtype == torch.float64
    assert torch.allclose(merged.sums, one_pass.sums, rtol=0, atol=1e-12)
    assert torch.equal(merged.counts, one_pass.counts)
    a, b = merged.finalize(METADATA), one_pass.finalize(METADATA)
    assert torch.allclose(a.means, b.means, rtol=0, atol=1e-6)
    assert torch.equal(a.counts, b.counts)
    for c in range(NUM_CLASSES):
        rows = feats[labels == c].double()
        assert a.counts[c].item() == rows.shape[0]
        assert torch.allclose(a.means[c].double(), rows.mean(dim=0), rtol=0, atol=1e-5)


def test_update_ignores_empty_batches_and_torch_refuses_bad_shapes():
    acc = ClassMeanAccumulator(NUM_CLASSES, DIM)
    acc.update(torch.zeros(0, DIM), torch.zeros(0, dtype=torch.long))
    assert acc.counts.sum().item() == 0
    with pytest.raises(RuntimeError, match=r"source tensor shape must match self tensor shape"):
        acc.update(torch.zeros(3, 6), torch.zeros(3, dtype=torch.long))
    with pytest.raises((RuntimeError, IndexError)):
        acc.update(torch.zeros(3, DIM), torch.zeros(2, dtype=torch.long))
    with pytest.raises(RuntimeError, match=r"size of tensor a \(5\) must match"):
        acc.merge(ClassMeanAccumulator(4, DIM))
    assert acc.counts.sum().item() == 0


def test_finalize_names_the_empty_classes():
    acc = ClassMeanAccumulator(NUM_CLASSES, DIM)
    acc.update(torch.ones(3, DIM), torch.tensor([0, 2, 2]))
    with pytest.raises(DataError, match=r"no samples for class\(es\) 1, 3, 4: "):
        acc.finalize()
    with pytest.raises(DataError, match=r"class\(es\) 1 \(dog\), 3 \(cat\), 4 \(bird\)"):
        acc.finalize(class_names=["person", "dog", "car", "cat", "bird"])


def test_allow_empty_fills_zero_rows_flags_them_and_the_file_loads(tmp_path):
    acc = ClassMeanAccumulator(NUM_CLASSES, DIM)
    acc.update(torch.full((3, DIM), 2.0), torch.tensor([0, 2, 2]))
    table = acc.finalize(METADATA, allow_empty=True)
    assert table.metadata["zero_filled_classes"] == [1, 3, 4]
    assert table.zero_filled_classes == [1, 3, 4]
    assert torch.equal(table.means[[1, 3, 4]], torch.zeros(3, DIM))
    assert torch.equal(table.means[[0, 2]], torch.full((2, DIM), 2.0))
    path = tmp_path / "means.pth"
    save_class_means(str(path), table)
    loaded = load_class_means(str(path), num_classes=NUM_CLASSES, dim=DIM)
    assert loaded.zero_filled_classes == [1, 3, 4]
    assert torch.equal(loaded.means, table.means)


# ----------------------------------------------------------------------------- file round trip
def test_save_load_round_trip_equals_the_one_pass_table(tmp_path):
    feats, labels = _samples(80, seed=2)
    first, second = ClassMeanAccumulator(NUM_CLASSES, DIM), ClassMeanAccumulator(NUM_CLASSES, DIM)
    first.update(feats[:33], labels[:33])
    second.update(feats[33:], labels[33:])
    table = first.merge(second).finalize(METADATA)

    path = tmp_path / "sub" / "means.pth"  # missing folders are created
    save_class_means(str(path), table)
    loaded = load_class_means(str(path), num_classes=NUM_CLASSES, dim=DIM)

    one_pass = ClassMeanAccumulator(NUM_CLASSES, DIM)
    one_pass.update(feats, labels)
    reference = one_pass.finalize(METADATA)
    assert loaded.means.dtype == torch.float32 and loaded.counts.dtype == torch.int64
    assert torch.equal(loaded.means, table.means)
    assert torch.allclose(loaded.means, reference.means, rtol=0, atol=1e-6)
    assert torch.equal(loaded.counts, reference.counts)
    assert loaded.metadata == {**METADATA, "zero_filled_classes": []}
    assert (loaded.num_classes, loaded.dim) == (NUM_CLASSES, DIM)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "means.pth"
    save_class_means(str(path), _table(seed=3))
    save_class_means(str(path), _table(seed=4))  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["means.pth"]
    assert torch.equal(load_class_means(str(path)).means, _table(seed=4).means)


def test_a_failed_save_leaves_the_existing_file_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "means.pth"
    save_class_means(str(path), _table(seed=5))
    before = path.read_bytes()

    def write_half_then_fail(obj, f, *args, **kwargs):
        f.write(before[: len(before) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_class_means(str(path), _table(seed=6))
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["means.pth"]
    assert torch.equal(load_class_means(str(path)).means, _table(seed=5).means)


def test_save_refuses_an_invalid_table(tmp_path):
    table = _table()
    table.means[2, 0] = float("nan")
    path = tmp_path / "means.pth"
    with pytest.raises(DataError, match=r"NaN/inf in class-mean row\(s\) 2"):
        save_class_means(str(path), table)
    assert not path.exists()
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- bad files
def _write(path, payload):
    torch.save(payload, str(path))
    return str(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(DataError, match=r"class-means file not found: .*nowhere\.pth"):
        load_class_means(str(path))


def test_plain_tensor_file_is_not_a_class_means_file(tmp_path):
    path = _write(tmp_path / "tensor.pth", torch.randn(NUM_CLASSES, DIM))
    with pytest.raises(DataError, match=r"tensor\.pth is not an nd-det class-means file"):
        load_class_means(path)


def test_dict_without_the_format_tag_is_not_a_class_means_file(tmp_path):
    table = _table()
    path = _write(tmp_path / "other.pth", {"means": table.means, "counts": table.counts})
    with pytest.raises(DataError, match=r"other\.pth is not an nd-det class-means file"):
        load_class_means(path)


def test_text_file_cannot_be_read(tmp_path):
    path = tmp_path / "means.txt"
    path.write_text("0 1.0 2.0\n")
    with pytest.raises(DataError, match=r"cannot read class-means file .*means\.txt"):
        load_class_means(str(path))


@pytest.mark.parametrize(
    "name, text",
    [
        ("R101_emb.json", '{\n    "15": [\n        0.8548\n    ]\n}'),  # recognised by its name
        ("means.pth", '\ufeff  {"0": [1.0, 2.0]}'),  # by its content (BOM and spaces first)
        ("R50_emb.JSON", "not even JSON"),
    ],
)
def test_a_json_table_names_the_importer(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as error:
        load_class_means(str(path))
    message = str(error.value)
    assert message.startswith(f"{path} is a JSON table (like the reference code's R101_emb.json)")
    assert message.endswith(f"python tools/import_class_means.py --input {path}")
    assert "weights_only" not in message


def test_truncated_file(tmp_path):
    path = tmp_path / "means.pth"
    save_class_means(str(path), _table())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read class-means file .*means\.pth.*truncated"):
        load_class_means(str(path))


def test_wrong_number_of_classes(tmp_path):
    path = tmp_path / "means.pth"
    save_class_means(str(path), _table())
    with pytest.raises(DataError, match=r"means.pth holds 5 class rows but 81 are needed"):
        load_class_means(str(path), num_classes=81, dim=DIM)


def test_wrong_dimension(tmp_path):
    path = tmp_path / "means.pth"
    save_class_means(str(path), _table())
    with pytest.raises(
        DataError,
        match=r"means.pth has embedding dimension 7 but the teacher's embedding has 1024",
    ):
        load_class_means(str(path), num_classes=NUM_CLASSES, dim=1024)


def test_nan_row(tmp_path):
    table = _table()
    means = table.means.clone()
    means[3, 1] = float("nan")
    means[4, 0] = float("inf")
    path = _write(tmp_path / "means.pth", _raw_payload(table, means=means))
    with pytest.raises(DataError, match=r"NaN/inf in class-mean row\(s\) 3, 4;"):
        load_class_means(path)


def test_missing_unflagged_row(tmp_path):
    table = _table()
    counts = table.counts.clone()
    counts[1] = 0
    means = table.means.clone()
    means[1] = 0.0
    path = _write(tmp_path / "means.pth", _raw_payload(table, means=means, counts=counts))
    with pytest.raises(
        DataError,
        match=r"missing class row\(s\) 1 \(zero samples, not flagged as filled\)",
    ):
        load_class_means(path)
    # the same row flagged as filled is accepted
    flagged = _raw_payload(
        table, means=means, counts=counts, metadata={**table.metadata, "zero_filled_classes": [1]}
    )
    assert load_class_means(_write(tmp_path / "flagged.pth", flagged)).zero_filled_classes == [1]


def test_wrong_version(tmp_path):
    path = _write(tmp_path / "means.pth", _raw_payload(_table(), version=2))
    with pytest.raises(
        DataError, match=r"is not an nd-det class-means file \(nd_det.class_means v1\)"
    ):
        load_class_means(path)


@pytest.mark.parametrize("key", ["means", "counts"])
def test_missing_entry(tmp_path, key):
    payload = _raw_payload(_table())
    del payload[key]
    path = _write(tmp_path / "means.pth", payload)
    with pytest.raises(DataError, match=f"\\(KeyError: '{key}'\\): truncated or not a class-means"):
        load_class_means(path)


def test_counts_of_the_wrong_length(tmp_path):
    table = _table()
    path = _write(tmp_path / "means.pth", _raw_payload(table, counts=table.counts[:3]))
    with pytest.raises(DataError, match=r"not a \(C, D\) tensor of means with \(C,\) counts"):
        load_class_means(path)


def test_metadata_mismatches_report_differing_keys():
    table = ClassMeans(
        torch.zeros(2, 3),
        torch.ones(2, dtype=torch.long),
        {"teacher_config": "a.yaml", "teacher_weights": "a.pkl", "scale": 0.1 + 0.2},
    )
    assert metadata_mismatches(table, {"teacher_config": "a.yaml", "scale": 0.3}) == []
    assert metadata_mismatches(
        table, {"teacher_config": "b.yaml", "teacher_weights": "a.pkl", "dataset": "coco"}
    ) == [
        "teacher_config: file has 'a.yaml', expected 'b.yaml'",
        "dataset: file has None, expected 'coco'",
    ]


# ----------------------------------------------------------------------------- all-reduce
_WORLD_SIZE = 2


def _all_reduce_worker(rank, init_file, data_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=_WORLD_SIZE
    )
    try:
        feats, labels = torch.load(data_file)
        mine = slice(rank, None, _WORLD_SIZE)
        acc = ClassMeanAccumulator(NUM_CLASSES, DIM)
        acc.update(feats[mine], labels[mine])
        acc.all_reduce()
        torch.save(
            {"sums": acc.sums, "counts": acc.counts}, os.path.join(out_dir, f"rank{rank}.pt")
        )
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_two_gloo_processes_equals_one_process(tmp_path):
    feats, labels = _samples(30, seed=9)
    labels[1::2][labels[1::2] == 4] = 3  # class 4 appears on rank 0 only
    data_file = tmp_path / "data.pt"
    torch.save((feats, labels), str(data_file))
    mp.spawn(
        _all_reduce_worker,
        args=(str(tmp_path / "init"), str(data_file), str(tmp_path)),
        nprocs=_WORLD_SIZE,
        join=True,
    )

    one_process = ClassMeanAccumulator(NUM_CLASSES, DIM)
    one_process.update(feats, labels)
    for rank in range(_WORLD_SIZE):
        result = torch.load(str(tmp_path / f"rank{rank}.pt"))
        assert torch.allclose(result["sums"], one_process.sums, rtol=0, atol=1e-12), rank
        assert torch.equal(result["counts"], one_process.counts), rank


def test_all_reduce_without_a_process_group_changes_nothing():
    feats, labels = _samples(10, seed=10)
    acc = ClassMeanAccumulator(NUM_CLASSES, DIM)
    acc.update(feats, labels)
    sums, counts = acc.sums.clone(), acc.counts.clone()
    acc.all_reduce()
    assert torch.equal(acc.sums, sums) and torch.equal(acc.counts, counts)


# ----------------------------------------------------------------------------- rows ND cannot use
NAMES = ["person", "dog", "car", "cat", "bird"]


def _named_table():
    table = _table()
    return ClassMeans(table.means, table.counts, {**table.metadata, "class_names": NAMES})


@pytest.mark.parametrize("scale", [0.0, 1e-13, 1e-7])
def test_a_row_of_zero_or_near_zero_norm_is_refused_by_class_name(tmp_path, scale):
    """ND divides each mean by its norm: a row of (almost) no length has no direction; the
    loss of a silently accepted one would be a constant (zero row) or float32 noise."""
    table = _named_table()
    means = table.means.clone()
    means[3] = scale * torch.ones(DIM)  # the other rows have norms of about 10
    path = _write(tmp_path / "means.pth", _raw_payload(table, means=means))
    with pytest.raises(
        DataError,
        match=r"class-mean row\(s\) 3 \(cat\) have \(almost\) zero "
        r"norm and are not flagged as zero-filled",
    ):
        load_class_means(path)
    with pytest.raises(DataError, match=r"3 \(cat\) have \(almost\) zero norm"):
        save_class_means(str(tmp_path / "new.pth"), ClassMeans(means, table.counts, table.metadata))
    assert not (tmp_path / "new.pth").exists()


def test_non_finite_and_missing_rows_are_named_by_class(tmp_path):
    table = _named_table()
    means = table.means.clone()
    means[4, 0] = float("nan")
    with pytest.raises(DataError, match=r"NaN/inf in class-mean row\(s\) 4 \(bird\);"):
        load_class_means(_write(tmp_path / "nan.pth", _raw_payload(table, means=means)))
    counts = table.counts.clone()
    counts[2] = 0
    with pytest.raises(DataError, match=r"missing class row\(s\) 2 \(car\) \(zero samples"):
        load_class_means(_write(tmp_path / "zero.pth", _raw_payload(table, counts=counts)))


def test_extraction_never_writes_a_directionless_row_without_flagging_it(tmp_path, caplog):
    """A class whose samples average to (almost) nothing (the teacher's embeddings of it are
    zero, or cancel out) is refused by name; with consent its row is zero-filled and flagged,
    and loading the table warns, naming it."""
    acc = ClassMeanAccumulator(NUM_CLASSES, DIM)
    feats, labels = _samples(40, seed=3)
    feats[labels == 1] = 0.0  # dead teacher features for class 1
    acc.update(feats, labels)
    with pytest.raises(
        DataError,
        match=r"the mean of class\(es\) 1 \(dog\) has \(almost\) zero "
        r"norm although they have samples: ND needs a direction for each class",
    ):
        acc.finalize(METADATA, class_names=NAMES)
    table = acc.finalize({**METADATA, "class_names": NAMES}, allow_empty=True, class_names=NAMES)
    assert table.zero_filled_classes == [1] and torch.equal(table.means[1], torch.zeros(DIM))
    path = tmp_path / "means.pth"
    save_class_means(str(path), table)
    with caplog.at_level("WARNING", logger="nd_det.class_means.table"):
        assert load_class_means(str(path)).zero_filled_classes == [1]
    assert (
        f"{path}: ND pulls no direction for class(es) 1 (dog): their rows were zero-filled "
        "at extraction (--allow-empty-classes)"
    ) in caplog.text
