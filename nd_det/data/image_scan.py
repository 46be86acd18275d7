"""Every image of a dataset opened once, before any model is built: its header and a full decode,
compared with the width and height the dataset records for it.

This is the one place nd-det reads image files to check them.  For each image:

* the file must decode completely with PIL (what detectron2's ``read_image`` uses): a file that
  does not is an error (detectron2 would stop when a loader reaches it);
* its width x height after the EXIF orientation (``read_image`` applies it) must equal the
  JSON's, as detectron2's ``check_image_size`` demands when it loads the image: a difference is
  an error naming the file, both sizes and the fix.

What detectron2 reads without complaint is counted and logged as one warning each: images that an
EXIF orientation tag rotates or flips (detectron2 turns them before use, so their boxes must be
drawn on the turned image) and images not stored as RGB (greyscale, palette, RGBA, CMYK, 16-bit;
detectron2 converts them to its INPUT.FORMAT).

Cost: images not seen before are decoded in worker processes (forked, as torch's DataLoader
workers are on Linux; they run PIL only), with a progress line and ETA every 10 s for large sets.
The result is cached in ``$XDG_CACHE_HOME/nd_det/image_scan/`` (``~/.cache/nd_det/image_scan/``
without XDG_CACHE_HOME), one JSON file per dataset (named by a hash of its annotation file's
path), one entry per image keyed by its path, byte size and modification time: an image whose
size or mtime changed is decoded again, the whole file is ignored when Pillow's version or the
cache format changes, and failures are never cached.  Within one process the results are also
kept in memory, so registering a dataset again (the tools check in their parent process, then
each training process registers the same files) reads no image twice.
"""

import hashlib
import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import DataError, os_error_text
from ..utils.atomic_file import atomic_write_json
from ..utils.progress import ProgressClock, format_duration
from ..utils.text import first_line, short_list

__all__ = [
    "ImageScan",
    "scan_images",
    "scan_registered_datasets",
    "cache_folder",
    "CACHE_FORMAT",
    "SCANNED_KEY",
]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
# EXIF orientation tag, and its values that swap width and height (the transposing ones of
# detectron2's _apply_exif_orientation: 5 transpose, 6 rotate 270, 7 transverse, 8 rotate 90)
_ORIENTATION_TAG = 0x0112
_TRANSPOSING = (5, 6, 7, 8)
# fewer images than this are decoded in this process (starting workers costs more)
_PARALLEL_MIN = 64
# at least this many images to decode before progress lines are printed
_PROGRESS_MIN = 500
_PROGRESS_PERIOD_S = 10
# how many offending files a message names before it says how many more there are
_NAMED = 3
# metadata key of a registered dataset whose images were scanned in this process
SCANNED_KEY = "nd_det_images_scanned"

# (path, byte size, mtime in ns) -> (width, height, orientation, mode): results of this process
_MEMO: dict[tuple[str, int, int], tuple[int, int, int, str]] = {}


@dataclass(frozen=True)
class ImageScan:
    """What the scan of one dataset found (everything it did not refuse)."""

    source: str
    num_images: int
    num_decoded: int  # decoded now; the others came from the cache or this process's memory
    num_oriented: int  # images an EXIF orientation tag turns or flips
    modes: dict[str, int] = field(default_factory=dict)  # images per PIL mode other than RGB


def cache_folder() -> Path:
    """Where the scan results are cached (see the module docstring)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nd_det" / "image_scan"


def _pillow_version() -> str:
    import PIL

    return PIL.__version__


def _probe(path: str):
    """(width, height, EXIF orientation, mode) of a fully decoded image (width and height after
    the orientation), or the text of why it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size  # the header
            mode = image.mode
            try:  # detectron2 ignores an EXIF block PIL cannot parse; so does the scan
                orientation = int(image.getexif().get(_ORIENTATION_TAG, 1) or 1)
            except Exception:  # noqa: BLE001
                orientation = 1
            image.load()  # the full decode
    except Exception as error:  # noqa: BLE001 - PIL raises many types for broken files
        return first_line(error)
    if orientation in _TRANSPOSING:
        width, height = height, width
    return width, height, orientation, mode


def _probe_indexed(item):
    index, path = item
    return index, _probe(path)


def _cache_path(source: str) -> Path:
    return cache_folder() / (hashlib.sha256(source.encode("utf-8")).hexdigest()[:24] + ".json")


def _read_cache(path: Path) -> dict[str, list]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("format") != CACHE_FORMAT
        or data.get("pillow") != _pillow_version()
        or not isinstance(data.get("images"), dict)
    ):
        return {}
    return data["images"]


def _write_cache(path: Path, source: str, entries: dict[str, list]) -> None:
    try:
        atomic_write_json(
            {
                "format": CACHE_FORMAT,
                "pillow": _pillow_version(),
                "source": source,
                "images": entries,
            },
            str(path),
            indent=None,
        )
    except OSError as error:
        logger.warning(
            "cannot write the image-scan cache %s (%s): the next run decodes these images again",
            path,
            os_error_text(error),
        )


def _decode(paths: list[str], source: str, workers: Optional[int]) -> list:
    """_probe of every path, in worker processes for many paths, with progress lines."""
    if workers is None:
        workers = min(os.cpu_count() or 1, 16) if len(paths) >= _PARALLEL_MIN else 1
    workers = max(1, min(workers, len(paths)))
    if len(paths) >= _PROGRESS_MIN or workers > 1:
        logger.info("%s: decoding %d images with %d processes", source, len(paths), workers)
    results: list = [None] * len(paths)
    clock = ProgressClock(len(paths), skip=0)
    clock.start()
    if workers == 1:
        outcomes: Iterable = ((i, _probe(p)) for i, p in enumerate(paths))
        pool = None
    else:
        methods = multiprocessing.get_all_start_methods()
        pool = multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(workers)
        chunk = max(1, min(64, len(paths) // (workers * 8)))
        outcomes = pool.imap_unordered(_probe_indexed, enumerate(paths), chunksize=chunk)
    try:
        from detectron2.utils.logger import log_every_n_seconds

        for index, outcome in outcomes:
            results[index] = outcome
            clock.step()
            if len(paths) >= _PROGRESS_MIN:
                eta = clock.eta_seconds()
                log_every_n_seconds(
                    logging.INFO,
                    f"{source}: {clock.done}/{len(paths)} images decoded, ETA "
                    f"{format_duration(eta or 0)}",
                    n=_PROGRESS_PERIOD_S,
                    name=logger.name,
                )
    finally:
        if pool is not None:
            pool.terminate()
    return results


def _stat(path: str):
    try:
        info = os.stat(path)
    except OSError as error:
        return os_error_text(error)
    return info.st_size, info.st_mtime_ns


def scan_images(records: Sequence[dict], source: str, workers: Optional[int] = None) -> ImageScan:
    """Check every image of ``records`` (detectron2's dataset dicts: ``file_name``, and
    ``width`` and ``height`` where the dataset gives them) as the module docstring says.
    ``source`` names the dataset in messages and keys the cache (the annotation file's path).
    ``workers``: decoding processes (default: one per CPU core, up to 16, for 64 images or
    more).  Raises one :class:`DataError` naming the files; returns an :class:`ImageScan`."""
    source = os.fspath(source)
    stats = [_stat(record["file_name"]) for record in records]
    unreadable = [f"{r['file_name']} ({s})" for r, s in zip(records, stats) if isinstance(s, str)]
    if unreadable:
        raise DataError(
            f"{source}: {len(unreadable)} of {len(records)} image files listed in it are missing "
            f"or unreadable: {short_list(unreadable, _NAMED)}; check the image folder"
        )
    keys = [(r["file_name"], s[0], s[1]) for r, s in zip(records, stats)]
    results: list = [_MEMO.get(key) for key in keys]
    cache_path = _cache_path(source)
    cached: dict[str, list] = {}
    if any(result is None for result in results):
        cached = _read_cache(cache_path)
        for i, (path, size, mtime) in enumerate(keys):
            entry = cached.get(path)
            if results[i] is None and entry and entry[:2] == [size, mtime]:
                results[i] = tuple(entry[2:6])
    todo = [i for i, result in enumerate(results) if result is None]
    decoded = _decode([keys[i][0] for i in todo], source, workers) if todo else []
    failures = []
    for i, outcome in zip(todo, decoded):
        if isinstance(outcome, str):
            failures.append(f"{keys[i][0]} ({outcome})")
        else:
            results[i] = outcome
    # what decoded is kept even when some files did not: the next run decodes only those
    for key, result in zip(keys, results):
        if result is not None:
            _MEMO[key] = result
    if todo:
        _write_cache(
            cache_path,
            source,
            {
                path: [size, mtime, *result]
                for (path, size, mtime), result in zip(keys, results)
                if result is not None
            },
        )
    if failures:
        raise DataError(
            f"{source}: {len(failures)} of {len(records)} images cannot be decoded: "
            f"{short_list(failures, _NAMED)}; replace or remove them (detectron2 would stop there)"
        )
    return _compare(records, results, source, len(todo))


def _compare(records: Sequence[dict], results: list, source: str, num_decoded: int) -> ImageScan:
    mismatched = [  # detectron2 too compares only the sizes a record gives
        f"{r['file_name']} is {got[0]}x{got[1]}"
        + (
            f" after its EXIF orientation {got[2]} (stored {got[1]}x{got[0]})"
            if got[2] in _TRANSPOSING
            else ""
        )
        + f", the JSON says {r['width']!r}x{r['height']!r}"
        for r, got in zip(records, results)
        if "width" in r and "height" in r and (got[0], got[1]) != (r["width"], r["height"])
    ]
    turned = (
        "; for an EXIF-turned image, record the turned size and draw the boxes on the turned image"
    )
    if mismatched:
        raise DataError(
            f"{source}: {len(mismatched)} of {len(records)} images are not the size the JSON "
            f"gives them (width x height): {short_list(mismatched, _NAMED)}; write their real "
            "sizes (detectron2 raises SizeMismatchError)" + turned * ("EXIF" in str(mismatched))
        )
    oriented = sum(1 for got in results if got[2] not in (0, 1))
    modes = Counter(got[3] for got in results if got[3] != "RGB")
    if oriented:
        logger.warning(
            "%s: %d of %d images carry an EXIF orientation tag: detectron2 turns them "
            "before use, so their boxes must be drawn on the turned image (the "
            "recorded sizes already are the turned ones)",
            source,
            oriented,
            len(records),
        )
    if modes:
        logger.warning(
            "%s: %d of %d images are not RGB (%s): detectron2 converts them when it reads them",
            source,
            sum(modes.values()),
            len(records),
            ", ".join(f"{n} {mode}" for mode, n in sorted(modes.items())),
        )
    logger.info(
        "%s: %d images decode and match the JSON's sizes (%d decoded now, %d "
        "unchanged since an earlier scan)",
        source,
        len(records),
        num_decoded,
        len(records) - num_decoded,
    )
    return ImageScan(source, len(records), num_decoded, oriented, dict(modes))


def scan_registered_datasets(names: Iterable[str]) -> None:
    """:func:`scan_images` on the records of each registered dataset in ``names`` (detectron2's
    builtin COCO sets, a user's own registrations) that :func:`~nd_det.data.register_coco_dataset`
    has not scanned already in this process."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in dict.fromkeys(names):
        metadata = MetadataCatalog.get(name)
        if metadata.get(SCANNED_KEY, False):
            continue
        records = DatasetCatalog.get(name)
        scan_images(records, str(metadata.get("json_file", name)))
        metadata.set(**{SCANNED_KEY: True})
