"""Hide faces in an image: blur, mosaic, solid fill, or a blurred ellipse, on scaled boxes.

Every mode works on the box scaled by ``mask_scale`` about its centre (both sides multiplied:
1.3 makes the box 1.3 times as wide and tall) and clipped to the image. deface's ``--mask-scale
M`` grows each side by ``(M - 1)`` box sizes on *each* side, so its 1.3 is facelab's 1.6.

* ``blur``: the region shrunk to at most 16 pixels on its longest side and enlarged again
  (a pyramid blur, as PrivateFrame's ``gaussian``/``pyramid`` method; no detail finer than a
  sixteenth of the face survives, whatever the face size).
* ``mosaic``: blocks of ``max(8, 0.12 * longest side)`` pixels, each filled with its mean colour
  (PrivateFrame's ``block_size_ratio 0.12``, ``min_block_size 8``).
* ``solid``: filled with one colour (black unless given).
* ``ellipse``: ``blur`` inside the ellipse inscribed in the scaled box (deface's default shape);
  the box corners stay visible.

Modes are registered in :data:`REDACTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from facelab.errors import ConfigError
from facelab.registry import Registry

__all__ = [
    "REDACTIONS",
    "REDACTION_MODES",
    "DEFAULT_MASK_SCALE",
    "scale_boxes",
    "redact",
    "BLUR_SIDE",
    "MOSAIC_RATIO",
    "MOSAIC_MIN",
]

#: Side multiplier of the face boxes when none is given (the library's, the CLI's and the boxes files' default).
DEFAULT_MASK_SCALE = 1.3
#: Longest side, in pixels, a region is shrunk to by the ``blur`` mode.
BLUR_SIDE = 16
#: Mosaic block size as a fraction of the region's longest side, and its minimum in pixels.
MOSAIC_RATIO = 0.12
MOSAIC_MIN = 8

#: Redaction functions by mode: ``fn(region, color) -> region`` on a ``(h, w, 3)`` uint8 view.
REDACTIONS: Registry[Callable[[np.ndarray, tuple[int, int, int]], np.ndarray]] = Registry("redaction mode")


def _cv2():
    import cv2

    return cv2


@REDACTIONS.register("blur")
def _blur(region: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    cv2 = _cv2()
    h, w = region.shape[:2]
    s = BLUR_SIDE / max(h, w)
    small = cv2.resize(region, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@REDACTIONS.register("mosaic")
def _mosaic(region: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    cv2 = _cv2()
    h, w = region.shape[:2]
    block = max(MOSAIC_MIN, round(MOSAIC_RATIO * max(h, w)))
    small = cv2.resize(region, (max(1, -(-w // block)), max(1, -(-h // block))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


@REDACTIONS.register("solid")
def _solid(region: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    out = np.empty_like(region)
    out[:] = np.asarray(color, dtype=np.uint8)
    return out


@REDACTIONS.register("ellipse")
def _ellipse(region: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    h, w = region.shape[:2]
    blurred = _blur(region, color)
    y = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / (h / 2)
    x = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (w / 2)
    inside = (y[:, None] ** 2 + x[None, :] ** 2) <= 1.0
    out = region.copy()
    out[inside] = blurred[inside]
    return out


#: The mode names, in the order the CLI lists them.
REDACTION_MODES = ("blur", "mosaic", "solid", "ellipse")


def scale_boxes(boxes: np.ndarray, scale: float) -> np.ndarray:
    """``(N, 4)`` boxes with both sides multiplied by ``scale`` about their centres.

    ``float64`` input stays ``float64`` (the tracker's and the mask planner's boxes); anything
    else comes back as ``float32``.
    """
    boxes = np.asarray(boxes)
    boxes = boxes.reshape(-1, 4).astype(np.float64 if boxes.dtype == np.float64 else np.float32, copy=False)
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (scale / 2)
    return np.concatenate([c - half, c + half], axis=1)


def redact(
    image: np.ndarray,
    boxes: np.ndarray | Sequence[Sequence[float]],
    mode: str = "blur",
    *,
    mask_scale: float = DEFAULT_MASK_SCALE,
    color: tuple[int, int, int] = (0, 0, 0),
    inplace: bool = False,
) -> np.ndarray:
    """Hide every box of an image.

    Args:
        image: ``(H, W, 3)`` ``uint8`` BGR.
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` pixels (the face boxes, before ``mask_scale``).
        mode: one of :data:`REDACTION_MODES`.
        mask_scale: side multiplier of each box (>= 1 grows it).
        color: BGR fill of ``solid``.
        inplace: write into ``image`` instead of a copy.

    Returns:
        The image with the boxes hidden (``image`` itself when ``inplace``).

    Raises:
        ConfigError: unknown mode or a scale that is not positive.

    Example:
        >>> img = np.full((40, 40, 3), 200, np.uint8)
        >>> int(redact(img, [[10, 10, 20, 20]], "solid", mask_scale=1.0)[15, 15, 0])
        0
    """
    if mode not in REDACTIONS:
        raise ConfigError(f"unknown anonymisation mode {mode!r}; choose from {', '.join(REDACTION_MODES)}")
    if not mask_scale > 0:
        raise ConfigError(f"mask_scale must be positive, got {mask_scale}")
    fn = REDACTIONS.get(mode)
    out = image if inplace else image.copy()
    h, w = out.shape[:2]
    color = tuple(int(c) for c in color)
    for x1, y1, x2, y2 in scale_boxes(np.asarray(boxes, dtype=np.float32), mask_scale):
        xa, ya = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        xb, yb = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
        if xb <= xa or yb <= ya:
            continue
        out[ya:yb, xa:xb] = fn(out[ya:yb, xa:xb], color)
    return out
