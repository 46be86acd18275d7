"""Mutations of valid files for the fuzz tests of the readers (hypothesis strategies).

A mutation is a short list of edits applied to a deep copy of a valid document (a COCO JSON, a
class-means payload, a reference JSON table, a checkpoint's state): set a value found at a path
of the document to something of another type (NaN, infinities, huge numbers, strings, lists,
dicts, None), delete it, duplicate a list entry (duplicated ids), point a reference elsewhere,
give an annotation an odd segmentation; or cut the written file short.  Paths that an earlier
edit removed are skipped, so every drawn mutation applies."""

import copy
import json
import math

from hypothesis import strategies as st

__all__ = [
    "paths",
    "json_values",
    "json_edits",
    "apply_edits",
    "ODD_SEGMENTATIONS",
    "same",
    "dumps",
]

# what a JSON document may hold, including what Python's json reads and writes beyond the
# standard (NaN, Infinity)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)

ODD_SEGMENTATIONS = [
    [],
    [[]],
    [[1, 2, 3]],
    [[1, 2, 3, 4, 5]],
    [[1, 2, 3, 4, 5, 6], [7, 8]],
    [["a", "b", "c", "d", "e", "f"]],
    {"counts": [0, 10, 5], "size": [96, 128]},
    {"counts": "0`0", "size": [96, 128]},
    {"counts": [3, 4]},
    {"size": [96, 128]},
    "polygon",
    5,
    None,
    {},
]


def paths(document, prefix=()) -> list[tuple]:
    """Every path (keys and indices) to a value inside ``document``, outermost first."""
    found = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found += paths(value, prefix + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += paths(value, prefix + (index,))
    return found


def json_edits(document, extra_values=None):
    """Up to three edits of ``document``: ("set", path, value), ("delete", path),
    ("duplicate", path) for a list entry, ("cut", fraction) of the written text."""
    all_paths = paths(document)
    path = st.sampled_from(all_paths)
    value = json_values if extra_values is None else st.one_of(json_values, extra_values)
    edit = st.one_of(
        st.tuples(st.just("set"), path, value),
        st.tuples(st.just("delete"), path),
        st.tuples(st.just("duplicate"), path),
        st.tuples(st.just("cut"), st.floats(min_value=0.0, max_value=0.999)),
    )
    return st.lists(edit, min_size=1, max_size=3)


def _parent(document, path):
    for key in path[:-1]:
        if not isinstance(document, (dict, list)):
            raise TypeError("an earlier edit replaced this part")
        document = document[key]
    if not isinstance(document, (dict, list)):
        raise TypeError("an earlier edit replaced this part")
    return document


def apply_edits(document, edits):
    """(the edited deep copy, fraction of the text to keep or None)."""
    document = copy.deepcopy(document)
    cut = None
    for edit in edits:
        kind, *args = edit
        if kind == "cut":
            cut = args[0]
            continue
        path = args[0]
        try:
            parent = _parent(document, path)
            parent[path[-1]]  # still there
        except (KeyError, IndexError, TypeError):
            continue
        if kind == "set":
            parent[path[-1]] = copy.deepcopy(args[1])
        elif kind == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list):  # duplicate a list entry
            parent.insert(path[-1], copy.deepcopy(parent[path[-1]]))
    return document, cut


def dumps(document, cut=None) -> str:
    text = json.dumps(document, allow_nan=True)
    return text if cut is None else text[: int(len(text) * cut)]


def _normal(value):
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {key: _normal(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_normal(item) for item in value)
    return value


def same(a, b) -> bool:
    """Equal, NaN equal to NaN."""
    return _normal(a) == _normal(b)
