"""Cut a large image into a grid of non-overlapping tiles and move its boxes into them.

Tiles are ``tile_size`` x ``tile_size`` pixels, laid from the top-left corner with no overlap.
Along the right and bottom borders the last tile of a row / column is narrower when the image
size is not a multiple of ``tile_size``: it is kept when at least ``min_edge_tile`` pixels wide
(tall), otherwise that border strip is left out (boxes reaching into it are clipped by the tiles
next to it, like at any tile border).

A box crossing tile borders is clipped to each tile it touches; a clipped piece is kept when it
holds at least ``min_visible_fraction`` of the original box's area and both its sides are at least
``min_box_side`` pixels; smaller fragments are dropped.  Boxes are ``(x0, y0, x1, y1)`` in pixel
coordinates with exclusive ends (a box covering the whole 400 px image is (0, 0, 400, 400)).
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

__all__ = ["Tile", "tile_grid", "boxes_in_tile"]

Box = Tuple[int, int, int, int]


@dataclass(frozen=True)
class Tile:
    """One tile: its grid position and its pixel window (x0, y0, x1, y1) in the source image."""

    row: int
    col: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def window(self) -> Box:
        return (self.x0, self.y0, self.x1, self.y1)


def _spans(length: int, tile_size: int, min_edge_tile: int) -> List[Tuple[int, int]]:
    spans = []
    for start in range(0, length, tile_size):
        end = min(start + tile_size, length)
        if end - start >= min_edge_tile or start == 0:  # a full tile is >= min_edge_tile
            spans.append((start, end))
    return spans


def tile_grid(width: int, height: int, tile_size: int, min_edge_tile: int) -> List[Tile]:
    """Non-overlapping tiles covering the image, in row-major order (an image no larger than
    ``tile_size`` in both directions is one tile, itself)."""
    if tile_size <= 0 or not 0 < min_edge_tile <= tile_size:
        raise ValueError(f"tile_size={tile_size}, min_edge_tile={min_edge_tile}: need "
                         "0 < min_edge_tile <= tile_size")
    rows = _spans(height, tile_size, min_edge_tile)
    cols = _spans(width, tile_size, min_edge_tile)
    return [Tile(r, c, x0, y0, x1, y1)
            for r, (y0, y1) in enumerate(rows) for c, (x0, x1) in enumerate(cols)]


def boxes_in_tile(boxes: Sequence[Box], tile: Tile, min_visible_fraction: float,
                  min_box_side: int) -> List[Tuple[int, Box]]:
    """The boxes visible in ``tile``, clipped and shifted to tile coordinates.

    Returns (index of the box in ``boxes``, clipped box) for every kept piece, in input order.
    """
    kept = []
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        cx0, cy0 = max(x0, tile.x0), max(y0, tile.y0)
        cx1, cy1 = min(x1, tile.x1), min(y1, tile.y1)
        if cx1 - cx0 < min_box_side or cy1 - cy0 < min_box_side:
            continue
        if (cx1 - cx0) * (cy1 - cy0) < min_visible_fraction * (x1 - x0) * (y1 - y0):
            continue
        kept.append((index, (cx0 - tile.x0, cy0 - tile.y0, cx1 - tile.x0, cy1 - tile.y0)))
    return kept
