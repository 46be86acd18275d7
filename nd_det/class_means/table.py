"""Teacher class-mean tables: streaming accumulation, one file format, validated loading.

One format serves detection and classification.  A file is a ``torch.save``'d dict::

    {"format": "nd_det.class_means", "version": 1,
     "means": (C, D) float32, "counts": (C,) int64,
     "metadata": {"teacher_config": ..., "teacher_weights": ..., "zero_filled_classes": [...], ...}}

Accumulation keeps float64 per-class sums and int64 counts, so partial accumulators (two halves
of a dataset, or one per process after ``all_reduce``) merge into exactly the one-pass result.

ND normalises each mean to unit length, so a row it cannot take a direction from is refused,
naming the class (by the ``class_names`` of the metadata when it has them), when a table is
finalised, saved or loaded: a non-finite row, a row of zero or near-zero norm
(:func:`directionless_rows`), and a class with zero samples.  The one consent is
``allow_empty`` at extraction (``--allow-empty-classes`` of the tools): such rows are then
zero-filled and listed in ``metadata["zero_filled_classes"]`` (ND pulls no direction for them;
loading the table warns, naming them).
"""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..errors import DataError, UserError
from ..utils.atomic_file import atomic_torch_save
from ..utils.safe_pickle import load_torch
from ..utils.text import first_line, short_list

logger = logging.getLogger(__name__)

__all__ = [
    "ClassMeans",
    "ClassMeanAccumulator",
    "save_class_means",
    "load_class_means",
    "metadata_mismatches",
    "directionless_rows",
]

FORMAT = "nd_det.class_means"
VERSION = 1
# a mean whose norm is at most this fraction of the median row norm gives ND no direction that
# float32 rounding would not decide; ND_NORM_FLOOR is the norm nd_loss divides by at least
RELATIVE_MIN_NORM = 1e-6
ND_NORM_FLOOR = 1e-12


@dataclass
class ClassMeans:
    """A (C, D) table of class means with per-class sample counts and metadata."""

    means: torch.Tensor
    counts: torch.Tensor
    metadata: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def zero_filled_classes(self) -> list[int]:
        """The classes that had no sample: their rows are zeros (flagged at extraction)."""
        return [int(c) for c in self.metadata.get("zero_filled_classes", [])]


class ClassMeanAccumulator:
    """Streaming per-class sums and counts of embeddings.

    >>> acc = ClassMeanAccumulator(num_classes=3, dim=4)
    >>> acc.update(torch.randn(10, 4), torch.randint(0, 3, (10,)))
    >>> acc.all_reduce()          # no-op unless torch.distributed is initialised
    >>> table = acc.finalize({"teacher_config": "..."})
    """

    def __init__(self, num_classes: int, dim: int, device="cpu"):
        self.sums = torch.zeros(num_classes, dim, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_classes, dtype=torch.int64, device=device)

    @property
    def num_classes(self) -> int:
        return self.sums.shape[0]

    @property
    def dim(self) -> int:
        return self.sums.shape[1]

    @torch.no_grad()
    def update(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Add ``feats`` (N, D) under ``labels`` (N,) (``index_add_`` refuses other shapes)."""
        labels = labels.to(self.counts.device, torch.int64)
        self.sums.index_add_(0, labels, feats.to(self.sums.device, torch.float64))
        self.counts += torch.bincount(labels, minlength=self.num_classes)

    def merge(self, other: "ClassMeanAccumulator") -> "ClassMeanAccumulator":
        self.sums += other.sums.to(self.sums.device)
        self.counts += other.counts.to(self.counts.device)
        return self

    def all_reduce(self) -> None:
        """Sum sums and counts over all processes (no-op when not distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.sums)
            dist.all_reduce(self.counts)

    def empty_classes(self) -> list[int]:
        return torch.nonzero(self.counts == 0).flatten().tolist()

    def finalize(
        self,
        metadata: Optional[dict] = None,
        allow_empty: bool = False,
        class_names: Optional[Sequence[str]] = None,
    ) -> ClassMeans:
        """The table of means.  A class without samples, or whose mean has (almost) zero norm
        (:func:`directionless_rows`), is an error naming it unless ``allow_empty``: then its
        row is zero (ND then pulls no direction for it: the loss term is a constant 1) and it is
        listed in ``metadata["zero_filled_classes"]``."""
        empty = self.empty_classes()
        metadata = dict(metadata or {})
        means = (self.sums / self.counts.clamp_min(1).unsqueeze(1).to(self.sums.dtype)).float()
        weak = [c for c in directionless_rows(means) if c not in empty]
        if (empty or weak) and not allow_empty:
            names = ", ".join(class_labels(empty or weak, class_names))
            what = (
                f"no samples for class(es) {names}" if empty else f"the mean of class(es) {names}"
            )
            what += "" if empty else " has (almost) zero norm although they have samples"
            hint = "use more images, check the teacher, or allow empty classes (zero-filled rows)"
            raise DataError(f"{what}: ND needs a direction for each class; {hint}")
        means[weak] = 0.0
        metadata["zero_filled_classes"] = sorted(empty + weak)
        return ClassMeans(means.cpu(), self.counts.cpu().clone(), metadata)


def directionless_rows(means: torch.Tensor) -> list[int]:
    """The finite rows of ``means`` whose norm is at most ``ND_NORM_FLOOR`` or at most
    ``RELATIVE_MIN_NORM`` times the median norm of the finite rows."""
    norms = means.detach().double().norm(dim=1)
    finite = torch.isfinite(norms)
    median = float(norms[finite].median()) if bool(finite.any()) else 0.0
    limit = max(ND_NORM_FLOOR, RELATIVE_MIN_NORM * median)
    return torch.nonzero(finite & (norms <= limit)).flatten().tolist()


def class_labels(indices: Sequence[int], names: Optional[Sequence[str]]) -> list[str]:
    """``"3 (dog)"`` for each class index, or ``"3"`` where ``names`` has no name for it."""
    name = {i: " ".join(str(names[i]).split())[:40] for i in indices if 0 <= i < len(names or [])}
    return [f"{i} ({name[i]})" if i in name else str(i) for i in indices]


def save_class_means(path: str, table: ClassMeans) -> None:
    """Write ``table`` to ``path`` atomically (a temporary file, then a rename)."""
    _validate(table, source=str(path))
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "means": table.means.detach().float().cpu().contiguous(),
        "counts": table.counts.detach().to(torch.int64).cpu().contiguous(),
        "metadata": dict(table.metadata),
    }
    atomic_torch_save(payload, path)


def load_class_means(
    path: str, num_classes: Optional[int] = None, dim: Optional[int] = None
) -> ClassMeans:
    """Read a class-means file (as data: :func:`~nd_det.utils.safe_pickle.load_torch`) and
    check it: one :class:`DataError` naming the file when it is missing, a JSON table (the
    reference's), not a class-means file, truncated, of the wrong number of classes or
    dimension, or has rows ND cannot take a direction from that are not flagged as filled."""
    if _looks_like_json(path):
        raise DataError(
            f"{path} is a JSON table (like the reference code's R101_emb.json), not a class-means "
            f"file: convert it once with python tools/import_class_means.py --input {path}"
        )
    try:
        payload = load_torch(path)
        tag = (payload.get("format"), payload.get("version")) if isinstance(payload, dict) else None
        if tag != (FORMAT, VERSION):
            raise DataError(f"{path} is not an nd-det class-means file ({FORMAT} v{VERSION})")
        metadata = dict(payload.get("metadata", {}))
        table = ClassMeans(payload["means"].float(), payload["counts"].long(), metadata)
        _validate(table, path, num_classes, dim)
        filled = class_labels(table.zero_filled_classes, metadata.get("class_names") or None)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - missing, truncated, not a torch file, malformed
        why = (
            f"class-means file not found: {path}"
            if isinstance(e, FileNotFoundError)
            else f"cannot read class-means file {path} ({first_line(e)}): truncated or not a "
            "class-means file"
        )
        fix = "Create it with tools/extract_class_means.py (--task classification for a classifier)"
        raise DataError(f"{why}. {fix}") from None
    if filled:
        logger.warning(
            "%s: ND pulls no direction for class(es) %s: their rows were zero-filled "
            "at extraction (--allow-empty-classes); re-extract with more images to "
            "give them a mean",
            path,
            short_list(filled, 10),
        )
    return table


def _looks_like_json(path: str) -> bool:
    """A ``.json`` name, or text starting with ``{`` / ``[`` (a torch file starts with a zip or
    pickle header, never with these)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(64)
    except OSError:
        head = b""  # reading the file reports it
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return str(path).lower().endswith(".json") or start in (b"{", b"[")


def _validate(table: ClassMeans, source: str, num_classes=None, dim=None) -> None:
    means, counts, filled = table.means, table.counts, set(table.zero_filled_classes)
    if not (torch.is_tensor(means) and means.dim() == 2 and torch.is_tensor(counts)) or (
        counts.shape != means.shape[:1]
    ):
        raise DataError(f"{source}: not a (C, D) tensor of means with (C,) counts")
    if num_classes not in (None, means.shape[0]):
        raise DataError(f"{source} holds {means.shape[0]} class rows but {num_classes} are needed")
    if dim not in (None, means.shape[1]):
        dims = f"embedding dimension {means.shape[1]} but the teacher's embedding has {dim}"
        raise DataError(f"{source} has {dims}")
    nonfinite = torch.nonzero(~torch.isfinite(means).all(dim=1)).flatten().tolist()
    missing = [c for c in torch.nonzero(counts == 0).flatten().tolist() if c not in filled]
    weak = [c for c in directionless_rows(means) if c not in filled]
    for kind, bad in (
        ("NaN/inf in class-mean row(s) {}", nonfinite),
        ("missing class row(s) {} (zero samples, not flagged as filled)", missing),
        ("class-mean row(s) {} have (almost) zero norm and are not flagged as zero-filled", weak),
    ):
        if bad:
            names = short_list(class_labels(bad, table.metadata.get("class_names") or None), 10)
            raise DataError(f"{source}: {kind.format(names)}; ND needs a direction: re-extract it")


def metadata_mismatches(table: ClassMeans, expected: dict) -> list[str]:
    """Human-readable differences between ``table.metadata`` and ``expected`` (only the keys
    present in ``expected`` are compared; a key absent from the file counts as a difference)."""

    def same(got, want) -> bool:
        floats = isinstance(got, float) and isinstance(want, float)
        return got == want or (floats and math.isclose(got, want))

    return [
        f"{key}: file has {table.metadata.get(key)!r}, expected {want!r}"
        for key, want in expected.items()
        if not same(table.metadata.get(key), want)
    ]
