"""YuNet face detector (OpenCV Zoo ``face_detection_yunet_*.onnx``), decoded as OpenCV's ``FaceDetectorYN``.

The network takes a BGR ``float32`` image with raw 0..255 values, padded with zeros at the bottom
and right to a multiple of 32. Its twelve outputs ``cls_{8,16,32}``, ``obj_*``, ``bbox_*`` and
``kps_*`` are decoded by :func:`facelab.detection._decode.decode_yunet_level`; candidates with
``score >= det_thresh`` go through OpenCV's NMS (boxes truncated to integers, IoU without the
``+1`` convention, stable descending score order, at most ``top_k`` candidates, suppress
``IoU > nms_thresh``). Defaults are those of OpenCV Zoo's demo: ``det_thresh=0.9``,
``nms_thresh=0.3``, ``top_k=5000``. Keypoints come out in :class:`~facelab.structures.FaceKeypoint`
order (OpenCV's "right eye" is the subject's right eye, on the image's left).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab.detection._decode import YUNET_STRIDES, decode_yunet_level
from facelab.detection.base import Detector, register_detector
from facelab.errors import ModelError
from facelab.ops.boxes import letterbox
from facelab.ops.nms import nms
from facelab.ops.normalize import Normalization
from facelab.structures import Detections

if TYPE_CHECKING:
    from facelab.runtime.session import OrtSession
    from facelab.zoo.card import ModelCard

__all__ = ["YuNet", "YUNET_NORMALIZATION", "YUNET_OUTPUTS", "pad_to_multiple"]

_logger = logging.getLogger(__name__)

#: YuNet input: BGR, raw 0..255.
YUNET_NORMALIZATION = Normalization("BGR", (0.0,), (1.0,))
#: Output names in decoding order.
YUNET_OUTPUTS = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in YUNET_STRIDES)


def pad_to_multiple(image: np.ndarray, divisor: int = 32, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Pad an image with zeros at the bottom and right.

    Args:
        image: ``(H, W, C)`` array.
        divisor: the padded height and width are the smallest multiples of it that hold the image.
        shape: pad to at least this ``(height, width)`` instead of the image's own size.

    Returns:
        ``(H', W', C)`` array with the image at the top-left (the input itself when no padding is needed).
    """
    height, width = shape if shape is not None else image.shape[:2]
    padded_h = (max(height, image.shape[0]) - 1) // divisor * divisor + divisor
    padded_w = (max(width, image.shape[1]) - 1) // divisor * divisor + divisor
    if (padded_h, padded_w) == image.shape[:2]:
        return image
    out = np.zeros((padded_h, padded_w) + image.shape[2:], dtype=image.dtype)
    out[: image.shape[0], : image.shape[1]] = image
    return out


@register_detector("yunet")
class YuNet(Detector):
    """YuNet on ONNX Runtime.

    Args:
        session: an ONNX Runtime session of a YuNet model (outputs ``cls_*``, ``obj_*``, ``bbox_*``, ``kps_*``).
        det_size: ``None`` (default) runs each image at its own size, as OpenCV's demo does; a
            ``(width, height)`` letterboxes the image onto that canvas first (faster on large
            photos; then batches of images share one canvas).
        det_thresh: score threshold (default 0.9).
        nms_thresh: NMS IoU threshold (default 0.3).
        top_k: most candidates entering NMS (default 5000).
        normalization: default :data:`YUNET_NORMALIZATION`.
        max_batch: most images per network run in :meth:`detect_batch`. The OpenCV Zoo file fixes
            the batch axis to 1, so batches loop over the images.
        card: the model card, when built from one.
    """

    arch = "yunet"
    default_normalization = YUNET_NORMALIZATION
    default_det_thresh = 0.9
    default_nms_thresh = 0.3

    def __init__(
        self,
        session: OrtSession,
        *,
        det_size: Any = None,
        det_thresh: float | None = None,
        nms_thresh: float | None = None,
        top_k: int = 5000,
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
        names = [o.name for o in session.outputs]
        missing = [n for n in YUNET_OUTPUTS if n not in names]
        if missing:
            raise ModelError(f"{self._label}: not a YuNet model: outputs {missing} are missing (has {names})")
        self._order = [names.index(n) for n in YUNET_OUTPUTS]
        _logger.debug("%s: YuNet outputs in decoding order %s", self._label, self._order)
        self.top_k = int(top_k)
        self.det_size: tuple[int, int] | None = self._single_det_size(det_size)

    @classmethod
    def _card_keys(cls) -> tuple[str, ...]:
        return (*super()._card_keys(), "top_k")

    def _detect_images(self, images: list[np.ndarray]) -> list[Detections]:
        if self.det_size is None:
            results = []
            for img in images:
                canvas = pad_to_multiple(img)
                results.append(self._decode(self._run([canvas])[0], canvas.shape[:2], 1.0))
            return results
        boxed = [letterbox(img, self.det_size) for img in images]
        canvases = [pad_to_multiple(canvas) for canvas, _ in boxed]
        outputs = self._run(canvases)
        return [
            self._decode(outs, canvas.shape[:2], scale) for outs, canvas, (_, scale) in zip(outputs, canvases, boxed)
        ]

    def _decode(self, outs: list[np.ndarray], shape: tuple[int, ...], scale: float) -> Detections:
        outs = [outs[i] for i in self._order]
        levels = len(YUNET_STRIDES)
        scores_l, boxes_l, kps_l = [], [], []
        for i, stride in enumerate(YUNET_STRIDES):
            rows, cols = shape[0] // stride, shape[1] // stride
            s, b, k = decode_yunet_level(
                outs[i],
                outs[i + levels],
                outs[i + 2 * levels],
                outs[i + 3 * levels],
                stride,
                rows,
                cols,
                self.det_thresh,
            )
            scores_l.append(s)
            boxes_l.append(b)
            kps_l.append(k)
        scores = np.concatenate(scores_l)
        if len(scores) == 0:
            return Detections.empty()
        boxes = np.concatenate(boxes_l)
        kps = np.concatenate(kps_l)
        if len(scores) > 1:
            order = np.argsort(-scores, kind="stable")[: self.top_k]
            scores, boxes, kps = scores[order], boxes[order], kps[order]
            # OpenCV runs its NMS on integer rectangles (x, y, w, h truncated toward zero).
            x = np.trunc(boxes[:, 0])
            y = np.trunc(boxes[:, 1])
            w = np.trunc(boxes[:, 2] - boxes[:, 0])
            h = np.trunc(boxes[:, 3] - boxes[:, 1])
            int_boxes = np.stack([x, y, x + w, y + h], axis=1).astype(np.float64)
            keep = nms(int_boxes, scores, self.nms_thresh, plus_one=False)
            scores, boxes, kps = scores[keep], boxes[keep], kps[keep]
        return Detections(boxes / np.float32(scale), scores, kps / np.float32(scale))
