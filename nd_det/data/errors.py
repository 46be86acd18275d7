"""The one exception type of nd_det.data: a dataset on disk that cannot be used as given."""

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A dataset file, folder or name that cannot be used; the message names it and the fix."""
