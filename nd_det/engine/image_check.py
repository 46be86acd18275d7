"""Images that cannot be decoded are named, with the file, before or during a run.

* ``check_images`` (``--check-images``): decode every image of the datasets up front, with a
  progress line; on COCO it costs minutes, hence a flag.
* ``DecodeGuardMapper`` + ``DecodeGuardLoader``: during a run, a mapper (in a loader worker) that
  fails to read an image hands on a marker naming the file instead of crashing the worker; the
  loader, in the training process, turns the marker into one DataError line.  (An exception
  raised in a loader worker reaches the main process only as traceback text.)
"""
import logging

from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import log_every_n_seconds

from ..errors import DataError
from ..utils.progress import ProgressClock, format_duration
from ..utils.text import first_line

__all__ = ["check_images", "DecodeGuardMapper", "DecodeGuardLoader", "READ_ERROR_KEY"]

logger = logging.getLogger(__name__)

READ_ERROR_KEY = "nd_det_read_error"
# what PIL and detectron2's read_image raise for missing, truncated or foreign files
_READ_ERRORS = (OSError, SyntaxError, ValueError)


def _decode_error(file_name: str):
    try:
        read_image(file_name, format="RGB")
    except _READ_ERRORS as e:
        return first_line(e)
    return None


def _unreadable(file_name: str, why: str) -> DataError:
    return DataError(f"image {file_name} cannot be decoded ({why}): replace the file, or "
                        "remove its entry from the dataset's JSON")


def check_images(cfg, splits=("TRAIN", "TEST")) -> int:
    """Decode every image of DATASETS.<splits>; the first that fails is one DataError.
    Returns the number of images checked."""
    files = sorted({d["file_name"] for split in splits for name in cfg.DATASETS[split]
                    for d in DatasetCatalog.get(name)})
    clock = ProgressClock(len(files), skip=0)
    clock.start()
    for file_name in files:
        why = _decode_error(file_name)
        if why is not None:
            raise _unreadable(file_name, why)
        clock.step()
        eta = clock.eta_seconds()
        log_every_n_seconds(logging.INFO, f"[--check-images] {clock.done}/{len(files)} images "
                            f"decoded, ETA {format_duration(eta or 0)}", n=10, name=logger.name)
    logger.info("[--check-images] all %d images decode", len(files))
    return len(files)


class DecodeGuardMapper:
    """Wraps a dataset mapper: an image that fails to decode becomes a marker record."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, dataset_dict):
        try:
            return self.mapper(dataset_dict)
        except _READ_ERRORS:
            why = _decode_error(dataset_dict["file_name"])
            if why is None:
                raise  # not the image: a real bug, with its traceback
            return {READ_ERROR_KEY: f"{dataset_dict['file_name']}\0{why}",
                    "height": dataset_dict.get("height", 1),
                    "width": dataset_dict.get("width", 1)}


class DecodeGuardLoader:
    """Wraps a data loader of batches (lists of records): a marker becomes a DataError in the
    process that iterates."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            for record in batch:
                if isinstance(record, dict) and READ_ERROR_KEY in record:
                    file_name, why = record[READ_ERROR_KEY].split("\0", 1)
                    raise _unreadable(file_name, why)
            yield batch
