"""dlib's face chips: ``get_face_chip_details`` and ``extract_image_chip`` reproduced in numpy.

dlib's recogniser (``dlib_face_recognition_resnet_model_v1``) was trained on 150x150 chips cut
by ``get_face_chip_details(shape_5, 150, 0.25)`` and ``extract_image_chips``; its descriptors are
only as good as the agreement of our chips with dlib's. This module reproduces that pipeline
(facts learnt from dlib's ``dlib/image_transforms/interpolation.h``, our own code):

1. **Chip placement.** The five shape points are matched to dlib's mean-face template (scaled
   into ``[padding, 1 + padding] / (1 + 2 padding)`` of the chip) by a least-squares similarity
   transform (Umeyama). The chip is described as a rectangle in the image (centred on the
   image of the chip centre, side ``size * scale``) plus a rotation angle.
2. **Anti-aliasing.** When the chip is much smaller than its source rectangle, dlib does not
   interpolate the full-resolution image; it first builds a ``pyramid_down<2>`` pyramid (5x5
   ``[1 4 6 4 1]`` Gaussian, halving, integer arithmetic) of a crop around the chip and
   samples the deepest level whose rectangle is still larger than the chip.
3. **Sampling.** Bilinear interpolation, values truncated to ``uint8`` (not rounded); samples
   whose 2x2 neighbourhood leaves the (cropped) image are black.

Colour order does not matter to any step (channels are processed independently), so a BGR
image gives a BGR chip. dlib's own Python API hands back RGB chips for RGB input.

Coordinates: dlib's, i.e. pixel centres at integer positions (the same convention as facelab).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facelab.alignment.transform import estimate_similarity
from facelab.errors import ConfigError, ImageError

__all__ = [
    "DLIB_FACE_TEMPLATE_5",
    "ChipDetails",
    "face_chip_details",
    "extract_chip",
    "extract_chips",
    "pyramid_down2",
    "chip_to_image_matrix",
]

#: dlib's 5-point mean face in unit chip coordinates (x, y), in dlib's 5-point order: outer
#: corner of the eye on the image right, its inner corner, outer corner of the eye on the image
#: left, its inner corner, bottom of the nose.
DLIB_FACE_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class ChipDetails:
    """Where a chip lies in its image (dlib's ``chip_details``).

    Attributes:
        rect: ``(4,)`` ``float64`` ``[left, top, right, bottom]`` of the un-rotated chip
            rectangle in image pixels; dlib's inclusive convention, width = ``right - left + 1``.
        angle: rotation of the chip about the rectangle centre, radians.
        rows / cols: chip size in pixels.
    """

    rect: np.ndarray
    angle: float
    rows: int
    cols: int

    @property
    def size(self) -> int:
        """Number of chip pixels (``rows * cols``)."""
        return self.rows * self.cols


def _rect_area(rect: np.ndarray) -> float:
    """Dlib drectangle area: (r - l + 1) * (b - t + 1), 0 when empty."""
    left, top, right, bottom = (float(v) for v in rect)
    if top > bottom or left > right:
        return 0.0
    return (right - left + 1.0) * (bottom - top + 1.0)


def _rect_down2(rect: np.ndarray) -> np.ndarray:
    """``pyramid_down<2>::rect_down``: each corner ``p / 2 - (1.25, 0.75)``."""
    return np.asarray(rect, np.float64) / 2.0 - np.array([1.25, 0.75, 1.25, 0.75])


def _rotate(center: np.ndarray, points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    d = points - center
    return np.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1]], axis=-1) + center


def _lround(value: float) -> int:
    """C's ``lround``: halves away from zero."""
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def face_chip_details(shape_5: np.ndarray, size: int = 150, padding: float = 0.25) -> ChipDetails:
    """Dlib's ``get_face_chip_details`` for a 5-point shape.

    Args:
        shape_5: ``(5, 2)`` points ``(x, y)`` in image pixels, in dlib's 5-point order (the
            output of dlib's ``shape_predictor_5_face_landmarks``). dlib passes integer points
            (its shapes are rounded); pass them as they are to reproduce it.
        size: chip side in pixels.
        padding: border around the template, as a fraction of the template's extent.

    Returns:
        The :class:`ChipDetails` of a ``size`` x ``size`` chip.

    Raises:
        ConfigError: the shape is not ``(5, 2)`` finite, ``size < 1`` or ``padding < 0``.
    """
    pts = np.asarray(shape_5, dtype=np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise ConfigError(f"face_chip_details needs a finite (5, 2) dlib 5-point shape, got shape {pts.shape}")
    if int(size) < 1 or padding < 0:
        raise ConfigError(f"face_chip_details: size must be >= 1 and padding >= 0, got {size} and {padding}")
    size = int(size)
    chip_points = (padding + DLIB_FACE_TEMPLATE_5) / (2 * padding + 1) * size
    tform = estimate_similarity(chip_points, pts)  # chip -> image
    m, t = tform[:, :2], tform[:, 2]
    direction = m @ np.array([1.0, 0.0])
    angle = math.atan2(direction[1], direction[0])
    scale = float(np.hypot(direction[0], direction[1]))
    centre = m @ np.array([size / 2.0, size / 2.0]) + t
    # dlib's centered_drect(p, w, h) spans w - 1 and h - 1 around p.
    half = (size * scale - 1.0) / 2.0
    rect = np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])
    return ChipDetails(rect=rect, angle=angle, rows=size, cols=size)


def pyramid_down2(image: np.ndarray) -> np.ndarray:
    """Dlib's ``pyramid_down<2>`` on a ``uint8`` image: 5x5 ``[1 4 6 4 1]`` filter, halve, floor.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` ``uint8``.

    Returns:
        ``((H - 3) // 2, (W - 3) // 2[, C])`` ``uint8``; empty when ``H`` or ``W`` is at most 8.
        Output pixel ``(r, c)`` is centred on input pixel ``(2 r + 2, 2 c + 2)``.
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    if h <= 8 or w <= 8:
        return np.zeros((0, 0) + img.shape[2:], np.uint8)
    src = img.astype(np.int32)
    ow, oh = (w - 3) // 2, (h - 3) // 2
    cols = [src[:, k : k + 2 * ow : 2] for k in range(5)]
    tmp = cols[0] + 4 * cols[1] + 6 * cols[2] + 4 * cols[3] + cols[4]
    rows = [tmp[k : k + 2 * oh : 2] for k in range(5)]
    out = rows[0] + 4 * rows[1] + 6 * rows[2] + 4 * rows[3] + rows[4]
    return (out >> 8).astype(np.uint8)


def _affine_from_3(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Exact affine (2, 3) mapping three ``src`` points onto ``dst``."""
    a = np.concatenate([src, np.ones((3, 1))], axis=1)
    return np.linalg.solve(a, dst).T


def chip_to_image_matrix(details: ChipDetails) -> np.ndarray:
    """``(2, 3)`` ``float64`` affine mapping chip pixels ``(x, y)`` to full-resolution image pixels.

    Its inverse (:func:`facelab.alignment.transform.invert_affine`) maps image points into the chip.
    """
    rect = np.asarray(details.rect, np.float64)
    centre = np.array([(rect[0] + rect[2]) / 2.0, (rect[1] + rect[3]) / 2.0])
    corners = np.array([[rect[0], rect[1]], [rect[2], rect[1]], [rect[0], rect[3]]])
    chip = np.array([[0.0, 0.0], [details.cols - 1.0, 0.0], [0.0, details.rows - 1.0]])
    return _affine_from_3(chip, _rotate(centre, corners, details.angle))


def _bilinear_truncate(image: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """Dlib's ``interpolate_bilinear`` + black background, values truncated to uint8."""
    h, w = image.shape[:2]
    img = image if image.ndim == 3 else image[..., None]
    left = np.floor(mx).astype(np.int64)
    top = np.floor(my).astype(np.int64)
    valid = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    if h < 2 or w < 2:
        out = np.zeros(mx.shape + img.shape[2:], np.uint8)
        return out if image.ndim == 3 else out[..., 0]
    flat = img.reshape(h * w, img.shape[2])
    base = np.clip(top, 0, h - 2) * w + np.clip(left, 0, w - 2)
    fx = (mx - left)[..., None]
    fy = (my - top)[..., None]
    tl = flat.take(base, axis=0).astype(np.float64)
    tr = flat.take(base + 1, axis=0).astype(np.float64)
    bl = flat.take(base + w, axis=0).astype(np.float64)
    br = flat.take(base + w + 1, axis=0).astype(np.float64)
    value = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    value[~valid] = 0.0
    out = value.astype(np.uint8)  # truncation toward zero (values are >= 0)
    return out if image.ndim == 3 else out[..., 0]


def extract_chips(image: np.ndarray, details: list[ChipDetails]) -> list[np.ndarray]:
    """Dlib's ``extract_image_chips`` with bilinear interpolation for several chips of one image.

    Args:
        image: ``(H, W, 3)`` (or ``(H, W)``) ``uint8`` image, any colour order (kept).
        details: chip placements, e.g. from :func:`face_chip_details`.

    Returns:
        One ``(rows, cols, 3)`` (or ``(rows, cols)``) ``uint8`` chip per entry, same colour
        order as ``image``.

    Raises:
        ImageError: ``image`` is not a non-empty ``uint8`` array of 2 or 3 dimensions.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or img.size == 0:
        raise ImageError(f"extract_chips needs a non-empty (H, W[, C]) uint8 image, got {img.dtype} {img.shape}")
    if not details:
        return []
    h, w = img.shape[:2]
    # How deep a pyramid the smallest chip-to-rectangle ratio needs, and the (integer) crop
    # around all chips that the pyramid is built from.
    max_depth = 0
    box: list[float] | None = None
    for d in details:
        if d.rows < 1 or d.cols < 1 or _rect_area(d.rect) == 0:
            raise ConfigError(f"extract_chips: empty chip placement {d}")
        depth, grow = 0, 2.0
        rect = _rect_down2(d.rect)
        while _rect_area(rect) > d.size:
            rect = _rect_down2(rect)
            depth += 1
            grow = grow * 2 + 2
        r = np.asarray(d.rect, np.float64)
        centre = np.array([(r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0])
        corners = _rotate(centre, np.array([[r[0], r[1]], [r[2], r[1]], [r[0], r[3]], [r[2], r[3]]]), d.angle)
        grown = [
            max(corners[:, 0].min() - grow, 0.0),
            max(corners[:, 1].min() - grow, 0.0),
            min(corners[:, 0].max() + grow, w - 1.0),
            min(corners[:, 1].max() + grow, h - 1.0),
        ]
        if grown[0] > grown[2] or grown[1] > grown[3]:
            continue  # chip entirely outside the image: contributes nothing to the crop
        rounded = [float(_lround(v)) for v in grown]
        if box is None:
            box = rounded
        else:
            box = [min(box[0], rounded[0]), min(box[1], rounded[1]), max(box[2], rounded[2]), max(box[3], rounded[3])]
        max_depth = max(depth, max_depth)
    chips: list[np.ndarray] = []
    if box is None:
        return [np.zeros((d.rows, d.cols) + img.shape[2:], np.uint8) for d in details]
    bl, bt, br, bb = (int(v) for v in box)
    crop = img[bt : bb + 1, bl : br + 1]
    levels: list[np.ndarray] = []
    for _ in range(max_depth):
        levels.append(pyramid_down2(levels[-1] if levels else crop))
    for d in details:
        r = np.asarray(d.rect, np.float64)
        if d.angle == 0 and d.rows == r[3] - r[1] + 1 and d.cols == r[2] - r[0] + 1:
            chips.append(_copy_chip(img, r, d))
            continue
        level = -1
        rect = r - np.array([bl, bt, bl, bt], np.float64)
        while _rect_area(_rect_down2(rect)) > d.size:
            level += 1
            rect = _rect_down2(rect)
        source = crop if level == -1 else levels[level]
        centre = np.array([(rect[0] + rect[2]) / 2.0, (rect[1] + rect[3]) / 2.0])
        targets = _rotate(centre, np.array([[rect[0], rect[1]], [rect[2], rect[1]], [rect[0], rect[3]]]), d.angle)
        chip_corners = np.array([[0.0, 0.0], [d.cols - 1.0, 0.0], [0.0, d.rows - 1.0]])
        m = _affine_from_3(chip_corners, targets)
        xs, ys = np.meshgrid(np.arange(d.cols, dtype=np.float64), np.arange(d.rows, dtype=np.float64))
        mx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        my = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        chips.append(_bilinear_truncate(source, mx, my))
    return chips


def _copy_chip(img: np.ndarray, rect: np.ndarray, d: ChipDetails) -> np.ndarray:
    """Dlib's fast path for an unscaled, unrotated chip: a plain copy, black outside the image."""
    left, top = _lround(rect[0]), _lround(rect[1])
    out = np.zeros((d.rows, d.cols) + img.shape[2:], np.uint8)
    h, w = img.shape[:2]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + d.cols, w), min(top + d.rows, h)
    if x1 > x0 and y1 > y0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = img[y0:y1, x0:x1]
    return out


def extract_chip(image: np.ndarray, details: ChipDetails) -> np.ndarray:
    """Dlib's ``extract_image_chip`` (bilinear, pyramid anti-aliasing) for one chip.

    Args:
        image: ``(H, W, 3)`` ``uint8`` image (BGR in facelab; any order is kept).
        details: placement from :func:`face_chip_details`.

    Returns:
        ``(rows, cols, 3)`` ``uint8`` chip in the colour order of ``image``.

    Example:
        >>> import numpy as np
        >>> shape = np.array([[140, 100], [120, 101], [60, 100], [80, 101], [100, 150]])
        >>> chip = extract_chip(np.zeros((300, 300, 3), np.uint8), face_chip_details(shape))
        >>> chip.shape, chip.dtype.name
        ((150, 150, 3), 'uint8')
    """
    return extract_chips(image, [details])[0]
