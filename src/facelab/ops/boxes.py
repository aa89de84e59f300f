"""Box utilities shared by the detectors: IoU, SCRFD's letterbox resize and InsightFace's ``max_num`` choice.

Boxes are ``[x1, y1, x2, y2]`` pixel coordinates (see :mod:`facelab.structures`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facelab.errors import ConfigError, ImageError

__all__ = ["box_area", "iou_matrix", "letterbox", "select_max_num", "MAX_NUM_METRICS"]

#: Metrics accepted by :func:`select_max_num`.
MAX_NUM_METRICS = ("default", "max")


def box_area(boxes: np.ndarray, *, plus_one: bool = False) -> np.ndarray:
    """Areas of ``(N, 4)`` boxes (negative extents count as zero).

    Args:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]``.
        plus_one: use the ``+1`` pixel convention ``(x2 - x1 + 1) * (y2 - y1 + 1)`` of InsightFace's NMS.

    Returns:
        ``(N,)`` areas in the boxes' float dtype (``float64`` for integer input).
    """
    boxes = np.asarray(boxes)
    if not np.issubdtype(boxes.dtype, np.floating):
        boxes = boxes.astype(np.float64)
    one = 1 if plus_one else 0
    w = np.maximum(boxes[:, 2] - boxes[:, 0] + one, 0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1] + one, 0)
    return w * h


def iou_matrix(a: np.ndarray, b: np.ndarray, *, plus_one: bool = False) -> np.ndarray:
    """Pairwise intersection-over-union of two box sets.

    Args:
        a: ``(N, 4)`` boxes ``[x1, y1, x2, y2]``.
        b: ``(M, 4)`` boxes.
        plus_one: ``+1`` pixel area convention (InsightFace NMS); ``False`` (default) for
            continuous coordinates, as used by evaluation code.

    Returns:
        ``(N, M)`` ``float64`` IoU values in ``[0, 1]`` (0 where the union is empty).

    Example:
        >>> iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]])).round(4).tolist()
        [[0.3333, 0.0]]
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if plus_one else 0.0
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    union = box_area(a, plus_one=plus_one)[:, None] + box_area(b, plus_one=plus_one)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def letterbox(image: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio and paste at the top-left of a black canvas, as InsightFace's SCRFD does.

    With ``im_ratio = H / W`` and ``model_ratio = size_h / size_w``: if ``im_ratio > model_ratio``
    the new height is ``size_h`` and the new width ``int(size_h / im_ratio)``, otherwise the new
    width is ``size_w`` and the new height ``int(size_w * im_ratio)``. The image is resized with
    ``cv2.resize`` (bilinear) and the rest of the canvas is zero. Detections on the canvas map back
    to the image by dividing by ``scale`` (there is no offset).

    Args:
        image: ``(H, W, C)`` ``uint8`` image (BGR in facelab).
        size: canvas ``(width, height)``.

    Returns:
        ``(canvas, scale)``: the ``(size_h, size_w, C)`` canvas (same dtype as ``image``) and
        ``scale = new_h / H`` (InsightFace's ``det_scale``).

    Example:
        >>> canvas, scale = letterbox(np.full((100, 200, 3), 255, np.uint8), (64, 64))
        >>> canvas.shape, scale, int(canvas[:, :, 0].sum() // 255)
        ((64, 64, 3), 0.32, 2048)
    """
    import cv2

    if image.ndim < 2 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"letterbox: empty image of shape {image.shape}")
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise ConfigError(f"letterbox: canvas size must be positive, got {tuple(size)}")
    im_ratio = float(image.shape[0]) / image.shape[1]
    model_ratio = float(height) / width
    if im_ratio > model_ratio:
        new_height = height
        new_width = int(new_height / im_ratio)
    else:
        new_width = width
        new_height = int(new_width * im_ratio)
    # InsightFace would crash on a zero side (extreme aspect ratios); keep at least one pixel.
    new_width, new_height = max(new_width, 1), max(new_height, 1)
    scale = float(new_height) / image.shape[0]
    resized = cv2.resize(image, (new_width, new_height))
    canvas = np.zeros((height, width) + image.shape[2:], dtype=image.dtype)
    canvas[:new_height, :new_width] = resized.reshape((new_height, new_width) + image.shape[2:])
    return canvas, scale


def select_max_num(boxes: np.ndarray, image_shape: Sequence[int], max_num: int, metric: str = "default") -> np.ndarray:
    """Indices of the ``max_num`` boxes InsightFace keeps when ``max_num > 0``.

    Each box is ranked by ``area`` (``metric="max"``) or by ``area - 2 * offset^2``
    (``metric="default"``), where ``area = (x2 - x1) * (y2 - y1)`` and ``offset`` is the distance from
    the box centre to the image centre ``(W // 2, H // 2)``; the highest values are kept, best
    first. With ``max_num <= 0`` or no more boxes than ``max_num`` every index is returned in
    its original order (InsightFace does not reorder then either).

    Args:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` (``float32`` for InsightFace-identical ties).
        image_shape: the image's ``(H, W, ...)`` shape.
        max_num: number of faces to keep; ``0`` keeps all.
        metric: ``"default"`` (large and central) or ``"max"`` (largest).

    Returns:
        ``(K,)`` ``int64`` indices into ``boxes``.

    Example:
        >>> b = np.array([[0, 0, 10, 10], [40, 40, 60, 60], [0, 0, 30, 30]], np.float32)
        >>> select_max_num(b, (100, 100, 3), 1).tolist(), select_max_num(b, (100, 100, 3), 1, "max").tolist()
        ([1], [2])
    """
    if metric not in MAX_NUM_METRICS:
        raise ConfigError(f"max_num metric must be one of {MAX_NUM_METRICS}, not {metric!r}")
    boxes = np.asarray(boxes)
    count = len(boxes)
    if max_num <= 0 or count <= max_num:
        return np.arange(count, dtype=np.int64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if metric == "max":
        values = area
    else:
        center_y, center_x = int(image_shape[0]) // 2, int(image_shape[1]) // 2
        dx = (boxes[:, 0] + boxes[:, 2]) / 2 - center_x
        dy = (boxes[:, 1] + boxes[:, 3]) / 2 - center_y
        values = area - (np.power(dx, 2.0) + np.power(dy, 2.0)) * 2.0
    # Reversed ascending argsort (not a stable descending sort): InsightFace's tie order.
    return np.argsort(values)[::-1][:max_num].astype(np.int64)
