"""Pure numpy decoding of face-detector outputs: SCRFD, RetinaFace (two layouts) and YuNet.

Nothing here touches ONNX Runtime; each function maps raw network outputs of one feature level
(or of all priors) to boxes, keypoints and scores in *network-input* pixels (RetinaFace prior
decoding: in units of the input size). Conventions:

* SCRFD (InsightFace ``model_zoo/scrfd.py``): anchor-free. A level of stride ``s`` on an
  ``H x W`` input has ``(H // s) * (W // s)`` cells; cell ``(x, y)`` has centre ``(x * s, y * s)``
  (no half-cell offset), repeated ``num_anchors`` times consecutively, rows in row-major
  ``(y, x, anchor)`` order. Box outputs are distances ``(left, top, right, bottom)`` and keypoint
  outputs offsets ``(dx, dy)`` from the centre, both in units of the stride.
* RetinaFace, PyTorch layout (biubug6/Pytorch_Retinaface): SSD prior boxes
  ``(cx, cy, w, h)`` normalised by the input size, per level ``min_sizes`` ``[[16, 32], [64, 128],
  [256, 512]]`` at steps ``[8, 16, 32]``, feature maps ``ceil(H / step) x ceil(W / step)``, cell
  centre ``((j + 0.5) * step / W, (i + 0.5) * step / H)``; decoding with variances ``[0.1, 0.2]``.
* RetinaFace, InsightFace MXNet layout (``detection/retinaface``): R-CNN anchors built from a
  ``(0, 0, 15, 15)`` base window (``+1`` pixel convention), strides ``32, 16, 8`` with scales
  ``(32, 16)``, ``(8, 4)``, ``(2, 1)``, shifted by ``(x * s, y * s)``; deltas decoded as
  ``ctr + d * size`` and ``exp(d) * size``.
* YuNet (OpenCV ``FaceDetectorYN``): anchor-free, strides ``8, 16, 32`` on an input padded to a
  multiple of 32; ``score = sqrt(clip(cls) * clip(obj))``, centre ``(c + dx, r + dy) * s``,
  size ``exp(dw, dh) * s``, keypoints ``(c + kx, r + ky) * s``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

__all__ = [
    "anchor_centers",
    "distance2bbox",
    "distance2kps",
    "RETINAFACE_MIN_SIZES",
    "RETINAFACE_STEPS",
    "RETINAFACE_VARIANCES",
    "prior_boxes",
    "decode_prior_boxes",
    "decode_prior_landmarks",
    "MXNET_RETINAFACE_ANCHORS",
    "generate_anchors",
    "anchors_plane",
    "bbox_pred",
    "landmark_pred",
    "YUNET_STRIDES",
    "decode_yunet_level",
]

# --------------------------------------------------------------------------------------- SCRFD


@lru_cache(maxsize=128)
def _anchor_centers_cached(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    centers = (np.stack([xs, ys], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
    if num_anchors > 1:
        centers = np.repeat(centers, num_anchors, axis=0)
    centers.setflags(write=False)
    return centers


def anchor_centers(height: int, width: int, stride: int, num_anchors: int = 1) -> np.ndarray:
    """SCRFD anchor centres of one feature level (cached; the returned array is read-only).

    Args:
        height: feature-map height, ``input_h // stride``.
        width: feature-map width, ``input_w // stride``.
        stride: the level's stride in input pixels.
        num_anchors: anchors per cell; each centre is repeated this many times consecutively.

    Returns:
        ``(height * width * num_anchors, 2)`` ``float32`` ``(x, y)`` = ``(col * stride, row * stride)``,
        rows in ``(row, col, anchor)`` order.

    Example:
        >>> anchor_centers(2, 2, 8, 2)[:, 0].tolist()
        [0.0, 0.0, 8.0, 8.0, 0.0, 0.0, 8.0, 8.0]
    """
    return _anchor_centers_cached(int(height), int(width), int(stride), int(num_anchors))


def distance2bbox(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Boxes from centre points and ``(left, top, right, bottom)`` distances.

    Args:
        points: ``(N, 2)`` ``(x, y)``.
        distance: ``(N, 4)`` distances in the same units as ``points``.

    Returns:
        ``(N, 4)`` ``[x - left, y - top, x + right, y + bottom]`` in the inputs' dtype.
    """
    return np.stack(
        [
            points[:, 0] - distance[:, 0],
            points[:, 1] - distance[:, 1],
            points[:, 0] + distance[:, 2],
            points[:, 1] + distance[:, 3],
        ],
        axis=-1,
    )


def distance2kps(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Keypoints from centre points and ``(dx, dy)`` offsets.

    Args:
        points: ``(N, 2)`` ``(x, y)``.
        distance: ``(N, 2K)`` offsets ``dx_0, dy_0, dx_1, ...``.

    Returns:
        ``(N, 2K)`` ``x_0, y_0, x_1, ...`` = ``x + dx_i, y + dy_i``; reshape to ``(N, K, 2)``.
    """
    num = distance.shape[1] // 2
    return (distance.reshape(-1, num, 2) + points[:, None, :]).reshape(-1, 2 * num)


# --------------------------------------------------------------- RetinaFace, PyTorch (biubug6)

#: Prior box sizes (input pixels) per level of biubug6's RetinaFace (``cfg_mnet`` / ``cfg_re50``).
RETINAFACE_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
#: Strides of those levels.
RETINAFACE_STEPS = (8, 16, 32)
#: Centre and size variances of the box encoding.
RETINAFACE_VARIANCES = (0.1, 0.2)


@lru_cache(maxsize=32)
def _prior_boxes_cached(
    height: int, width: int, min_sizes: tuple[tuple[int, ...], ...], steps: tuple[int, ...]
) -> np.ndarray:
    levels = []
    for sizes, step in zip(min_sizes, steps):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.mgrid[:rows, :cols]
        cx = ((xs.reshape(-1) + 0.5) * step / width)[:, None]
        cy = ((ys.reshape(-1) + 0.5) * step / height)[:, None]
        per_size = [
            np.concatenate([cx, cy, np.full_like(cx, size / width), np.full_like(cy, size / height)], axis=1)
            for size in sizes
        ]
        # (cell, size) order: every size of a cell before the next cell.
        levels.append(np.stack(per_size, axis=1).reshape(-1, 4))
    priors = np.concatenate(levels, axis=0).astype(np.float32)
    priors.setflags(write=False)
    return priors


def prior_boxes(
    image_size: Sequence[int],
    min_sizes: Sequence[Sequence[int]] = RETINAFACE_MIN_SIZES,
    steps: Sequence[int] = RETINAFACE_STEPS,
) -> np.ndarray:
    """SSD-style prior boxes of biubug6's RetinaFace (cached; read-only).

    Args:
        image_size: network input ``(height, width)``.
        min_sizes: prior sizes in pixels per level.
        steps: stride of each level; the level has ``ceil(height / step) x ceil(width / step)`` cells.

    Returns:
        ``(P, 4)`` ``float32`` ``(cx, cy, w, h)`` normalised by the input width/height, ordered by
        level, then row, column and size.

    Example:
        >>> prior_boxes((32, 32), ((16,),), (16,))[:2].tolist()
        [[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5]]
    """
    return _prior_boxes_cached(
        int(image_size[0]),
        int(image_size[1]),
        tuple(tuple(int(s) for s in level) for level in min_sizes),
        tuple(int(s) for s in steps),
    )


def decode_prior_boxes(
    loc: np.ndarray, priors: np.ndarray, variances: Sequence[float] = RETINAFACE_VARIANCES
) -> np.ndarray:
    """Decode RetinaFace box regressions against prior boxes.

    ``cx = pcx + dx * v0 * pw``, ``cy = pcy + dy * v0 * ph``, ``w = pw * exp(dw * v1)``,
    ``h = ph * exp(dh * v1)``, then ``x1 = cx - w / 2``, ``x2 = x1 + w`` (likewise for ``y``).

    Args:
        loc: ``(P, 4)`` regressions ``(dx, dy, dw, dh)``.
        priors: ``(P, 4)`` ``(cx, cy, w, h)`` from :func:`prior_boxes`.
        variances: ``(centre, size)`` variances.

    Returns:
        ``(P, 4)`` ``float32`` ``[x1, y1, x2, y2]`` normalised by the input size (multiply by
        ``[W, H, W, H]`` for pixels).
    """
    loc = np.asarray(loc, dtype=np.float32)
    v0, v1 = np.float32(variances[0]), np.float32(variances[1])
    centers = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
    top_left = centers - sizes / 2
    return np.concatenate([top_left, top_left + sizes], axis=1)


def decode_prior_landmarks(
    landms: np.ndarray, priors: np.ndarray, variances: Sequence[float] = RETINAFACE_VARIANCES
) -> np.ndarray:
    """Decode RetinaFace landmark regressions: ``p = prior_c + d * v0 * prior_size`` per point.

    Args:
        landms: ``(P, 2K)`` regressions ``dx_0, dy_0, ...``.
        priors: ``(P, 4)`` ``(cx, cy, w, h)``.
        variances: ``(centre, size)`` variances (only the first is used).

    Returns:
        ``(P, 2K)`` ``float32`` ``x_0, y_0, ...`` normalised by the input size.
    """
    landms = np.asarray(landms, dtype=np.float32)
    num = landms.shape[1] // 2
    v0 = np.float32(variances[0])
    points = priors[:, None, :2] + landms.reshape(-1, num, 2) * v0 * priors[:, None, 2:]
    return points.reshape(-1, 2 * num)


# ---------------------------------------------------------- RetinaFace, InsightFace MXNet layout

#: InsightFace's MXNet RetinaFace (``network='net3'``) anchors: stride -> (base size, ratios, scales).
MXNET_RETINAFACE_ANCHORS = {
    32: (16, (1.0,), (32.0, 16.0)),
    16: (16, (1.0,), (8.0, 4.0)),
    8: (16, (1.0,), (2.0, 1.0)),
}


def _mkanchors(ws: np.ndarray, hs: np.ndarray, x_ctr: float, y_ctr: float) -> np.ndarray:
    ws, hs = ws[:, None], hs[:, None]
    return np.hstack([x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1), x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)])


def generate_anchors(
    base_size: int = 16, ratios: Sequence[float] = (1.0,), scales: Sequence[float] = (2.0, 1.0)
) -> np.ndarray:
    """R-CNN base anchors of one level, as InsightFace's MXNet RetinaFace builds them.

    The ``(0, 0, base_size - 1, base_size - 1)`` window is reshaped to each aspect ratio (width
    ``round(sqrt(area / ratio))``, height ``round(width * ratio)``) and then scaled, keeping its
    centre; corners follow the ``+1`` pixel convention (``x2 = x1 + w - 1``).

    Args:
        base_size: side of the base window.
        ratios: height/width aspect ratios.
        scales: multipliers of the window side.

    Returns:
        ``(len(ratios) * len(scales), 4)`` ``float32`` ``[x1, y1, x2, y2]``, ratio-major.

    Example:
        >>> generate_anchors(16, (1.0,), (2.0, 1.0)).tolist()
        [[-8.0, -8.0, 23.0, 23.0], [0.0, 0.0, 15.0, 15.0]]
    """
    side = float(base_size)
    ctr = 0.5 * (side - 1)
    out = []
    for ratio in ratios:
        w = np.round(np.sqrt(side * side / ratio))
        h = np.round(w * ratio)
        ws = w * np.asarray(scales, dtype=np.float64)
        hs = h * np.asarray(scales, dtype=np.float64)
        out.append(_mkanchors(ws, hs, ctr, ctr))
    return np.vstack(out).astype(np.float32)


def anchors_plane(height: int, width: int, stride: int, base_anchors: np.ndarray) -> np.ndarray:
    """Shift base anchors over a feature map.

    Args:
        height: feature-map rows.
        width: feature-map columns.
        stride: pixels per cell.
        base_anchors: ``(A, 4)`` from :func:`generate_anchors`.

    Returns:
        ``(height * width * A, 4)`` ``float32``, rows in ``(row, col, anchor)`` order; anchor ``a``
        of cell ``(r, c)`` is ``base_anchors[a] + (c * s, r * s, c * s, r * s)``.
    """
    ys, xs = np.mgrid[:height, :width]
    shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4).astype(np.float32) * stride
    return (shifts + np.asarray(base_anchors, np.float32)[None]).reshape(-1, 4)


def _centers_sizes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float32)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    return boxes[:, 0] + 0.5 * (widths - 1.0), boxes[:, 1] + 0.5 * (heights - 1.0), widths, heights


def bbox_pred(anchors: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply R-CNN box deltas ``(dx, dy, dw, dh)`` to anchors (``+1`` pixel convention).

    Args:
        anchors: ``(N, 4)`` ``[x1, y1, x2, y2]``.
        deltas: ``(N, 4)``.

    Returns:
        ``(N, 4)`` ``float32``: centre ``ctr + d * size``, size ``exp(d) * size``, corners
        ``ctr -/+ 0.5 * (size - 1)``.
    """
    ctr_x, ctr_y, widths, heights = _centers_sizes(anchors)
    deltas = np.asarray(deltas, dtype=np.float32)
    pred_x = deltas[:, 0] * widths + ctr_x
    pred_y = deltas[:, 1] * heights + ctr_y
    pred_w = np.exp(deltas[:, 2]) * widths
    pred_h = np.exp(deltas[:, 3]) * heights
    return np.stack(
        [
            pred_x - 0.5 * (pred_w - 1.0),
            pred_y - 0.5 * (pred_h - 1.0),
            pred_x + 0.5 * (pred_w - 1.0),
            pred_y + 0.5 * (pred_h - 1.0),
        ],
        axis=1,
    ).astype(np.float32)


def landmark_pred(anchors: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply landmark deltas to anchors: ``p = ctr + d * size``.

    Args:
        anchors: ``(N, 4)`` ``[x1, y1, x2, y2]``.
        deltas: ``(N, K, 2)`` offsets in units of the anchor size.

    Returns:
        ``(N, K, 2)`` ``float32`` points.
    """
    ctr_x, ctr_y, widths, heights = _centers_sizes(anchors)
    deltas = np.asarray(deltas, dtype=np.float32)
    out = np.empty_like(deltas)
    out[:, :, 0] = deltas[:, :, 0] * widths[:, None] + ctr_x[:, None]
    out[:, :, 1] = deltas[:, :, 1] * heights[:, None] + ctr_y[:, None]
    return out


# ------------------------------------------------------------------------------------- YuNet

#: YuNet's feature strides (output order ``*_8, *_16, *_32``).
YUNET_STRIDES = (8, 16, 32)


def decode_yunet_level(
    cls: np.ndarray,
    obj: np.ndarray,
    bbox: np.ndarray,
    kps: np.ndarray,
    stride: int,
    rows: int,
    cols: int,
    score_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one YuNet level, as OpenCV's ``FaceDetectorYN``.

    Args:
        cls: ``(rows * cols,)`` or ``(rows * cols, 1)`` class scores.
        obj: same shape, objectness.
        bbox: ``(rows * cols, 4)`` ``(dx, dy, log w, log h)`` in units of the stride.
        kps: ``(rows * cols, 10)`` keypoint offsets in units of the stride.
        stride: the level's stride.
        rows: ``padded_h // stride``.
        cols: ``padded_w // stride``.
        score_threshold: keep cells with ``score >= score_threshold``.

    Returns:
        ``(scores (N,), boxes (N, 4) [x1, y1, x2, y2], kps (N, 5, 2))``, ``float32``, in input pixels.
    """
    count = rows * cols
    cls_v = np.clip(np.asarray(cls, np.float32).reshape(-1)[:count], 0.0, 1.0)
    obj_v = np.clip(np.asarray(obj, np.float32).reshape(-1)[:count], 0.0, 1.0)
    scores = np.sqrt(cls_v * obj_v)
    keep = np.nonzero(scores >= score_threshold)[0]
    bbox_v = np.asarray(bbox, np.float32).reshape(-1, 4)[keep]
    kps_v = np.asarray(kps, np.float32).reshape(-1, 10)[keep].reshape(-1, 5, 2)
    col = (keep % cols).astype(np.float32)
    row = (keep // cols).astype(np.float32)
    s = np.float32(stride)
    cx = (col + bbox_v[:, 0]) * s
    cy = (row + bbox_v[:, 1]) * s
    w = np.exp(bbox_v[:, 2]) * s
    h = np.exp(bbox_v[:, 3]) * s
    x1 = cx - w / 2
    y1 = cy - h / 2
    boxes = np.stack([x1, y1, x1 + w, y1 + h], axis=1)
    points = np.empty_like(kps_v)
    points[:, :, 0] = (kps_v[:, :, 0] + col[:, None]) * s
    points[:, :, 1] = (kps_v[:, :, 1] + row[:, None]) * s
    return scores[keep], boxes.astype(np.float32), points
