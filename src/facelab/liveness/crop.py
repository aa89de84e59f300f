"""The crops Silent-Face-Anti-Spoofing's models expect: the face box scaled around its centre, kept inside the image.

The original (``src/generate_patches.py``, ``CropImage``) works on its detector's box
``[x, y, w, h]`` (integers: ``x = int(left)``, ``y = int(top)``, ``w = int(right - left + 1)``,
``h = int(bottom - top + 1)`` from the detector's corners). For a crop at ``scale``:

1. the scale is reduced so the crop fits the image: ``scale = min(scale, (H - 1) / h, (W - 1) / w)``;
2. a ``w * scale`` by ``h * scale`` box is centred on ``(x + w / 2, y + h / 2)``;
3. a box crossing the left/top edge is shifted right/down to start at 0, one crossing the
   right/bottom edge is shifted left/up to end at ``W - 1`` / ``H - 1`` (its size is kept);
4. the corners are truncated to integers and the inclusive pixel range
   ``[y1, y2] x [x1, x2]`` is resized to ``S x S`` with ``cv2.resize`` (bilinear).

facelab boxes ``[x1, y1, x2, y2]`` are converted to the original's ``[x, y, w, h]`` the way the
original converts its detector's corners (:func:`xyxy_to_silentface`). Crops stay BGR ``uint8``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from facelab.errors import ConfigError, ImageError

__all__ = ["xyxy_to_silentface", "silentface_box", "silentface_crop", "silentface_crops"]


def xyxy_to_silentface(box: Sequence[float] | np.ndarray) -> tuple[int, int, int, int]:
    """``[x1, y1, x2, y2]`` → the original's ``[x, y, w, h]``: ``int(x1), int(y1), int(x2 - x1 + 1), int(y2 - y1 + 1)``.

    ``int`` truncates toward zero, as Python's does in the original; ``w`` and ``h`` are at least 1.

    Example:
        >>> xyxy_to_silentface([10.7, 20.2, 50.9, 80.0])
        (10, 20, 41, 60)
    """
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)[:4])
    if not all(np.isfinite([x1, y1, x2, y2])):
        raise ConfigError(f"face box {[x1, y1, x2, y2]} is not finite")
    return int(x1), int(y1), max(int(x2 - x1 + 1), 1), max(int(y2 - y1 + 1), 1)


def silentface_box(xywh: Sequence[int], width: int, height: int, scale: float) -> tuple[int, int, int, int]:
    """The crop's inclusive corners ``(x1, y1, x2, y2)`` for a box ``[x, y, w, h]`` in a ``width x height`` image.

    Example:
        >>> silentface_box((100, 100, 50, 60), 640, 480, 2.7)
        (57, 49, 192, 211)
        >>> silentface_box((0, 0, 50, 60), 640, 480, 2.7)   # shifted to start at the image's corner
        (0, 0, 135, 162)
    """
    x, y, w, h = xyxy = xywh
    if w <= 0 or h <= 0:
        raise ConfigError(f"face box {list(xyxy)} has no area")
    scale = min((height - 1) / h, min((width - 1) / w, scale))
    new_w, new_h = w * scale, h * scale
    cx, cy = w / 2 + x, h / 2 + y
    left, top = cx - new_w / 2, cy - new_h / 2
    right, bottom = cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > width - 1:
        left -= right - width + 1
        right = width - 1
    if bottom > height - 1:
        top -= bottom - height + 1
        bottom = height - 1
    return int(left), int(top), int(right), int(bottom)


def silentface_crop(image: np.ndarray, box: Sequence[float] | np.ndarray, scale: float, size: int) -> np.ndarray:
    """One ``(size, size, 3)`` ``uint8`` BGR crop of a facelab box ``[x1, y1, x2, y2]`` at ``scale``."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = silentface_box(xyxy_to_silentface(box), width, height, scale)
    patch = image[max(y1, 0) : y2 + 1, max(x1, 0) : x2 + 1]
    if patch.size == 0:
        raise ConfigError(f"face box {np.asarray(box).tolist()} gives an empty crop in a {width}x{height} image")
    return cv2.resize(patch, (size, size))


def silentface_crops(
    images: Sequence[np.ndarray], boxes_per_image: Sequence[np.ndarray], scale: float, size: int
) -> np.ndarray:
    """Crops of every box of every image, in order.

    Args:
        images: ``(H, W, 3)`` ``uint8`` BGR images.
        boxes_per_image: per image, ``(n_i, >=4)`` boxes ``[x1, y1, x2, y2, ...]``.
        scale: box scale (2.7 for MiniFASNetV2, 4.0 for MiniFASNetV1SE).
        size: crop side (80).

    Returns:
        ``(sum n_i, size, size, 3)`` ``uint8`` BGR.
    """
    crops: list[np.ndarray] = []
    for image, boxes in zip(images, boxes_per_image):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            shape = getattr(image, "shape", None)
            raise ImageError(f"expected an (H, W, 3) uint8 BGR image, got {type(image).__name__} of shape {shape}")
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            continue
        if boxes.ndim != 2 or boxes.shape[1] < 4:
            raise ConfigError(f"boxes must have shape (N, 4), got {boxes.shape}")
        crops.extend(silentface_crop(image, box, scale, size) for box in boxes)
    if not crops:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack(crops)
