"""Contact sheets: one PNG per person with their faces, and an overview with one face per person.

People would rather look than read ids. Each face is cut from its stored crop when the gallery
keeps crops, else from its source photo (the box widened by 25 %, square, padded with grey at
the borders), and scaled to ``tile × tile`` pixels. Images are BGR ``uint8`` (OpenCV's order).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import FacelabError

__all__ = ["face_tile", "grid", "write_sheets"]

_logger = logging.getLogger(__name__)

_GREY = (128, 128, 128)


def face_tile(image: np.ndarray, bbox: Sequence[float], tile: int = 112, margin: float = 0.25) -> np.ndarray:
    """A square ``(tile, tile, 3)`` BGR thumbnail of the face at ``bbox`` ``[x1, y1, x2, y2]`` in ``image``.

    Example:
        >>> face_tile(np.zeros((50, 80, 3), np.uint8), [10, 10, 30, 40], tile=32).shape
        (32, 32, 3)
    """
    import cv2

    x1, y1, x2, y2 = (float(v) for v in bbox)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * (1 + margin) / 2
    left, top = int(round(cx - half)), int(round(cy - half))
    side = max(1, int(round(2 * half)))
    h, w = image.shape[:2]
    canvas = np.full((side, side, 3), _GREY, np.uint8)
    sx0, sy0 = max(0, left), max(0, top)
    sx1, sy1 = min(w, left + side), min(h, top + side)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = image[sy0:sy1, sx0:sx1]
    return cv2.resize(canvas, (tile, tile), interpolation=cv2.INTER_AREA)


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = tile.copy()
    cv2.rectangle(out, (0, out.shape[0] - 16), (out.shape[1], out.shape[0]), (0, 0, 0), -1)
    cv2.putText(out, text[:18], (3, out.shape[0] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def grid(tiles: Sequence[np.ndarray], columns: int = 8, title: str | None = None) -> np.ndarray:
    """Tiles of one size in rows of ``columns`` (with a title bar when given); BGR ``uint8``.

    Example:
        >>> grid([np.zeros((10, 10, 3), np.uint8)] * 5, columns=2).shape
        (30, 20, 3)
    """
    import cv2

    if not tiles:
        raise FacelabError("a contact sheet needs at least one face")
    th, tw = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    cols = min(columns, len(tiles))
    sheet = np.full((rows * th, cols * tw, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = t
    if title:
        bar = np.full((24, sheet.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, title[:80], (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        sheet = np.vstack([bar, sheet])
    return sheet


class _Photos:
    """Loads source photos once each (small LRU: a person's faces tend to share photos)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._cache: dict[str, np.ndarray | None] = {}

    def get(self, path: str) -> np.ndarray | None:
        if path not in self._cache:
            from facelab.io import load_image

            if len(self._cache) >= self.size:
                self._cache.pop(next(iter(self._cache)))
            try:
                self._cache[path] = load_image(path)
            except (FacelabError, OSError) as exc:
                _logger.warning("contact sheet: cannot read %s: %s", path, exc)
                self._cache[path] = None
        return self._cache[path]


def _tile_of(gallery: Any, face: Any, photos: _Photos, tile: int) -> np.ndarray:
    import cv2

    if getattr(face, "has_crop", False):
        data = gallery.face_crop(face.id)
        if data:
            crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if crop is not None:
                return cv2.resize(crop, (tile, tile), interpolation=cv2.INTER_AREA)
    path = face.source_path
    if path is not None and face.bbox is not None:
        text = bytes(path).decode("utf-8", "surrogateescape") if isinstance(path, (bytes, bytearray)) else str(path)
        image = photos.get(text)
        if image is not None:
            return face_tile(image, face.bbox, tile)
    return np.full((tile, tile, 3), _GREY, np.uint8)


def write_sheets(
    gallery: Any,
    collection: str,
    out_dir: str | Path,
    *,
    max_faces: int = 48,
    tile: int = 96,
    columns: int = 8,
) -> list[Path]:
    """Write ``person_<id>.png`` for every person of a collection and ``overview.png``.

    Args:
        gallery: an open :class:`~facelab.gallery.Gallery`.
        collection: the collection.
        out_dir: folder to write to (created).
        max_faces: faces shown per person (the first ones by face id).
        tile: thumbnail side in pixels.
        columns: thumbnails per row.

    Returns:
        The files written, overview last.
    """
    import cv2

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    photos = _Photos()
    written: list[Path] = []
    overview: list[np.ndarray] = []
    for person in sorted(gallery.persons(collection), key=lambda p: p.id):
        faces = gallery.faces(person.id)
        if not faces:
            continue
        tiles = [_tile_of(gallery, f, photos, tile) for f in faces[:max_faces]]
        label = person.label()
        title = f"{label} (id {person.id}): {len(faces)} face(s)"
        path = out / f"person_{person.id}.png"
        if not cv2.imwrite(str(path), grid(tiles, columns, title)):
            raise FacelabError(f"cannot write {path}")
        written.append(path)
        overview.append(_caption(tiles[0], f"{label} [{len(faces)}]"))
    if overview:
        path = out / "overview.png"
        if not cv2.imwrite(str(path), grid(overview, columns, f"{collection}: {len(overview)} people")):
            raise FacelabError(f"cannot write {path}")
        written.append(path)
    return written
