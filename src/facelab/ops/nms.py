"""Greedy non-maximum suppression, numerically identical to InsightFace's detectors.

InsightFace (``model_zoo/scrfd.py``, ``detection/retinaface``) measures overlap with the
"+1 pixel" area convention of the original R-CNN code: a box ``[x1, y1, x2, y2]`` covers
``(x2 - x1 + 1) * (y2 - y1 + 1)`` pixels. OpenCV's ``dnn.NMSBoxes`` (used by YuNet) does not add
one; ``plus_one=False`` selects that convention.
"""

from __future__ import annotations

import numpy as np

from facelab.errors import ConfigError

__all__ = ["nms"]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, *, plus_one: bool = True) -> np.ndarray:
    """Greedy NMS: keep the best-scoring box, drop those overlapping it by more than the threshold, repeat.

    The candidate order is a *stable* sort by descending score, so equal scores keep their input
    order. A box is suppressed when its IoU with a kept box is strictly greater than
    ``iou_threshold`` (kept when ``IoU <= iou_threshold``), as in InsightFace.

    Args:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` pixel boxes (any float dtype; the arithmetic is done
            in this dtype, ``float32`` for detector outputs, as InsightFace does).
        scores: ``(N,)`` scores.
        iou_threshold: suppression threshold on IoU.
        plus_one: use the ``+1`` pixel area convention (InsightFace / R-CNN); ``False`` for plain
            ``(x2 - x1) * (y2 - y1)`` areas (OpenCV).

    Returns:
        ``(K,)`` ``int64`` indices into ``boxes`` of the kept boxes, best score first.

    Example:
        >>> b = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29]], np.float32)
        >>> nms(b, np.array([0.9, 0.8, 0.7], np.float32), 0.4).tolist()
        [0, 2]
    """
    boxes = np.asarray(boxes)
    scores = np.asarray(scores).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] < 4 or len(boxes) != len(scores):
        raise ConfigError(f"nms: expected (N, 4) boxes and (N,) scores, got {boxes.shape} and {scores.shape}")
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    one = 1 if plus_one else 0
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[ovr <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
