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
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..errors import DataError
from ..utils.atomic_file import atomic_torch_save
from ..utils.text import short_list

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
        if num_classes <= 0 or dim <= 0:
            raise ValueError(f"num_classes and dim must be positive; got {num_classes}, {dim}")
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
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"expected features (N, {self.dim}); got {tuple(feats.shape)}")
        if labels.shape != feats.shape[:1]:
            raise ValueError(f"expected labels ({feats.shape[0]},); got {tuple(labels.shape)}")
        if labels.numel() == 0:
            return
        labels = labels.to(self.counts.device, torch.int64)
        self.sums.index_add_(0, labels, feats.to(self.sums.device, torch.float64))
        self.counts += torch.bincount(labels, minlength=self.num_classes)

    def merge(self, other: "ClassMeanAccumulator") -> "ClassMeanAccumulator":
        if other.sums.shape != self.sums.shape:
            raise ValueError(
                f"cannot merge accumulators of shapes {tuple(self.sums.shape)} and "
                f"{tuple(other.sums.shape)}"
            )
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
        if empty and not allow_empty:
            raise DataError(
                "no samples for class(es) "
                + ", ".join(class_labels(empty, class_names))
                + ": every class needs at least one sample for its mean. Use more images, or "
                "allow empty classes (their rows are zero-filled and flagged in the metadata)."
            )
        means = (self.sums / self.counts.clamp_min(1).unsqueeze(1).to(self.sums.dtype)).float()
        weak = [c for c in directionless_rows(means) if c not in empty]
        if weak and not allow_empty:
            raise DataError(
                "the mean of class(es) "
                + ", ".join(class_labels(weak, class_names))
                + " has (almost) zero norm although they have samples ("
                + ", ".join(str(int(self.counts[c])) for c in weak)
                + "): the teacher's "
                "embeddings of them are (nearly) all zero, and ND, which normalises each mean, "
                "can take no direction from it. Check the teacher and its weights, or allow "
                "empty classes (their rows are zero-filled and flagged in the metadata)."
            )
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
    return [f"{i} ({names[i]})" if names and i < len(names) else str(i) for i in indices]


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
    """Read and validate a class-means file.

    Raises :class:`DataError` naming the file and the problem when it is missing, not a
    class-means file, truncated, of the wrong number of classes or dimension, or has NaN/inf rows
    or rows without samples that are not flagged as filled.
    """
    if not os.path.isfile(path):
        raise DataError(
            f"class-means file not found: {path}. Create it with tools/extract_class_means.py "
            "(add --task classification for a classifier), or point the config at an existing "
            "file."
        )
    if _looks_like_json(path):
        raise DataError(
            f"{path} is a JSON table (like the reference code's R101_emb.json), not an nd-det "
            "class-means file: convert it once with python tools/import_class_means.py --input "
            f"{path} --output class_means/<name>.pth (add --teacher-config/--teacher-weights when "
            "its teacher is not the model-zoo R101-FPN 3x), then point the config at the .pth."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any read failure is reported the same way
        raise DataError(
            f"cannot read class-means file {path}: {type(e).__name__}: {e}. The file is truncated "
            "or not a class-means file; re-create it with the extraction tool."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(
            f"{path} is not an nd-det class-means file (no 'format': '{FORMAT}' entry); "
            "re-create it with the extraction tool."
        )
    if payload.get("version") != VERSION:
        raise DataError(
            f"{path} has class-means format version {payload.get('version')!r}; this nd-det reads "
            f"version {VERSION}."
        )
    try:
        table = ClassMeans(payload["means"], payload["counts"], dict(payload.get("metadata", {})))
    except KeyError as e:
        raise DataError(f"{path} lacks the {e.args[0]!r} entry of a class-means file") from None
    _validate(table, source=path, num_classes=num_classes, dim=dim)
    if table.zero_filled_classes:
        names = table.metadata.get("class_names") or None
        logger.warning(
            "%s: ND pulls no direction for class(es) %s: their rows were zero-filled "
            "at extraction (--allow-empty-classes); re-extract with more images to "
            "give them a mean",
            path,
            short_list(class_labels(table.zero_filled_classes, names), 10),
        )
    return table


def _looks_like_json(path: str) -> bool:
    """A ``.json`` name, or text starting with ``{`` / ``[`` (a torch file starts with a zip or
    pickle header, never with these)."""
    if str(path).lower().endswith(".json"):
        return True
    try:
        with open(path, "rb") as stream:
            head = stream.read(64)
    except OSError:
        return False  # the torch.load below reports the unreadable file
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[")


def _validate(
    table: ClassMeans, source: str, num_classes: Optional[int] = None, dim: Optional[int] = None
) -> None:
    means, counts = table.means, table.counts
    if not isinstance(means, torch.Tensor) or means.dim() != 2:
        raise DataError(f"{source}: the means must be a 2-D (C, D) tensor")
    if not isinstance(counts, torch.Tensor) or tuple(counts.shape) != (means.shape[0],):
        raise DataError(
            f"{source}: the counts must be a ({means.shape[0]},) tensor, one per class row"
        )
    C, D = means.shape
    if num_classes is not None and C != num_classes:
        raise DataError(
            f"{source} holds {C} class rows but {num_classes} are needed (wrong number of "
            "classes: was it made for another dataset or teacher?). Re-extract it for this "
            "teacher and dataset."
        )
    if dim is not None and D != dim:
        raise DataError(
            f"{source} has embedding dimension {D} but the teacher's embedding has {dim} "
            "(wrong dimension: made with another teacher?). Re-extract it for this teacher."
        )
    names = table.metadata.get("class_names") or None
    bad = torch.nonzero(~torch.isfinite(means).all(dim=1)).flatten().tolist()
    if bad:
        raise DataError(
            f"{source}: NaN/inf in class-mean row(s) {short_list(class_labels(bad, names), 10)}; "
            "re-extract the file."
        )
    filled = set(table.zero_filled_classes)
    missing = [c for c in torch.nonzero(counts == 0).flatten().tolist() if c not in filled]
    if missing:
        raise DataError(
            f"{source}: missing class row(s) {short_list(class_labels(missing, names), 10)} (zero "
            "samples and not flagged as filled); re-extract with more images or allow empty "
            "classes explicitly (--allow-empty-classes)."
        )
    weak = [c for c in directionless_rows(means) if c not in filled]
    if weak:
        raise DataError(
            f"{source}: class-mean row(s) {short_list(class_labels(weak, names), 10)} have "
            "(almost) zero norm and are not flagged as zero-filled: ND normalises each mean and "
            "can take no direction from them. Re-extract the file with this teacher, or extract "
            "with --allow-empty-classes to train without ND's pull for these classes (their "
            "rows are then zero-filled and flagged)."
        )


def metadata_mismatches(table: ClassMeans, expected: dict) -> list[str]:
    """Human-readable differences between ``table.metadata`` and ``expected`` (only the keys
    present in ``expected`` are compared; a key absent from the file counts as a difference)."""
    out = []
    for key, want in expected.items():
        got = table.metadata.get(key)
        if got != want and not (
            isinstance(got, float) and isinstance(want, float) and math.isclose(got, want)
        ):
            out.append(f"{key}: file has {got!r}, expected {want!r}")
    return out
