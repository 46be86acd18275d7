"""The teacher's class means, in one place.

- :mod:`.table`: the one file format of detection and classification (:class:`ClassMeans`,
  streaming accumulation, validated save and load); torch only, imported here;
- :mod:`.detection`: extraction from a detectron2 teacher (the reference's protocol and the
  ground-truth-boxes protocol; imports detectron2);
- :mod:`.classification`: extraction from a classification teacher (torch only);
- :mod:`.reference`, :mod:`.reference_classification`: the reference code's published JSON
  tables, converted to the one format;
- :mod:`.extract_cli`, :mod:`.import_cli`: ``tools/extract_class_means.py`` and
  ``tools/import_class_means.py`` (``--task detection`` or ``classification``).

Only the table format is imported with the package, so the classification side and the loss
core never pull detectron2 in.
"""

from .table import (
    ClassMeanAccumulator,
    ClassMeans,
    directionless_rows,
    load_class_means,
    metadata_mismatches,
    save_class_means,
)

__all__ = [
    "ClassMeans",
    "ClassMeanAccumulator",
    "save_class_means",
    "load_class_means",
    "metadata_mismatches",
    "directionless_rows",
]
