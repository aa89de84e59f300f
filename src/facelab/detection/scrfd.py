"""SCRFD face detector (InsightFace ``det_*.onnx``), numerically equivalent to insightface 2.1's ``SCRFD``.

Every InsightFace export is supported: 6, 9, 10 or 15 outputs (strides 8/16/32 with two anchors
per cell, or 8…128 with one; with or without five keypoints), outputs with or without a batch
axis, and fixed or dynamic input sizes. The order of operations is InsightFace's: per input
size, letterbox (:func:`facelab.ops.boxes.letterbox`), normalise (RGB, ``(x - 127.5) / 128``),
run, keep ``score >= det_thresh``, decode, divide by the letterbox scale and sort (stable, by
descending score); then the candidates of all sizes are concatenated in size order, sorted again
(stable), and ONE greedy NMS (``+1`` pixel IoU, suppress ``IoU > nms_thresh``) runs over them;
``max_num`` is applied last.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab.detection._decode import anchor_centers, distance2bbox, distance2kps
from facelab.detection.base import Detector, normalize_sizes, register_detector
from facelab.errors import ConfigError, ModelError
from facelab.ops.boxes import letterbox
from facelab.ops.nms import nms
from facelab.ops.normalize import INSIGHTFACE_DETECTOR, Normalization
from facelab.structures import Detections

if TYPE_CHECKING:
    from facelab.runtime.session import OrtSession
    from facelab.zoo.card import ModelCard

__all__ = ["SCRFD", "SCRFD_LAYOUTS", "DEFAULT_DET_SIZES"]

_logger = logging.getLogger(__name__)

#: InsightFace's "Auto" input sizes ``(width, height)``: both run, one NMS over all candidates.
DEFAULT_DET_SIZES = ((128, 128), (640, 640))

#: Output count -> (strides, anchors per cell, has keypoints).
SCRFD_LAYOUTS: dict[int, tuple[tuple[int, ...], int, bool]] = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}


@register_detector("scrfd")
class SCRFD(Detector):
    """SCRFD detector on ONNX Runtime.

    Outputs are read in InsightFace's order: the score maps of every stride, then the box maps,
    then the keypoint maps. Batched detection: InsightFace's published files fix the batch axis
    to 1 and have outputs without a batch axis, so :meth:`detect_batch` loops over the images
    for them; a re-export with a dynamic batch axis and ``(N, K, C)`` outputs runs each chunk of
    images in one ``session.run`` per input size (all images are letterboxed onto the same
    canvas, so results equal the one-by-one ones).

    Args:
        session: an ONNX Runtime session of an SCRFD model.
        det_size: ``(width, height)`` network input size, a list of sizes whose candidates are
            merged by one NMS, or ``None`` for InsightFace's Auto ``[(128, 128), (640, 640)]``.
            A model with a fixed input size always uses its own size.
        det_thresh: score threshold (default 0.5).
        nms_thresh: NMS IoU threshold (default 0.4).
        normalization: default RGB, ``(x - 127.5) / 128`` (:data:`INSIGHTFACE_DETECTOR`).
        max_batch: most images per network run in :meth:`detect_batch`.
        card: the model card, when built from one.

    Example:
        >>> det = SCRFD.from_path("det_500m.onnx", det_size=(640, 640))  # doctest: +SKIP
        >>> det.detect("t1.jpg").boxes.shape  # doctest: +SKIP
        (6, 4)
    """

    arch = "scrfd"
    default_normalization: Normalization = INSIGHTFACE_DETECTOR

    def __init__(
        self,
        session: OrtSession,
        *,
        det_size: Any = None,
        det_thresh: float | None = None,
        nms_thresh: float | None = None,
        normalization: Normalization | None = None,
        max_batch: int = 16,
        card: ModelCard | None = None,
    ) -> None:
        super().__init__(
            session,
            det_thresh=det_thresh,
            nms_thresh=nms_thresh,
            normalization=normalization,
            max_batch=max_batch,
            card=card,
        )
        count = len(session.outputs)
        if count not in SCRFD_LAYOUTS:
            raise ModelError(
                f"{self._label}: not an SCRFD model: {count} outputs, expected 6, 9, 10 or 15 "
                "(scores, boxes[, keypoints] per stride)"
            )
        self.strides, self.num_anchors, self.use_kps = SCRFD_LAYOUTS[count]
        ranks = {len(o.shape) for o in session.outputs}
        if not ranks <= {2, 3}:
            raise ModelError(f"{self._label}: SCRFD outputs must have rank 2 or 3, got ranks {sorted(ranks)}")
        self.batched_outputs = 3 in ranks
        fixed = self._fixed_input_size()
        requested = normalize_sizes(det_size)
        if fixed is not None:
            if requested is not None and requested != [fixed]:
                _logger.info("%s: fixed input size %s overrides det_size %s", self._label, fixed, requested)
            self.input_sizes: list[tuple[int, int]] = [fixed]
        else:
            self.input_sizes = requested if requested is not None else list(DEFAULT_DET_SIZES)
        step = max(self.strides)
        bad = [size for size in self.input_sizes if size[0] % step or size[1] % step]
        if bad:
            raise ConfigError(f"{self._label}: SCRFD input sizes must be multiples of {step}, got {bad}")

    @property
    def with_kps(self) -> bool:
        """Whether the model predicts five keypoints (9 or 15 outputs)."""
        return self.use_kps

    @property
    def supports_batch(self) -> bool:
        """True when the batch axis is dynamic and the outputs carry a batch axis."""
        return self.session.inputs[0].shape[0] is None and self.batched_outputs

    def _detect_images(self, images: list[np.ndarray]) -> list[Detections]:
        per_image: list[list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]] = [[] for _ in images]
        for size in self.input_sizes:
            boxed = [letterbox(img, size) for img in images]
            outputs = self._run([canvas for canvas, _ in boxed])
            for i, ((canvas, scale), outs) in enumerate(zip(boxed, outputs)):
                per_image[i].append(self._candidates(outs, canvas.shape[0], canvas.shape[1], scale))
        return [self._merge(cands) for cands in per_image]

    def _candidates(
        self, outs: list[np.ndarray], height: int, width: int, scale: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Thresholded, decoded, rescaled candidates of one image at one size, sorted by score."""
        fmc = len(self.strides)
        scores_list, boxes_list, kps_list = [], [], []
        for idx, stride in enumerate(self.strides):
            scores = outs[idx].reshape(-1)
            keep = np.nonzero(scores >= self.det_thresh)[0]
            centers = anchor_centers(height // stride, width // stride, stride, self.num_anchors)
            if len(centers) != len(scores):
                raise ModelError(
                    f"{self._label}: stride {stride} output has {len(scores)} rows, expected {len(centers)} "
                    f"for a {width}x{height} input with {self.num_anchors} anchor(s) per cell"
                )
            points = centers[keep]
            scores_list.append(scores[keep])
            boxes_list.append(distance2bbox(points, outs[idx + fmc].reshape(-1, 4)[keep] * stride))
            if self.use_kps:
                kps = distance2kps(points, outs[idx + 2 * fmc].reshape(len(scores), -1)[keep] * stride)
                kps_list.append(kps.reshape(len(keep), kps.shape[1] // 2, 2))
        scores = np.concatenate(scores_list).astype(np.float32, copy=False)
        order = np.argsort(-scores, kind="stable")
        boxes = (np.concatenate(boxes_list) / scale).astype(np.float32, copy=False)[order]
        kps = (np.concatenate(kps_list) / scale).astype(np.float32, copy=False)[order] if self.use_kps else None
        return scores[order], boxes, kps

    def _merge(self, cands: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> Detections:
        """One global NMS over the candidates of every input size."""
        scores = np.concatenate([c[0] for c in cands])
        if len(scores) == 0:
            return Detections.empty(with_kps=self.use_kps)
        boxes = np.concatenate([c[1] for c in cands])
        order = np.argsort(-scores, kind="stable")
        scores, boxes = scores[order], boxes[order]
        kps = np.concatenate([c[2] for c in cands])[order] if self.use_kps else None
        keep = nms(boxes, scores, self.nms_thresh)
        return Detections(boxes[keep], scores[keep], None if kps is None else kps[keep])
