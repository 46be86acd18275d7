"""Fuzzed readers (issue 36.2): valid files of each kind, mutated (types, missing keys, NaN and
infinite numbers, references that do not resolve, duplicated ids, odd segmentations, wrong
dtypes and shapes, extra keys, files cut short), read by nd-det's readers.  Every outcome is
either success or ONE ``UserError`` line naming the file; any other exception fails the test,
and so does a success that is not what the file says:

* COCO JSON (``load_coco_records``): the records equal detectron2's ``load_coco_json`` of the
  same file, and every record becomes training targets through detectron2's mapping steps;
* class-mean tables (``load_class_means``): float rows of the asked shape, finite, each with a
  direction or flagged as zero-filled;
* the reference's JSON tables (``read_published_table``): (classes + 1) x dim finite rows, none
  without a direction;
* weights files, .pth and .pkl (``load_student_checkpoint``): every key matched, each weight equal
  to the file's.

The suite runs a few examples per reader (fixed, derandomized).  The long run (documented in
docs/reliability.md) draws random examples and prints the outcomes per reader::

    ND_DET_FUZZ_EXAMPLES=10000 python -m pytest -p no:cacheprovider -n 0 -s \\
        tests/test_fuzz_readers.py
"""

import collections
import json
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.data.datasets import load_coco_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nd_det.class_means import ClassMeans, load_class_means, save_class_means
from nd_det.class_means.reference import read_published_table
from nd_det.data import image_scan, load_coco_records
from nd_det.errors import UserError
from nd_det.modeling import load_student_checkpoint

from .helpers.fuzz_files import ODD_SEGMENTATIONS, apply_edits, dumps, json_edits, same
from .helpers.tiny_coco import write_tiny_coco

EXAMPLES = int(os.environ.get("ND_DET_FUZZ_EXAMPLES", "0"))
LONG = EXAMPLES > 0
FUZZ = settings(
    max_examples=EXAMPLES or 100,
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=list(HealthCheck),
)
OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if LONG:  # the long run's figures
        for reader, counts in sorted(OUTCOMES.items()):
            print(
                f"\n{reader}: {sum(counts.values())} examples: {counts['success']} success, "
                f"{counts['refused']} refused in one line, 0 anything else"
            )


def _refused(reader: str, error: UserError, path) -> None:
    message = str(error)
    assert "\n" not in message and str(path) in message, message
    OUTCOMES[reader]["refused"] += 1


def _write(folder, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as stream:
        stream.write(data)
    return path


# ---------------------------------------------------------------- COCO JSON
@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A valid COCO file with what COCO allows (polygons, a crowd RLE, an empty segmentation,
    non-contiguous category ids, an image without boxes, extra fields), its images on disk."""
    root = tmp_path_factory.mktemp("fuzz_coco")
    json_path, image_dir = write_tiny_coco(
        root, num_images=3, seed=7, empty_images=1, category_ids=(1, 3)
    )
    data = json.loads(json_path.read_text())
    data["info"] = {"year": 2017}
    for annotation in data["annotations"]:
        x, y, w, h = annotation["bbox"]
        annotation["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    data["annotations"][0].update(
        iscrowd=1, segmentation={"counts": [0, 4, 10, 4], "size": [96, 128]}
    )
    data["annotations"][-1]["segmentation"] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        yield data, root, image_dir


def _coco_edits(data):
    annotation = st.integers(0, len(data["annotations"]) - 1)
    targeted = st.one_of(
        st.tuples(
            st.just("set"),
            annotation.map(lambda i: ("annotations", i, "segmentation")),
            st.sampled_from(ODD_SEGMENTATIONS),
        ),
        st.tuples(
            st.just("set"),
            st.tuples(
                st.just("annotations"),
                annotation,
                st.sampled_from(["image_id", "category_id", "id"]),
            ),
            st.integers(-1, 4),
        ),
        st.tuples(
            st.just("set"),
            st.tuples(st.just("images"), st.integers(0, 2), st.sampled_from(["id", "width"])),
            st.integers(-1, 130),
        ),
    )
    return st.one_of(json_edits(data), st.lists(targeted, min_size=1, max_size=3))


def _training_targets(record) -> None:
    """What detectron2's DatasetMapper does with a record's annotations for box training."""
    size = (record["height"], record["width"])
    annotations = []
    for obj in record["annotations"]:
        if obj.get("iscrowd", 0) == 0:
            obj = {k: v for k, v in obj.items() if k not in ("segmentation", "keypoints")}
            annotations.append(utils.transform_instance_annotations(obj, T.TransformList([]), size))
    instances = utils.filter_empty_instances(utils.annotations_to_instances(annotations, size))
    assert torch.isfinite(instances.gt_boxes.tensor).all()


@given(data=st.data())
@FUZZ
def test_coco_json(coco, data):
    document, root, image_dir = coco
    edited, cut = apply_edits(document, data.draw(_coco_edits(document)))
    path = _write(root, "instances.json", dumps(edited, cut).encode())
    try:
        records = load_coco_records(path, image_dir)
    except UserError as error:
        return _refused("COCO JSON", error, path)
    name = f"fuzz_coco_{sum(OUTCOMES['COCO JSON'].values())}"
    try:
        theirs = load_coco_json(path, str(image_dir), name)
    finally:
        MetadataCatalog.pop(name, None)
    assert same(records, theirs)
    for record in records:
        _training_targets(record)
    OUTCOMES["COCO JSON"]["success"] += 1


def test_the_fuzzed_coco_reader_saw_both_outcomes(coco):
    """The suite's examples reach both outcomes (the mutations are not all fatal)."""
    assert set(OUTCOMES["COCO JSON"]) == {"success", "refused"}, OUTCOMES["COCO JSON"]
    image_scan._MEMO.clear()


# ---------------------------------------------------------------- class-mean tables
CLASSES, DIM = 3, 4
tensors = st.one_of(
    st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.bool]).flatmap(
        lambda dtype: st.lists(st.integers(0, 5), min_size=0, max_size=3).map(
            lambda shape: (torch.randn(shape) * 3).to(dtype)
        )
    ),
    st.just(torch.full((CLASSES, DIM), float("nan"))),
    st.just(torch.zeros(CLASSES, DIM)),
    st.just(torch.zeros(CLASSES, dtype=torch.int64)),
)


@pytest.fixture(scope="module")
def means_payload(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_means")
    torch.manual_seed(0)
    table = ClassMeans(
        torch.randn(CLASSES, DIM) + 2,
        torch.tensor([4, 5, 6]),
        {
            "class_names": ["a", "b", "background"],
            "zero_filled_classes": [],
            "teacher_weights": "t",
        },
    )
    save_class_means(str(folder / "valid.pth"), table)
    return torch.load(folder / "valid.pth", weights_only=True), folder


@given(data=st.data())
@FUZZ
def test_class_mean_table(means_payload, data):
    payload, folder = means_payload
    edited, cut = apply_edits(payload, data.draw(json_edits(payload, tensors)))
    path = os.path.join(folder, "means.pth")
    torch.save(edited, path)
    if cut is not None:
        raw = open(path, "rb").read()
        _write(folder, "means.pth", raw[: int(len(raw) * cut)])
    shape = data.draw(st.sampled_from([(None, None), (CLASSES, DIM)]))
    try:
        table = load_class_means(path, *shape)
    except UserError as error:
        return _refused("class-mean tables", error, path)
    means = table.means
    assert means.dtype == torch.float32 and means.dim() == 2 and torch.isfinite(means).all()
    assert shape[0] in (None, means.shape[0]) and shape[1] in (None, means.shape[1])
    assert table.counts.shape == means.shape[:1]
    norms = means.norm(dim=1)
    assert all(norms[c] > 0 or c in table.zero_filled_classes for c in range(len(means)))
    OUTCOMES["class-mean tables"]["success"] += 1


# ---------------------------------------------------------------- the reference's JSON tables
@pytest.fixture(scope="module")
def reference_table(tmp_path_factory):
    rng = np.random.RandomState(0)
    table = {str(k): [round(float(v), 4) for v in rng.randn(DIM) + 1] for k in range(CLASSES)}
    return table, tmp_path_factory.mktemp("fuzz_reference")


@given(data=st.data())
@FUZZ
def test_reference_json_table(reference_table, data):
    table, folder = reference_table
    edited, cut = apply_edits(table, data.draw(json_edits(table)))
    text = dumps(edited, cut)
    if data.draw(st.booleans()) and text.startswith('{"0"'):  # a key twice
        text = '{"0": [1, 2, 3, 4], ' + text[1:]
    path = _write(folder, "R101_emb.json", text.encode())
    try:
        means, _ = read_published_table(path, num_classes=CLASSES - 1, dim=DIM)
    except UserError as error:
        return _refused("reference JSON tables", error, path)
    assert means.shape == (CLASSES, DIM) and torch.isfinite(means).all()
    assert (means.norm(dim=1) > 0).all()
    OUTCOMES["reference JSON tables"]["success"] += 1


# ---------------------------------------------------------------- weights files
class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 1)
        self.bn = torch.nn.BatchNorm2d(3)
        self.fc = torch.nn.Linear(3, 2)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyModel()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return model, state, tmp_path_factory.mktemp("fuzz_weights")


weight_values = st.one_of(
    st.sampled_from([torch.float16, torch.float64, torch.int64, torch.bool]).map(
        lambda dtype: ("dtype", dtype)
    ),
    st.lists(st.integers(0, 4), max_size=3).map(lambda shape: ("shape", tuple(shape))),
    json_edits({"x": [0]}).map(lambda _: ("value", "not a tensor")),
)


@given(data=st.data())
@FUZZ
def test_weights_file(weights, data):
    model, state, folder = weights
    state = {k: v.clone() for k, v in state.items()}
    for _ in range(data.draw(st.integers(0, 3))):
        key = data.draw(st.sampled_from(sorted(state) + ["extra.weight"]))
        kind, value = data.draw(weight_values)
        if data.draw(st.booleans()) and key in state:
            del state[key]
        elif kind == "dtype" and torch.is_tensor(state.get(key)):
            state[key] = state[key].to(value)
        elif kind == "shape":
            state[key] = torch.randn(value)
        else:
            state[key] = value
    suffix = data.draw(st.sampled_from([".pth", ".pkl"]))
    layout = data.draw(st.sampled_from(["checkpoint", "bare", "nested"]))
    if suffix == ".pkl":
        state = {k: v.numpy() if torch.is_tensor(v) else v for k, v in state.items()}
    content = {"checkpoint": {"model": state, "__author__": "fuzz"}, "bare": state}.get(
        layout, {"model": {"model": state}}
    )
    path = os.path.join(folder, "weights" + suffix)
    if suffix == ".pkl":
        raw = pickle.dumps(content)
    else:
        torch.save(content, path)
        raw = open(path, "rb").read()
    cut = data.draw(st.one_of(st.none(), st.floats(0.0, 0.999)))
    _write(folder, "weights" + suffix, raw if cut is None else raw[: int(len(raw) * cut)])
    try:
        load_student_checkpoint(model, path)
    except UserError as error:
        return _refused("weights files", error, path)
    loaded = model.state_dict()
    counters = {k for k in loaded if k.endswith("num_batches_tracked")}  # torch fills them in
    assert set(state) - counters == set(loaded) - counters, (sorted(state), sorted(loaded))
    for key, value in loaded.items():
        if key in state:
            assert torch.equal(value, torch.as_tensor(state[key]).to(value.dtype)), key
    OUTCOMES["weights files"]["success"] += 1
