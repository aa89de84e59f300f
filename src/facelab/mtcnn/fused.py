"""The open pack's detector: MTCNN and dlib's MMOD fused under one NMS, five keypoints for every face.

:class:`MTCNNWithMMOD` runs the two detectors on the same images and keeps:

1. every MTCNN face (box, O-Net score, O-Net's five points);
2. every MMOD face that no MTCNN face overlaps (IoU above :attr:`MTCNNWithMMOD.nms_thresh`, after
   mapping MMOD's box to an MTCNN-like box with :data:`MMOD_TO_MTCNN`) *and* that O-Net accepts:
   O-Net is run on the face's square crop turned by 0, 90, 180 and 270 degrees (the crop is
   square, so this is the crop of the turned image), the turn with the highest face probability
   gives the face's score and keypoints (mapped back to the photo), and the face is kept when that
   probability reaches :attr:`MTCNNWithMMOD.verify_thresh`.

MMOD finds faces MTCNN's cascade rejects (masks, faces turned by 90 degrees); O-Net's check
removes most of MMOD's false positives and gives those faces keypoints, upright or not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from facelab.detection.base import Detector, register_detector, unrotate_points
from facelab.errors import ConfigError, ModelError
from facelab.mtcnn import processing as P
from facelab.mtcnn.detector import MTCNN, MTCNN_FILES, _normalize
from facelab.ops.boxes import iou_matrix
from facelab.structures import Detections

if TYPE_CHECKING:
    from facelab.dlib.mmod import DlibMMOD
    from facelab.runtime.session import RuntimeOptions
    from facelab.zoo.card import ModelCard

__all__ = ["MTCNNWithMMOD", "MMOD_TO_MTCNN_PARAMS", "FUSED_FILES", "rotate_points_in_square"]

_logger = logging.getLogger(__name__)

#: MMOD rectangle → MTCNN-like box (``facelab.dlib.pack.BoxMapping`` parameters): medians of the
#: per-face ratios over the 94 faces both detectors find (IoU >= 0.3) on the dlib reference photos,
#: ``dlib_faces`` and 30 deepface portraits (two folds: dx 0.043 / 0.057, dy -0.012 / -0.006,
#: sw 0.924 / 0.870, sh 1.239 / 1.171).
MMOD_TO_MTCNN_PARAMS = {"dx": 0.048, "dy": -0.008, "sw": 0.893, "sh": 1.206}


def rotate_points_in_square(points: np.ndarray, k: int) -> np.ndarray:
    """Map normalised points ``(u, v)`` of a square turned by ``np.rot90(·, k)`` back to the unturned square.

    Args:
        points: ``(..., 2)`` coordinates in ``[0, 1]`` (fractions of the side) in the turned square.
        k: the number of counter-clockwise quarter turns that produced it (``np.rot90``'s ``k``).

    Returns:
        ``(..., 2)`` coordinates in the original square.

    Example:
        >>> rotate_points_in_square(np.array([[0.25, 0.0]]), 1).tolist()  # top edge of the turned square
        [[1.0, 0.25]]
    """
    return unrotate_points(points, int(k), 1.0, 1.0)


@register_detector("mtcnn_mmod")
class MTCNNWithMMOD(Detector):
    """MTCNN + dlib MMOD under one NMS, O-Net keypoints for every face (see the module docstring).

    Args:
        mtcnn: the MTCNN detector.
        mmod: dlib's MMOD detector, or ``None`` for MTCNN alone.
        nms_thresh: IoU above which an MMOD face is the same face as an MTCNN one.
        verify_thresh: O-Net face probability an MMOD-only face needs.
        max_batch: most images per detector call.
        card: the model card.
    """

    arch: ClassVar[str] = "mtcnn_mmod"
    default_nms_thresh: ClassVar[float] = 0.3

    def __init__(
        self,
        mtcnn: MTCNN,
        mmod: DlibMMOD | None,
        *,
        nms_thresh: float | None = None,
        verify_thresh: float = 0.5,
        max_batch: int = 16,
        card: ModelCard | None = None,
    ) -> None:
        super().__init__(
            mtcnn.session, det_thresh=mtcnn.det_thresh, nms_thresh=nms_thresh, max_batch=max_batch, card=card
        )
        if not 0.0 <= float(verify_thresh) <= 1.0:
            raise ConfigError(f"verify_thresh must lie in [0, 1], not {verify_thresh}")
        from facelab.dlib.pack import BoxMapping

        self.mtcnn = mtcnn
        self.mmod = mmod
        self.verify_thresh = float(verify_thresh)
        self.mapping = BoxMapping(**MMOD_TO_MTCNN_PARAMS, note="dlib MMOD -> MTCNN (facelab.mtcnn.fused)")
        self.normalization = mtcnn.normalization

    @classmethod
    def from_card(
        cls, card: ModelCard, path: str | Path, runtime: RuntimeOptions | None = None, **overrides: Any
    ) -> MTCNNWithMMOD:
        """Build from a card whose ``files`` are P-Net, R-Net, O-Net and the converted MMOD network.

        Options (``det_options``): ``mmod`` (an MMOD mode: ``"fast"``, ``"faster"``, ``"dlib"``, an
        :class:`~facelab.dlib.mmod.MMODMode` or a dict; ``False`` turns MMOD off), ``mode`` (the
        same, the open pack's former option), ``nms_thresh``, ``verify_thresh``; every other
        option goes to :class:`~facelab.mtcnn.detector.MTCNN` (``min_face``, ``det_thresh``, ...).
        The card's ``extra["mtcnn"]`` / ``extra["mmod_mode"]`` hold the pack's defaults.
        """
        from facelab.dlib.mmod import DlibMMOD, MMODGeometry

        if card.task != "detection":
            raise ModelError(f"model card {card.name!r} is a {card.task!r} model, not a detector")
        names = [f.filename for f in card.files]
        if len(names) < 4:
            raise ModelError(f"{card.name}: an MTCNN+MMOD card lists P-Net, R-Net, O-Net and MMOD files, got {names}")
        folder = Path(path).parent
        overrides = dict(overrides)
        mode = overrides.pop("mmod", overrides.pop("mode", card.extra.get("mmod_mode", "fast")))
        fused = {k: overrides.pop(k) for k in ("nms_thresh", "verify_thresh", "max_batch") if k in overrides}
        fused.setdefault("verify_thresh", card.extra.get("verify_thresh", 0.5))
        mtcnn_options = {**card.extra.get("mtcnn", {}), **overrides}
        mtcnn = MTCNN.from_path(
            folder / names[0], runtime, rnet_path=folder / names[1], onet_path=folder / names[2], **mtcnn_options
        )
        mmod = None
        if mode is not False and mode is not None and mode != "off":
            geometry = MMODGeometry.from_card_extra(card.extra)
            mmod = DlibMMOD.from_path(
                folder / names[3], runtime, mode=mode, **({"geometry": geometry} if geometry else {})
            )
        return cls(mtcnn, mmod, card=card, **fused)

    @property
    def with_kps(self) -> bool:
        """Every face has five keypoints."""
        return True

    def _detect_images(self, images: list[np.ndarray]) -> list[Detections]:
        found = self.mtcnn._detect_images(images)
        if self.mmod is None:
            return found
        others = self.mmod._detect_images(images)
        return [self._fuse(img, a, b) for img, a, b in zip(images, found, others)]

    def _fuse(self, image: np.ndarray, mtcnn: Detections, mmod: Detections) -> Detections:
        if len(mmod) == 0:
            return mtcnn
        boxes = self.mapping.apply(mmod.boxes)
        if len(mtcnn):
            boxes = boxes[iou_matrix(boxes, mtcnn.boxes).max(axis=1) <= self.nms_thresh]
        if len(boxes) == 0:
            return mtcnn
        scores, kps = self.verify(image, boxes)
        keep = scores >= self.verify_thresh
        if not keep.any():
            return mtcnn
        out_boxes = np.concatenate([mtcnn.boxes, boxes[keep]])
        out_scores = np.concatenate([mtcnn.scores, scores[keep]])
        out_kps = np.concatenate([mtcnn.kps if mtcnn.kps is not None else np.zeros((0, 5, 2)), kps[keep]])
        order = np.argsort(-out_scores, kind="stable")
        return Detections(out_boxes[order], out_scores[order], out_kps[order])

    def verify(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """O-Net's best face probability over four quarter turns of each box's square crop.

        Args:
            image: ``(H, W, 3)`` ``uint8`` BGR.
            boxes: ``(N, 4)`` ``[x1, y1, x2, y2]``.

        Returns:
            ``(scores, kps)``: ``(N,)`` ``float32`` best probabilities and ``(N, 5, 2)`` ``float32``
            keypoints of the best turn, in photo pixels.
        """
        squared = P.square_boxes(np.asarray(boxes, np.float64))
        crops = P.crop_and_resize(_normalize(image), squared, 48)  # (N, 48, 48, 3)
        turned = np.concatenate([np.rot90(crops, k, axes=(1, 2)) for k in range(4)])
        onet = self.mtcnn.onet
        names = [o.name for o in onet.outputs]
        values = dict(
            zip(names, onet.run({onet.inputs[0].name: np.ascontiguousarray(turned.transpose(0, 3, 1, 2))}, names))
        )
        n = len(squared)
        prob = values["prob"][:, 1].reshape(4, n)
        best = prob.argmax(axis=0)
        points = values["points"].reshape(4, n, 10)[best, np.arange(n)]
        uv = np.stack([points[:, :5], points[:, 5:]], axis=2)  # normalised, in the turned crop
        for k in range(1, 4):
            rows = best == k
            uv[rows] = rotate_points_in_square(uv[rows], k)
        flat = np.concatenate([uv[:, :, 0], uv[:, :, 1]], axis=1)
        kps = P.onet_landmarks(squared, flat)
        return prob[best, np.arange(n)].astype(np.float32), kps.astype(np.float32)

    def __repr__(self) -> str:
        return f"MTCNNWithMMOD({self.mtcnn!r}, {self.mmod!r}, verify_thresh={self.verify_thresh})"


#: File names of the fused detector's networks (MTCNN's three, then MMOD's).
FUSED_FILES = (*MTCNN_FILES, "mmod_human_face_detector.onnx")
