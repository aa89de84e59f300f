"""dlib's image pyramids for the MMOD face detector, reproduced in numpy.

Facts learnt from dlib's ``image_transforms/image_pyramid.h``, ``image_transforms/interpolation.h``
and ``dnn/input.h`` (our own code):

* ``pyramid_down<N>`` (``N = 6`` for the face detector) shrinks by ``(N - 1) / N`` per level.
  A level of ``nr x nc`` pixels is followed by ``floor(rate * nr) x floor(rate * nc)``; levels
  stop before one would be empty or less than 5 rows high. Points map down a level as
  ``(p - 0.3) * rate`` and up as ``p / rate + 0.3``.
* ``input_rgb_image_pyramid`` tiles all levels into one image: the full image on the left, the
  smaller levels stacked below it in a first column until half the total height is reached,
  then the rest in a second column running upwards from the bottom right; ``padding`` (10)
  pixels between levels and ``outer_padding`` (11) around everything; the gaps are zero. The
  pixels are ``(value - channel mean) / 256`` in R, G, B order, and each level is a bilinear
  ("align corners") resize of the previous level *in that normalised float space*.
* A detection in the tiled image is mapped back by finding the level tile nearest to the box
  centre and mapping the box corners up that many levels.
* ``pyramid_up`` with ``pyramid_down<2>`` (what dlib's Python ``cnn_face_detection_model_v1``
  does once per ``upsample_num_times``) resizes ``W x H`` to ``(2 W + 2) x (2 H + 1)``
  bilinearly (align corners, values truncated); boxes found in the upsampled image map back with
  ``p / 2 - (1.25, 0.75)``.

Rectangles here are dlib's: ``[left, top, right, bottom]`` with inclusive right/bottom edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facelab.errors import ConfigError, ImageError

__all__ = [
    "TiledPyramid",
    "pyramid_level_sizes",
    "tiled_pyramid_layout",
    "build_tiled_pyramid",
    "tiled_to_image",
    "image_to_tiled",
    "point_up",
    "pyramid_up2",
    "rect_down2",
    "resize_align_corners",
]


def _rate(n: int) -> float:
    return (n - 1.0) / n


def pyramid_level_sizes(
    height: int, width: int, n: int = 6, max_levels: int | None = None, rate: float | None = None
) -> list[tuple[int, int]]:
    """Sizes ``(rows, cols)`` of the levels of a ``pyramid_down<n>`` pyramid, largest first.

    Args:
        height: rows of the first level.
        width: columns of the first level.
        n: the pyramid's ``N`` (each level is ``(N - 1) / N`` of the previous).
        max_levels: keep at most this many levels (``None``: all of dlib's levels).
        rate: a shrink factor per level other than dlib's ``(N - 1) / N`` (not dlib's pyramid).

    Example:
        >>> pyramid_level_sizes(100, 120)[:3]
        [(100, 120), (83, 100), (69, 83)]
    """
    if height <= 0 or width <= 0:
        return []
    rate = _rate(n) if rate is None else float(rate)
    if not 0 < rate < 1:
        raise ConfigError(f"pyramid rate must be in (0, 1), got {rate}")
    sizes = [(int(height), int(width))]
    nr, nc = int(height), int(width)
    while max_levels is None or len(sizes) < max_levels:
        nr, nc = int(math.floor(rate * nr)), int(math.floor(rate * nc))
        if nr * nc == 0 or nr < 5:
            break
        sizes.append((nr, nc))
    return sizes


@dataclass(frozen=True)
class TiledPyramid:
    """Layout of a tiled pyramid image.

    Attributes:
        rects: ``(L, 4)`` ``int64`` ``[left, top, right, bottom]`` of each level's tile (inclusive).
        height / width: size of the tiled image.
        n: the pyramid's ``N``.
        rate: shrink factor per level when it is not dlib's ``(N - 1) / N`` (``None``: dlib's).
    """

    rects: np.ndarray
    height: int
    width: int
    n: int = 6
    rate: float | None = None

    @property
    def exact(self) -> bool:
        """Whether this is dlib's own ``pyramid_down<N>`` schedule."""
        return self.rate is None


def tiled_pyramid_layout(
    height: int,
    width: int,
    *,
    n: int = 6,
    padding: int = 10,
    outer_padding: int = 11,
    max_levels: int | None = None,
    rate: float | None = None,
) -> TiledPyramid:
    """Where dlib's ``input_image_pyramid`` puts each pyramid level of a ``height x width`` image.

    Args:
        height: input image rows.
        width: input image columns.
        n: ``pyramid_down<n>``.
        padding: gap between tiles.
        outer_padding: border around the tiled image.
        max_levels: use only the first levels (``None``: dlib's full pyramid). Fewer levels skip
            the smallest scales, i.e. the largest faces.
        rate: a shrink factor per level other than dlib's (e.g. ``(5/6)**2`` to skip every
            other scale); such a pyramid is mapped back with the levels' exact size ratios.

    Returns:
        The :class:`TiledPyramid` layout (dlib's exact placement when ``max_levels`` is ``None``).
    """
    sizes = pyramid_level_sizes(height, width, n, max_levels, rate)
    if not sizes:
        return TiledPyramid(np.zeros((0, 4), np.int64), 0, 0, n, rate)
    rects = [[0, 0, nc - 1, nr - 1] for nr, nc in sizes]

    def rh(r: list[int]) -> int:
        return r[3] - r[1] + 1

    def rw(r: list[int]) -> int:
        return r[2] - r[0] + 1

    total_height = sum(rh(r) + padding for r in rects) - 2 * padding
    col_height = 0
    prev_width = 0
    for r in rects:
        fits_beside = rw(r) <= rw(rects[0]) - prev_width - padding
        if fits_beside and (col_height - rh(rects[0])) * 2 >= total_height - rh(rects[0]):
            break
        col_height += rh(r) + padding
        prev_width = rw(r)
    col_height -= padding
    full_width = rw(rects[0])
    out_h = col_height + 2 * outer_padding
    out_w = full_width + 2 * outer_padding
    y = outer_padding
    i = 0
    while y < col_height + outer_padding and i < len(rects):
        r = rects[i]
        rects[i] = [r[0] + outer_padding, r[1] + y, r[2] + outer_padding, r[3] + y]
        y += rh(rects[i]) + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(rects):
        p1x, p1y = outer_padding + full_width - 1, y - 1
        w_i, h_i = rw(rects[i]), rh(rects[i])
        # rectangle(p1, p2) with p2 = p1 - br_corner: the tile's bottom-right corner sits at p1.
        cand = [p1x - (w_i - 1), p1y - (h_i - 1), p1x, p1y]
        inter = [max(first[0], cand[0]), max(first[1], cand[1]), min(first[2], cand[2]), min(first[3], cand[3])]
        if inter[0] <= inter[2] and inter[1] <= inter[3]:
            break
        rects[i] = cand
        y -= h_i + padding
        i += 1
    return TiledPyramid(np.asarray(rects[:i], np.int64).reshape(-1, 4), int(out_h), int(out_w), n, rate)


def _axis_coords(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source index pairs and fractions of an align-corners linear resize along one axis."""
    scale = (n_in - 1) / max(n_out - 1, 1)
    pos = np.arange(n_out, dtype=np.float64) * scale
    lo = np.floor(pos).astype(np.int64)
    lo = np.clip(lo, 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).astype(np.float32)
    return lo, hi, frac


def resize_align_corners(src: np.ndarray, out_h: int, out_w: int, out: np.ndarray | None = None) -> np.ndarray:
    """Dlib's bilinear ``resize_image`` on float data (corner pixels map onto corner pixels).

    Args:
        src: ``(C, H, W)`` ``float32``.
        out_h: output rows.
        out_w: output columns.
        out: optional ``(C, out_h, out_w)`` ``float32`` array (or view) to write into.

    Returns:
        ``(C, out_h, out_w)`` ``float32``: output pixel ``(r, c)`` samples ``src`` at
        ``(r (H - 1) / (out_h - 1), c (W - 1) / (out_w - 1))``.
    """
    c, h, w = src.shape
    ylo, yhi, yf = _axis_coords(h, out_h)
    xlo, xhi, xf = _axis_coords(w, out_w)
    rows = src[:, ylo, :] * (1 - yf)[None, :, None] + src[:, yhi, :] * yf[None, :, None]
    result = rows[:, :, xlo] * (1 - xf) + rows[:, :, xhi] * xf
    if out is None:
        return result.astype(np.float32, copy=False)
    out[...] = result
    return out


def build_tiled_pyramid(tensor: np.ndarray, layout: TiledPyramid, *, exact: bool = True) -> np.ndarray:
    """Tile a normalised ``(C, H, W)`` image and its pyramid levels as dlib's input layer does.

    Args:
        tensor: ``(C, H, W)`` ``float32`` first level (already normalised).
        layout: from :func:`tiled_pyramid_layout` for ``(H, W)``.
        exact: resize each level exactly as dlib (align-corners bilinear, numpy). ``False``
            uses OpenCV's faster bilinear resize (pixel-centre aligned); the levels then differ
            from dlib's by a fraction of a pixel, and :func:`tiled_to_image` must be called
            with ``exact=False``.

    Returns:
        ``(C, layout.height, layout.width)`` ``float32``, zero between tiles.
    """
    if not exact:
        return _build_tiled_fast(tensor, layout)
    c, h, w = tensor.shape
    out = np.zeros((c, layout.height, layout.width), np.float32)
    if len(layout.rects) == 0:
        return out
    l0, t0, r0, b0 = (int(v) for v in layout.rects[0])
    if (b0 - t0 + 1, r0 - l0 + 1) != (h, w):
        raise ConfigError(f"tiled pyramid layout is for {(b0 - t0 + 1, r0 - l0 + 1)} images, not {(h, w)}")
    out[:, t0 : b0 + 1, l0 : r0 + 1] = tensor
    prev = tensor
    for left, top, right, bottom in layout.rects[1:]:
        target = out[:, top : bottom + 1, left : right + 1]
        resize_align_corners(prev, bottom - top + 1, right - left + 1, out=target)
        prev = target
    return out


def _build_tiled_fast(tensor: np.ndarray, layout: TiledPyramid) -> np.ndarray:
    import cv2

    c, h, w = tensor.shape
    out = np.zeros((layout.height, layout.width, c), np.float32)
    if len(layout.rects) == 0:
        return out.transpose(2, 0, 1)
    prev = np.ascontiguousarray(tensor.transpose(1, 2, 0))
    for i, (left, top, right, bottom) in enumerate(layout.rects):
        if i:
            prev = cv2.resize(prev, (int(right - left + 1), int(bottom - top + 1)), interpolation=cv2.INTER_LINEAR)
            prev = prev.reshape(prev.shape[0], prev.shape[1], c)
        out[top : bottom + 1, left : right + 1] = prev
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def point_up(points: np.ndarray, levels: int | np.ndarray, n: int = 6) -> np.ndarray:
    """Map ``(..., 2)`` points up ``levels`` levels of ``pyramid_down<n>``: ``p / rate + 0.3`` each."""
    p = np.asarray(points, np.float64)
    lv = np.asarray(levels)
    ratio = n / (n - 1.0)
    if lv.ndim == 0:
        for _ in range(int(lv)):
            p = p * ratio + 0.3
        return p
    out = p.copy()
    for step in range(int(lv.max(initial=0))):
        active = (lv > step)[..., None]
        out = np.where(active, out * ratio + 0.3, out)
    return out


def _point_down(points: np.ndarray, levels: int, n: int = 6) -> np.ndarray:
    p = np.asarray(points, np.float64)
    rate = _rate(n)
    for _ in range(levels):
        p = (p - 0.3) * rate
    return p


def _round_half_up(v: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(v, np.float64) + 0.5)


def tiled_to_image(layout: TiledPyramid, rects: np.ndarray, *, exact: bool = True) -> np.ndarray:
    """Map ``(N, 4)`` dlib rectangles from the tiled image back to the input image (``tiled_pyramid_to_image``).

    Each rectangle is assigned to the tile that contains (or is nearest to) its centre rounded
    to an integer pixel, made relative to that tile, and mapped up that tile's level count
    (dlib's ``p / rate + 0.3`` per level). With ``exact=False`` (levels built by OpenCV, or a
    non-dlib ``rate``) the tile's size ratio to the first level is used instead, pixel-centre
    aligned.
    """
    r = np.asarray(rects, np.float64).reshape(-1, 4)
    if len(r) == 0:
        return r.copy()
    tiles = layout.rects.astype(np.float64)
    centre = _round_half_up(np.stack([(r[:, 0] + r[:, 2]) / 2, (r[:, 1] + r[:, 3]) / 2], axis=1))  # (N, 2)
    nx = np.clip(centre[:, None, 0], tiles[None, :, 0], tiles[None, :, 2])
    ny = np.clip(centre[:, None, 1], tiles[None, :, 1], tiles[None, :, 3])
    dist = np.hypot(nx - centre[:, None, 0], ny - centre[:, None, 1])  # 0 inside a tile
    level = np.argmin(dist, axis=1)  # first minimum, as dlib's scan
    origin = tiles[level][:, :2]
    if exact and layout.exact:
        tl = point_up(r[:, :2] - origin, level, layout.n)
        br = point_up(r[:, 2:] - origin, level, layout.n)
        return np.concatenate([tl, br], axis=1)
    sizes = np.stack([tiles[:, 2] - tiles[:, 0] + 1, tiles[:, 3] - tiles[:, 1] + 1], axis=1)  # (L, 2) w, h
    ratio = sizes[0][None, :] / sizes[level]  # (N, 2)
    tl = (r[:, :2] - origin + 0.5) * ratio - 0.5
    br = (r[:, 2:] - origin + 0.5) * ratio - 0.5
    return np.concatenate([tl, br], axis=1)


def image_to_tiled(layout: TiledPyramid, scale: float, rects: np.ndarray) -> np.ndarray:
    """Map ``(N, 4)`` image rectangles into the tiled image (dlib's ``image_to_tiled_pyramid``).

    The level used is the one whose scale is nearest to ``scale`` (``0 < scale <= 1``).
    """
    if not 0 < scale <= 1:
        raise ConfigError(f"scale must be in (0, 1], got {scale}")
    rate = _rate(layout.n)
    level = int(np.clip(round(math.log(scale) / math.log(rate)), 0, len(layout.rects) - 1))
    r = np.asarray(rects, np.float64).reshape(-1, 4)
    origin = layout.rects[level, :2].astype(np.float64)
    tl = _point_down(r[:, :2], level, layout.n) + origin
    br = _point_down(r[:, 2:], level, layout.n) + origin
    return np.concatenate([tl, br], axis=1)


def pyramid_up2(image: np.ndarray) -> np.ndarray:
    """Dlib's ``pyramid_up(img, pyramid_down<2>())``: upsample ``W x H`` to ``(2W + 2) x (2H + 1)``.

    Bilinear with corner pixels on corner pixels; the values are truncated to ``uint8`` as dlib
    does. Channels are independent, so any colour order is kept.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` ``uint8``.

    Returns:
        ``(2H + 1, 2W + 2[, C])`` ``uint8``.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or img.size == 0:
        raise ImageError(f"pyramid_up2 needs a non-empty uint8 image, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    out_h, out_w = 2 * h + 1, 2 * w + 2
    planar = img.reshape(h, w, -1).transpose(2, 0, 1).astype(np.float32)
    up = resize_align_corners(planar, out_h, out_w)
    out = np.trunc(up).clip(0, 255).astype(np.uint8).transpose(1, 2, 0)
    return out if img.ndim == 3 else out[..., 0]


def rect_down2(rects: np.ndarray, levels: int = 1) -> np.ndarray:
    """``pyramid_down<2>::rect_down`` applied ``levels`` times: each corner ``p / 2 - (1.25, 0.75)``."""
    r = np.asarray(rects, np.float64).copy()
    for _ in range(levels):
        r = r / 2.0 - np.array([1.25, 0.75, 1.25, 0.75])
    return r
