"""YuNet face detector (OpenCV Zoo ``face_detection_yunet_*.onnx``), decoded as OpenCV's ``FaceDetectorYN``.

The network takes a BGR ``float32`` image with raw 0..255 values, padded with zeros at the bottom
and right to a multiple of 32. Its twelve outputs ``cls_{8,16,32}``, ``obj_*``, ``bbox_*`` and
``kps_*`` are decoded by :func:`facelab.detection._decode.decode_yunet_level`; candidates with
``score >= det_thresh`` go through OpenCV's NMS (boxes truncated to integers, IoU without the
``+1`` convention, stable descending score order, at most ``top_k`` candidates, suppress
``IoU > nms_thresh``). Defaults are those of OpenCV Zoo's demo: ``det_thresh=0.9``,
``nms_thresh=0.3``, ``top_k=5000``. Keypoints come out in :class:`~facelab.structures.FaceKeypoint`
order (OpenCV's "right eye" is the subject's right eye, on the image's left).

Input sizes. At an image's own size YuNet misses faces wider than about 400 pixels; on a small
letterbox it misses small faces. The default, **auto**, therefore runs two passes, as
InsightFace's SCRFD "Auto" does: the image at its own size (downscaled first when its longer side
exceeds ``auto_max_side``, default 1280, to bound the cost) and a 320 x 320 letterbox; the
candidates of both passes, in image pixels, go through ONE NMS (the same OpenCV-style NMS).
``det_size="native"`` is exactly OpenCV's ``FaceDetectorYN`` (one pass at the image's own size,
never downscaled); a ``(width, height)`` is one letterbox pass, NMS on the canvas as OpenCV would
run it there; a list of sizes (``"native"`` allowed as an entry) is a custom multi-size run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab.detection._decode import YUNET_STRIDES, decode_yunet_level
from facelab.detection.base import Detector, normalize_sizes, register_detector
from facelab.errors import ConfigError, ModelError
from facelab.ops.boxes import letterbox
from facelab.ops.nms import nms
from facelab.ops.normalize import Normalization
from facelab.structures import Detections

if TYPE_CHECKING:
    from facelab.runtime.session import OrtSession
    from facelab.zoo.card import ModelCard

__all__ = [
    "YuNet",
    "YUNET_NORMALIZATION",
    "YUNET_OUTPUTS",
    "YUNET_AUTO_SIZES",
    "YUNET_AUTO_MAX_SIDE",
    "NATIVE",
    "pad_to_multiple",
]

_logger = logging.getLogger(__name__)

#: YuNet input: BGR, raw 0..255.
YUNET_NORMALIZATION = Normalization("BGR", (0.0,), (1.0,))
#: Output names in decoding order.
YUNET_OUTPUTS = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in YUNET_STRIDES)
#: ``det_size`` entry for "the image at its own size, padded to a multiple of 32" (OpenCV's behaviour).
NATIVE = "native"
#: The auto mode's passes: the image at its own size (capped, see :data:`YUNET_AUTO_MAX_SIDE`) and a
#: 320 x 320 letterbox that catches faces too large for the first pass.
YUNET_AUTO_SIZES: tuple[Any, ...] = (NATIVE, (320, 320))
#: In auto mode, images whose longer side exceeds this are downscaled to it for the native pass.
YUNET_AUTO_MAX_SIDE = 1280

#: One pass: ``None`` = the image's own size (capped at ``max_side`` when set), else a letterbox ``(width, height)``.
_Pass = tuple[tuple[int, int] | None, int | None]


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
        det_size: ``None`` or ``"auto"`` (default): two passes, the image at its own size (longer side
            capped at ``auto_max_side``) and a 320 x 320 letterbox, merged by one NMS; finds small
            and very large faces. ``"native"``: each image at its own size, exactly OpenCV's
            ``FaceDetectorYN``. A ``(width, height)``: one letterbox pass on that canvas (then
            batches of images share one canvas). A list of entries (sizes or ``"native"``):
            one pass each, merged by one NMS. A model with a fixed input size always uses it.
        det_thresh: score threshold (default 0.9).
        nms_thresh: NMS IoU threshold (default 0.3).
        top_k: most candidates entering NMS (default 5000).
        auto_max_side: in auto mode, images with a longer side above this are downscaled to it for
            the native pass (default 1280; ``None`` = never). Ignored by the other modes.
        normalization: default :data:`YUNET_NORMALIZATION`.
        max_batch: most images per network run in :meth:`detect_batch`. The OpenCV Zoo file fixes
            the batch axis to 1, so batches loop over the images.
        card: the model card, when built from one.

    Attributes:
        passes: the passes run per image, in order: ``(letterbox_size_or_None, max_side_or_None)``.

    Example:
        >>> det = YuNet.from_path("face_detection_yunet_2026may.onnx")  # doctest: +SKIP
        >>> len(det.detect("t1.jpg"))  # doctest: +SKIP
        6
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
        auto_max_side: int | None = YUNET_AUTO_MAX_SIDE,
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
        if auto_max_side is not None and int(auto_max_side) < 32:
            raise ConfigError(f"{self._label}: auto_max_side must be at least 32, not {auto_max_side!r}")
        self.auto_max_side = None if auto_max_side is None else int(auto_max_side)
        self.passes: list[_Pass] = self._parse_det_size(det_size)

    @classmethod
    def _card_keys(cls) -> tuple[str, ...]:
        return (*super()._card_keys(), "top_k", "auto_max_side")

    @property
    def det_size(self) -> tuple[int, int] | None:
        """The letterbox ``(width, height)`` of a single-letterbox detector, else ``None``."""
        return self.passes[0][0] if len(self.passes) == 1 else None

    def _parse_det_size(self, det_size: Any) -> list[_Pass]:
        """The passes for a ``det_size`` argument (see the class docstring); a fixed graph size wins."""
        fixed = self._fixed_input_size()
        if fixed is not None:
            return [(fixed, None)]
        auto = det_size is None or (isinstance(det_size, str) and det_size.lower() == "auto")
        entries = YUNET_AUTO_SIZES if auto else det_size
        if isinstance(entries, str):
            entries = [entries]
        if not (isinstance(entries, (list, tuple)) and any(isinstance(e, str) for e in entries)):
            return [(size, None) for size in normalize_sizes(det_size) or []]
        passes: list[_Pass] = []
        for entry in entries:
            if not isinstance(entry, str):
                new = [(size, None) for size in normalize_sizes(entry) or []]
            elif entry.lower() == NATIVE:
                new = [(None, self.auto_max_side if auto else None)]
            else:
                raise ConfigError(
                    f"{self._label}: det_size must be 'auto', 'native', (width, height) or a list of them, "
                    f"not {det_size!r}"
                )
            passes.extend(p for p in new if p not in passes)
        return passes

    def _detect_images(self, images: list[np.ndarray]) -> list[Detections]:
        per_image: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]] = [[] for _ in images]
        for size, max_side in self.passes:
            if size is None:
                # Each image at its own size (downscaled when above max_side): one run per image.
                for i, img in enumerate(images):
                    canvas, scale = img, 1.0
                    if max_side is not None and max(img.shape[:2]) > max_side:
                        ratio = max_side / max(img.shape[:2])
                        canvas, scale = letterbox(
                            img, (max(1, round(img.shape[1] * ratio)), max(1, round(img.shape[0] * ratio)))
                        )
                    canvas = pad_to_multiple(canvas)
                    per_image[i].append(self._candidates(self._run([canvas])[0], canvas.shape[:2], scale))
                continue
            boxed = [letterbox(img, size) for img in images]
            canvases = [pad_to_multiple(canvas) for canvas, _ in boxed]
            for i, (outs, canvas, (_, scale)) in enumerate(zip(self._run(canvases), canvases, boxed)):
                per_image[i].append(self._candidates(outs, canvas.shape[:2], scale))
        return [self._merge(cands) for cands in per_image]

    def _candidates(
        self, outs: list[np.ndarray], shape: tuple[int, ...], scale: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Thresholded, decoded candidates of one pass, in canvas pixels: ``(scores, boxes, kps, scale)``."""
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
        return np.concatenate(scores_l), np.concatenate(boxes_l), np.concatenate(kps_l), scale

    def _merge(self, cands: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]) -> Detections:
        """OpenCV's NMS over the candidates of every pass, in image pixels.

        With one pass the NMS runs in canvas pixels before the division by the scale, exactly as
        OpenCV would on that canvas; with several, the candidates are first mapped to image pixels.
        """
        if len(cands) == 1:
            scores, boxes, kps, scale = cands[0]
        else:
            scale = 1.0
            scores = np.concatenate([c[0] for c in cands])
            boxes = np.concatenate([c[1] / np.float32(c[3]) for c in cands])
            kps = np.concatenate([c[2] / np.float32(c[3]) for c in cands])
        if len(scores) == 0:
            return Detections.empty()
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
