"""RetinaFace face detector, in the two ONNX layouts found in the wild.

* ``"priorbox"`` — the common PyTorch layout of biubug6/Pytorch_Retinaface (MobileNet-0.25,
  ResNet-50, and the RFB/slim models of Face-Detector-1MB-with-landmark): three outputs
  ``loc (1, P, 4)``, ``conf (1, P, 2)`` and ``landms (1, P, 10)`` over SSD prior boxes
  (:func:`facelab.detection._decode.prior_boxes`); input BGR minus ``(104, 117, 123)``; the face
  score is ``conf[:, 1]`` (a softmax is applied when the export left raw logits).
* ``"mxnet"`` — InsightFace's original MXNet RetinaFace converted to ONNX (``detection/retinaface``,
  ``network='net3'``): per stride 32, 16, 8 a class-probability map ``(1, 2A, H, W)`` (the last
  ``A`` channels are the face scores), a box-delta map ``(1, 4A, H, W)`` and, when present, a
  landmark-delta map ``(1, 10A, H, W)``, over R-CNN anchors; input RGB, unnormalised; boxes
  are clipped to the input before thresholding.

Both: the image is letterboxed onto a ``det_size`` canvas (default 640 x 640, as SCRFD), or run
at its own size with ``det_size=None``; candidates with ``score >= det_thresh`` (default 0.5) go
through one greedy NMS (``+1`` pixel IoU, default threshold 0.4).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab.detection._decode import (
    MXNET_RETINAFACE_ANCHORS,
    anchors_plane,
    bbox_pred,
    decode_prior_boxes,
    decode_prior_landmarks,
    generate_anchors,
    landmark_pred,
    prior_boxes,
)
from facelab.detection.base import Detector, register_detector
from facelab.errors import ConfigError, ModelError
from facelab.ops.boxes import letterbox
from facelab.ops.nms import nms
from facelab.ops.normalize import Normalization
from facelab.structures import Detections

if TYPE_CHECKING:
    from facelab.runtime.session import OrtSession
    from facelab.zoo.card import ModelCard

__all__ = ["RetinaFace", "RETINAFACE_PYTORCH_NORMALIZATION", "RETINAFACE_MXNET_NORMALIZATION", "retinaface_layout"]

_logger = logging.getLogger(__name__)

#: biubug6 RetinaFace input: BGR, minus (104, 117, 123), no scaling.
RETINAFACE_PYTORCH_NORMALIZATION = Normalization("BGR", (104.0, 117.0, 123.0), (1.0,))
#: InsightFace MXNet RetinaFace (net3) input: RGB, raw 0..255.
RETINAFACE_MXNET_NORMALIZATION = Normalization("RGB", (0.0,), (1.0,))

_PRIORBOX_NAMES = ("loc", "conf", "landms")
_DEFAULT_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_DEFAULT_STEPS = (8, 16, 32)
_DEFAULT_VARIANCES = (0.1, 0.2)


def _prior_metadata(session: OrtSession) -> dict[str, Any]:
    """``min_sizes`` / ``steps`` / ``variances`` stored as JSON in the model's ``metadata_props``."""
    try:
        props = dict(session.session.get_modelmeta().custom_metadata_map)
    except (AttributeError, RuntimeError):  # a session object without model metadata
        return {}
    found: dict[str, Any] = {}
    for key in ("min_sizes", "steps", "variances"):
        if key in props:
            try:
                found[key] = json.loads(props[key])
            except ValueError as exc:
                raise ModelError(f"{session.path or '<bytes>'}: metadata {key}={props[key]!r} is not JSON") from exc
    if found:
        _logger.debug("%s: prior configuration from metadata %s", session.path or "<bytes>", found)
    return found


def retinaface_layout(outputs: Any) -> str | None:
    """Recognise a RetinaFace output signature.

    Args:
        outputs: the session's output :class:`~facelab.runtime.session.TensorInfo` list.

    Returns:
        ``"priorbox"`` (outputs named ``loc``/``conf``/``landms``, or three outputs whose last
        axes are 4, 2 and 10), ``"mxnet"`` (6 or 9 four-dimensional outputs), or ``None``.
    """
    names = [o.name for o in outputs]
    if all(n in names for n in _PRIORBOX_NAMES):
        return "priorbox"
    if len(outputs) == 3 and [o.shape[-1] if o.shape else None for o in outputs] == [4, 2, 10]:
        return "priorbox"
    if len(outputs) in (6, 9) and all(len(o.shape) == 4 for o in outputs):
        return "mxnet"
    return None


@register_detector("retinaface")
class RetinaFace(Detector):
    """RetinaFace on ONNX Runtime (layouts: see the module docstring).

    Args:
        session: an ONNX Runtime session of a RetinaFace model.
        det_size: ``(width, height)`` canvas the image is letterboxed onto (default and ``"auto"``: ``(640, 640)``);
            ``None`` runs each image at its own size (batches then loop). A model with a fixed
            input size always uses its own size.
        det_thresh: score threshold (default 0.5).
        nms_thresh: NMS IoU threshold (default 0.4).
        normalization: default by layout (:data:`RETINAFACE_PYTORCH_NORMALIZATION` or
            :data:`RETINAFACE_MXNET_NORMALIZATION`).
        layout: ``"priorbox"`` or ``"mxnet"``; recognised from the outputs when ``None``.
        min_sizes / steps / variances: prior-box configuration of the ``"priorbox"`` layout;
            each one left ``None`` is read from the ONNX ``metadata_props`` of that name (a JSON
            list, as :func:`facelab.train.detectors.retinaface_mnet.export_retinaface` writes it),
            else defaults to Pytorch_Retinaface's ``cfg_mnet`` (``[[16, 32], [64, 128], [256, 512]]``,
            ``[8, 16, 32]``, ``[0.1, 0.2]``). Face-Detector-1MB-with-landmark's MobileNet0.25 uses
            ``[[10, 20], [32, 64], [128, 256]]`` — the same prior count, so a wrong configuration
            is not detected and gives wrongly sized boxes.
        max_batch: most images per network run in :meth:`detect_batch`.
        card: the model card, when built from one.
    """

    arch = "retinaface"

    def __init__(
        self,
        session: OrtSession,
        *,
        det_size: Any = (640, 640),
        det_thresh: float | None = None,
        nms_thresh: float | None = None,
        normalization: Normalization | None = None,
        layout: str | None = None,
        min_sizes: Any = None,
        steps: Any = None,
        variances: Any = None,
        max_batch: int = 16,
        card: ModelCard | None = None,
    ) -> None:
        layout = layout or retinaface_layout(session.outputs)
        if layout not in ("priorbox", "mxnet"):
            raise ModelError(
                f"{session.path or '<bytes>'}: not a RetinaFace model: outputs "
                f"{[(o.name, o.shape) for o in session.outputs]}; expected loc/conf/landms or 6/9 NCHW maps"
            )
        self.layout = layout
        _logger.debug("%s: RetinaFace layout %r", session.path or "<bytes>", layout)
        if normalization is None:
            normalization = RETINAFACE_PYTORCH_NORMALIZATION if layout == "priorbox" else RETINAFACE_MXNET_NORMALIZATION
        super().__init__(
            session,
            det_thresh=det_thresh,
            nms_thresh=nms_thresh,
            normalization=normalization,
            max_batch=max_batch,
            card=card,
        )
        stored = _prior_metadata(session) if layout == "priorbox" else {}
        min_sizes = min_sizes if min_sizes is not None else stored.get("min_sizes", _DEFAULT_MIN_SIZES)
        steps = steps if steps is not None else stored.get("steps", _DEFAULT_STEPS)
        variances = variances if variances is not None else stored.get("variances", _DEFAULT_VARIANCES)
        self.min_sizes = tuple(tuple(int(v) for v in level) for level in min_sizes)
        self.steps = tuple(int(s) for s in steps)
        self.variances = (float(variances[0]), float(variances[1]))
        if len(self.min_sizes) != len(self.steps):
            raise ConfigError("RetinaFace: min_sizes and steps need one entry per level")
        if isinstance(det_size, str) and det_size.strip().lower() == "auto":
            det_size = (640, 640)  # "auto": this detector's own default canvas
        self.det_size: tuple[int, int] | None = self._single_det_size(det_size)
        if layout == "priorbox":
            names = [o.name for o in session.outputs]
            if all(n in names for n in _PRIORBOX_NAMES):
                self._order = [names.index(n) for n in _PRIORBOX_NAMES]
            else:
                self._order = [0, 1, 2]
            self._with_kps = True
        else:
            self._with_kps = len(session.outputs) == 9
            self._anchors = {s: generate_anchors(*MXNET_RETINAFACE_ANCHORS[s]) for s in (32, 16, 8)}

    @classmethod
    def _card_keys(cls) -> tuple[str, ...]:
        return (*super()._card_keys(), "layout", "min_sizes", "steps", "variances")

    @property
    def with_kps(self) -> bool:
        """Whether the model predicts five landmarks."""
        return self._with_kps

    def _detect_images(self, images: list[np.ndarray]) -> list[Detections]:
        if self.det_size is None:
            return [self._detect_one(img, img, 1.0, self._run([img])[0]) for img in images]
        boxed = [letterbox(img, self.det_size) for img in images]
        outputs = self._run([canvas for canvas, _ in boxed])
        return [
            self._detect_one(img, canvas, scale, outs) for img, (canvas, scale), outs in zip(images, boxed, outputs)
        ]

    def _detect_one(self, image: np.ndarray, canvas: np.ndarray, scale: float, outs: list[np.ndarray]) -> Detections:
        height, width = canvas.shape[:2]
        if self.layout == "priorbox":
            scores, boxes, kps = self._decode_priorbox(outs, height, width)
        else:
            scores, boxes, kps = self._decode_mxnet(outs, height, width)
        if len(scores) == 0:
            return Detections.empty(with_kps=self.with_kps)
        boxes = (boxes / scale).astype(np.float32)
        kps = None if kps is None else (kps / scale).astype(np.float32)
        keep = nms(boxes, scores, self.nms_thresh)
        return Detections(boxes[keep], scores[keep], None if kps is None else kps[keep])

    def _decode_priorbox(
        self, outs: list[np.ndarray], height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        loc, conf, landms = (outs[i].reshape(-1, cols) for i, cols in zip(self._order, (4, 2, 10)))
        priors = prior_boxes((height, width), self.min_sizes, self.steps)
        if len(priors) != len(loc):
            raise ModelError(
                f"{self._label}: {len(loc)} box rows but {len(priors)} priors for a {width}x{height} input; "
                "check min_sizes/steps"
            )
        conf = conf.astype(np.float32)
        if not np.allclose(conf.sum(axis=1), 1.0, atol=1e-3):  # raw logits: softmax over (background, face)
            shifted = np.exp(conf - conf.max(axis=1, keepdims=True))
            conf = shifted / shifted.sum(axis=1, keepdims=True)
        scores = conf[:, 1]
        keep = np.nonzero(scores >= self.det_thresh)[0]
        scale = np.array([width, height, width, height], np.float32)
        boxes = decode_prior_boxes(loc[keep], priors[keep], self.variances) * scale
        kps = decode_prior_landmarks(landms[keep], priors[keep], self.variances).reshape(-1, 5, 2)
        kps = kps * np.array([width, height], np.float32)
        order = np.argsort(-scores[keep], kind="stable")
        return scores[keep][order], boxes[order], kps[order]

    def _decode_mxnet(
        self, outs: list[np.ndarray], height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        per_stride = 3 if self._with_kps else 2
        scores_list, boxes_list, kps_list = [], [], []
        for level, stride in enumerate((32, 16, 8)):
            cls_map, box_map = outs[level * per_stride], outs[level * per_stride + 1]
            anchors_per_cell = len(self._anchors[stride])
            rows, cols = box_map.shape[-2:]
            anchors = anchors_plane(rows, cols, stride, self._anchors[stride])
            scores = cls_map[anchors_per_cell:].transpose(1, 2, 0).reshape(-1)
            deltas = box_map.transpose(1, 2, 0).reshape(-1, 4)
            boxes = bbox_pred(anchors, deltas)
            boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width - 1)
            boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height - 1)
            keep = np.nonzero(scores >= self.det_thresh)[0]
            scores_list.append(scores[keep])
            boxes_list.append(boxes[keep])
            if self._with_kps:
                lm = outs[level * per_stride + 2].transpose(1, 2, 0).reshape(-1, 5, 2)[keep]
                kps_list.append(landmark_pred(anchors[keep], lm))
        scores = np.concatenate(scores_list).astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        boxes = np.concatenate(boxes_list)[order]
        kps = np.concatenate(kps_list)[order] if self._with_kps else None
        return scores[order], boxes, kps
