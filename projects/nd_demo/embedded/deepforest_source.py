"""Read the annotated tree-crown images shipped in the PyPI package deepforest, without importing it.

deepforest (MIT licence; installed with ``pip install --no-deps deepforest==2.1.0`` by
``scripts/setup_env.sh``) carries airborne RGB images with hand-drawn tree-crown boxes in its
``deepforest/data/`` folder.  The package is located with ``importlib.util.find_spec``, which does
not run it: its own requirements are not installed.  Version 2.1.0 holds four Pascal-VOC XML files:

=============================================  ===========  =====  =================================
XML (image it names)                           size (WxH)   boxes  labels
=============================================  ===========  =====  =================================
2019_YELL_2_528000_4978000_image_crop2 (.png)  2299 x 2472  574    Tree
2019_YELL_2_541000_4977000_image_crop (.png)   1249 x 1035  279    Tree
OSBS_029 (.tif; an identical .png sits beside)  400 x 400    61    Tree
SOAP_061 (.png)                                 400 x 400    37    Dead (28), Alive (9)
=============================================  ===========  =====  =================================

Other images in that folder (SOAP_031.png, a bird photo) have no XML and are not used.
"""
import importlib.metadata
import importlib.util
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

from nd_det.errors import DataError


__all__ = ["AnnotatedImage", "deepforest_data_dir", "deepforest_version", "read_voc_xml",
           "read_deepforest_images"]

SETUP_FIX = ("run `bash scripts/setup_env.sh` from the repository root (it installs it), or "
             "`pip install --no-deps deepforest==2.1.0` in this Python environment")


@dataclass(frozen=True)
class AnnotatedImage:
    """One source image and its boxes (x0, y0, x1, y1), pixel coordinates, exclusive ends."""

    xml_path: Path
    image_path: Path
    width: int
    height: int
    boxes: Tuple[Tuple[int, int, int, int], ...]
    labels: Tuple[str, ...]


def deepforest_data_dir() -> Path:
    """The ``data`` folder of the installed deepforest package (the package is not imported)."""
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded tree-crown dataset needs the data files of the PyPI "
                           "package deepforest==2.1.0, which is not installed in this Python. "
                           f"Fix: {SETUP_FIX}")
    for location in spec.submodule_search_locations:
        data_dir = Path(location) / "data"
        if data_dir.is_dir():
            return data_dir
    raise DataError(f"the deepforest package at {list(spec.submodule_search_locations)} has no "
                       f"data/ folder. Fix: reinstall it: {SETUP_FIX}")


def deepforest_version() -> str:
    """The installed deepforest version, read from its distribution metadata."""
    try:
        return importlib.metadata.version("deepforest")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _int_field(element, path: str, xml_path: Path) -> int:
    node = element.find(path)
    try:
        return int(round(float(node.text)))
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{xml_path}: no number at <{path}>. Fix: reinstall deepforest "
                           f"({SETUP_FIX})") from None


def _image_file(xml_path: Path, file_name: str) -> Path:
    """The image an XML names; if that file is absent, one with the same stem (.png/.tif/.jpg)."""
    named = xml_path.parent / file_name
    if named.is_file():
        return named
    for suffix in (".png", ".tif", ".jpg"):
        candidate = named.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise DataError(f"{xml_path} names the image {file_name}, which is not in {xml_path.parent}. "
                       f"Fix: reinstall deepforest ({SETUP_FIX})")


def read_voc_xml(xml_path: Path) -> AnnotatedImage:
    """Parse one Pascal-VOC annotation file; boxes are clipped to the image, empty ones dropped."""
    xml_path = Path(xml_path)
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise DataError(f"{xml_path}: cannot parse the Pascal-VOC XML ({error}). Fix: reinstall "
                           f"deepforest ({SETUP_FIX})") from error
    file_name = (root.findtext("filename") or "").strip()
    width = _int_field(root, "size/width", xml_path)
    height = _int_field(root, "size/height", xml_path)
    boxes, labels = [], []
    for obj in root.iter("object"):
        x0, y0, x1, y1 = (_int_field(obj, f"bndbox/{key}", xml_path)
                          for key in ("xmin", "ymin", "xmax", "ymax"))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1, y1))
            labels.append((obj.findtext("name") or "").strip())
    return AnnotatedImage(xml_path=xml_path, image_path=_image_file(xml_path, file_name),
                          width=width, height=height, boxes=tuple(boxes), labels=tuple(labels))


def read_deepforest_images() -> List[AnnotatedImage]:
    """Every annotated image of the deepforest data folder, sorted by XML file name."""
    data_dir = deepforest_data_dir()
    xml_paths = sorted(p for p in data_dir.iterdir() if p.suffix.lower() == ".xml")
    if not xml_paths:
        raise DataError(f"no Pascal-VOC .xml file in {data_dir}. Fix: reinstall deepforest "
                           f"({SETUP_FIX})")
    return [read_voc_xml(path) for path in xml_paths]

