"""The one exception type of nd_det.data: a dataset on disk that cannot be used as given."""

from ..errors import UserError

__all__ = ["DatasetError"]


class DatasetError(UserError, ValueError):
    """A dataset file, folder or name that cannot be used; the message names it and the fix."""
