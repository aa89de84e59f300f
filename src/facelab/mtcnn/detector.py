"""The MTCNN face detector (P-Net → R-Net → O-Net) on ONNX Runtime, batched.

Processing follows ipazc/mtcnn 1.0.0 (see :mod:`facelab.mtcnn.processing` for every rule);
networks are the converted weights of that package (:mod:`facelab.mtcnn.convert`). With the
defaults the results equal the package's own (``tests/test_mtcnn_parity.py`` compares them with
``reference/mtcnn_reference.json``).

Batching (:meth:`MTCNN.detect_batch`): for each pyramid level, P-Net runs once on all images of
the batch whose level has the same size (a stack; images of different sizes get their own run
per level, because padding them onto one canvas would change P-Net's results at their borders);
R-Net and O-Net then run once (in chunks of :attr:`MTCNN.crop_batch`) on the candidates of all
images together.

Scores are O-Net's face probabilities in ``[0, 1]``; keypoints are O-Net's five points in
:class:`~facelab.structures.FaceKeypoint` order.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from facelab.detection.base import Detector, register_detector
from facelab.errors import ConfigError, ModelError
from facelab.mtcnn import processing as P
from facelab.ops.normalize import Normalization
from facelab.structures import Detections

if TYPE_CHECKING:
    from facelab.runtime.session import OrtSession, RuntimeOptions
    from facelab.zoo.card import ModelCard

__all__ = ["MTCNN", "MTCNNOptions", "OPEN_PACK_OPTIONS", "MTCNN_NORMALIZATION", "MTCNN_FILES"]

_logger = logging.getLogger(__name__)

#: RGB, ``(pixel - 127.5) / 128``.
MTCNN_NORMALIZATION = Normalization("RGB", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0))
#: Default file names of the three converted networks (P-Net first).
MTCNN_FILES = ("mtcnn_pnet.onnx", "mtcnn_rnet.onnx", "mtcnn_onet.onnx")


@dataclass(frozen=True)
class MTCNNOptions:
    """MTCNN's settings.

    The defaults of the first five are the package's; the last three are facelab additions, off
    by default (the open pack turns them on, see :data:`OPEN_PACK_OPTIONS`).

    Attributes:
        min_face: smallest face side searched, pixels (first scale ``12 / min_face``).
        scale_factor: ratio between pyramid levels.
        thresholds: face-probability thresholds of P-Net, R-Net and O-Net.
        nms: NMS thresholds: P-Net per level, P-Net across levels, R-Net, O-Net (``"min"`` overlap).
        max_side: when set, images whose longer side exceeds it are searched on a copy resized to
            it (``min_face`` scales with it); ``None`` searches the image itself.
        min_box: drop final boxes whose side ``sqrt(w * h)`` is below ``min_box * min_face``
            (O-Net sometimes shrinks a window onto a texture far smaller than any face searched);
            ``0`` keeps all (the package).
        closeup: a second pass for faces cut by the image border (close-up selfies): the image
            padded by ``closeup`` times its longer side on every side with mid-grey, searched for
            faces of at least ``closeup_min_face`` times its shorter side (a few cheap pyramid
            levels); its faces whose box crosses the image border are merged with the first pass
            by one NMS (faces inside the image are the first pass's); ``0`` disables it.
        closeup_min_face: see ``closeup``.
    """

    min_face: float = 20.0
    scale_factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)
    nms: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)
    max_side: int | None = None
    min_box: float = 0.0
    closeup: float = 0.0
    closeup_min_face: float = 0.2

    def __post_init__(self) -> None:
        if not self.min_face > 0:
            raise ConfigError(f"min_face must be positive, not {self.min_face}")
        if not 0 < self.scale_factor < 1:
            raise ConfigError(f"scale_factor must lie in (0, 1), not {self.scale_factor}")
        if len(self.thresholds) != 3 or len(self.nms) != 4:
            raise ConfigError(f"thresholds needs 3 values and nms 4, got {self.thresholds} and {self.nms}")
        if self.max_side is not None and int(self.max_side) < 24:
            raise ConfigError(f"max_side must be at least 24, not {self.max_side}")
        if self.min_box < 0 or not 0 <= self.closeup <= 1 or not 0 < self.closeup_min_face <= 1:
            raise ConfigError(
                f"min_box must be >= 0, closeup in [0, 1] and closeup_min_face in (0, 1], got "
                f"{self.min_box}, {self.closeup}, {self.closeup_min_face}"
            )


#: Side (pixels) of the smallest face the close-up pass looks for, on its downscaled copy of the photo.
CLOSEUP_FACE_PX = 120

#: The open pack's MTCNN settings: the package's cascade, plus the close-up pass and the tiny-box
#: filter (chosen on the shared photos, see ``benchmarks/bench_detect_open.py``).
OPEN_PACK_OPTIONS = MTCNNOptions(min_box=0.8, closeup=0.1, closeup_min_face=0.2)


@register_detector("mtcnn")
class MTCNN(Detector):
    """MTCNN on three ONNX Runtime sessions.

    Args:
        session: P-Net.
        rnet / onet: R-Net and O-Net sessions.
        options: an :class:`MTCNNOptions` (or a dict of its fields); its fields may also be given as
            keyword arguments (``min_face=40``), which win.
        det_thresh: O-Net's threshold (overrides ``thresholds[2]``; default 0.8, the package's).
        nms_thresh: O-Net's NMS threshold (overrides ``nms[3]``).
        det_size: ``None`` or ``"auto"`` (MTCNN sizes its pyramid from the image); other values are
            rejected.
        crop_batch: most crops per R-Net/O-Net run.
        **kwargs: :class:`~facelab.detection.base.Detector` options (``max_batch``, ``card``).

    Example:
        >>> from facelab.mtcnn import create_mtcnn  # doctest: +SKIP
        >>> create_mtcnn().detect("t1.jpg").kps.shape  # doctest: +SKIP
        (7, 5, 2)
    """

    arch: ClassVar[str] = "mtcnn"
    default_normalization: ClassVar[Normalization] = MTCNN_NORMALIZATION
    default_det_thresh: ClassVar[float] = 0.8
    default_nms_thresh: ClassVar[float] = 0.7

    def __init__(
        self,
        session: OrtSession,
        *,
        rnet: OrtSession,
        onet: OrtSession,
        options: MTCNNOptions | dict[str, Any] | None = None,
        det_thresh: float | None = None,
        nms_thresh: float | None = None,
        det_size: Any = None,
        crop_batch: int = 1024,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("normalization", None)  # MTCNN's input normalisation is fixed
        fields = {f for f in MTCNNOptions.__dataclass_fields__}
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        if isinstance(options, dict):
            given = {**options, **given}
            options = None
        opts = replace(
            options or MTCNNOptions(), **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
        )
        super().__init__(
            session,
            det_thresh=opts.thresholds[2] if det_thresh is None else det_thresh,
            nms_thresh=opts.nms[3] if nms_thresh is None else nms_thresh,
            normalization=MTCNN_NORMALIZATION,
            **kwargs,
        )
        if det_size is not None and not (isinstance(det_size, str) and det_size.lower() == "auto"):
            raise ConfigError(
                f"MTCNN sizes its image pyramid itself: det_size must be None or 'auto', not {det_size!r} "
                "(use det_options={'min_face': ..., 'max_side': ...})"
            )
        if int(crop_batch) < 1:
            raise ConfigError(f"crop_batch must be at least 1, not {crop_batch}")
        self.options = opts
        self.rnet = rnet
        self.onet = onet
        self.crop_batch = int(crop_batch)
        for name, sess, size in (("R-Net", rnet, 24), ("O-Net", onet, 48)):
            shape = sess.inputs[0].shape if len(sess.inputs) == 1 else None
            if shape is None or len(shape) != 4 or tuple(shape[1:]) != (3, size, size):
                raise ModelError(
                    f"{sess.path or '<bytes>'}: not MTCNN's {name} (input {shape}, expected (N, 3, {size}, {size}))"
                )

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def _card_keys(cls) -> tuple[str, ...]:
        return (*super()._card_keys(), "options", *MTCNNOptions.__dataclass_fields__)

    @classmethod
    def from_path(cls, path: str | Path, runtime: RuntimeOptions | None = None, **kwargs: Any) -> MTCNN:
        """Load P-Net from ``path`` and R-Net / O-Net from beside it.

        Args:
            path: the P-Net ``.onnx``.
            runtime: providers and threads.
            **kwargs: constructor options; ``rnet_path`` / ``onet_path`` name the other two files
                (default :data:`MTCNN_FILES` in the same folder).
        """
        from facelab.runtime.session import create_session

        p = Path(path)
        rnet_path = Path(kwargs.pop("rnet_path", None) or p.with_name(MTCNN_FILES[1]))
        onet_path = Path(kwargs.pop("onet_path", None) or p.with_name(MTCNN_FILES[2]))
        for other in (rnet_path, onet_path):
            if not other.is_file():
                raise ModelError(f"MTCNN: {other.name} not found beside {p} (the three networks travel together)")
        return cls(
            create_session(p, runtime),
            rnet=create_session(rnet_path, runtime),
            onet=create_session(onet_path, runtime),
            **kwargs,
        )

    @classmethod
    def from_card(
        cls, card: ModelCard, path: str | Path, runtime: RuntimeOptions | None = None, **overrides: Any
    ) -> MTCNN:
        """Build from a card whose ``files`` are P-Net, R-Net, O-Net (in that order), ``path`` = P-Net."""
        if card.task != "detection":
            raise ModelError(f"model card {card.name!r} is a {card.task!r} model, not a detector")
        kwargs: dict[str, Any] = {"card": card}
        names = [f.filename for f in card.files]
        if len(names) >= 3:
            kwargs["rnet_path"] = Path(path).with_name(names[1])
            kwargs["onet_path"] = Path(path).with_name(names[2])
        for key in cls._card_keys():
            if key in card.extra:
                kwargs[key] = card.extra[key]
        kwargs.update(overrides)
        return cls.from_path(path, runtime, **kwargs)

    # ------------------------------------------------------------------------------- detection

    def _detect_images(self, images: list[np.ndarray]) -> list[Detections]:
        import cv2

        opts = self.options
        # Jobs: (image index, normalised RGB image, min_face, offset, scale back to the photo).
        jobs: list[tuple[int, np.ndarray, float, float, float]] = []
        for index, img in enumerate(images):
            h, w = img.shape[:2]
            shrink = 1.0
            if opts.max_side is not None and max(h, w) > opts.max_side:
                shrink = opts.max_side / float(max(h, w))
                size = (max(1, round(w * shrink)), max(1, round(h * shrink)))
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            normed = _normalize(img)
            jobs.append((index, normed, opts.min_face * shrink, 0.0, shrink))
            if opts.closeup > 0:
                # Faces of at least closeup_min_face * min side: a copy whose smallest such face is
                # CLOSEUP_FACE_PX wide is enough (photos with a shorter side above 600 px are downscaled).
                cshrink = min(shrink, CLOSEUP_FACE_PX / (opts.closeup_min_face * min(h, w)))
                small = img
                if cshrink < shrink:
                    size = (max(1, round(w * cshrink)), max(1, round(h * cshrink)))
                    small = cv2.resize(images[index], size, interpolation=cv2.INTER_AREA)
                pad = int(round(opts.closeup * max(small.shape[:2])))
                padded = cv2.copyMakeBorder(
                    _normalize(small), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0.0,) * 3
                )
                min_face = max(opts.min_face * cshrink, opts.closeup_min_face * min(small.shape[:2]))
                jobs.append((index, padded, min_face, float(pad), cshrink))
        normed_list = [j[1] for j in jobs]
        boxes = self._stage_pnet(normed_list, [j[2] for j in jobs])
        boxes = self._stage_rnet(normed_list, boxes)
        results = self._stage_onet(normed_list, boxes)
        per_image: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in images]
        for (index, _, _, offset, shrink), (b, sc, k) in zip(jobs, results):
            b, k = (b - offset) / shrink, (k - offset) / shrink
            if offset > 0:
                # The close-up pass is for faces cut by the border: the first pass owns the others.
                h, w = images[index].shape[:2]
                cut = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h)
                b, sc, k = b[cut], sc[cut], k[cut]
            per_image[index].append((b, sc, k))
        return [self._finish(parts) for parts in per_image]

    def _finish(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Detections:
        """Merge the passes of one image (one NMS) and apply the tiny-box filter."""
        boxes = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        kps = np.concatenate([p[2] for p in parts])
        if len(parts) > 1 and len(boxes):
            order = np.argsort(scores)[::-1]
            boxes, scores, kps = boxes[order], scores[order], kps[order]
            keep = P.mtcnn_nms(boxes, self.nms_thresh, method="min")
            boxes, scores, kps = boxes[keep], scores[keep], kps[keep]
        if self.options.min_box > 0 and len(boxes):
            side = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0))
            keep = side >= self.options.min_box * self.options.min_face
            boxes, scores, kps = boxes[keep], scores[keep], kps[keep]
        return Detections(boxes.astype(np.float32), scores.astype(np.float32), kps.reshape(-1, 5, 2).astype(np.float32))

    def _stage_pnet(self, normed: list[np.ndarray], min_faces: list[float]) -> list[np.ndarray]:
        """Squared P-Net proposals per image (``(N, 5)``: box + score)."""
        opts = self.options
        t_pnet, t_level, t_all = opts.thresholds[0], opts.nms[0], opts.nms[1]
        per_level: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in normed]
        # Group (image, level) jobs by the level's size: one P-Net run per size and level.
        jobs: dict[tuple[int, int, int], list[tuple[int, float]]] = defaultdict(list)
        for i, img in enumerate(normed):
            h, w = img.shape[:2]
            for k, scale in enumerate(P.pyramid_scales(h, w, min_faces[i], opts.scale_factor)):
                lh, lw = P.level_size(h, w, float(scale))
                if min(lh, lw) >= P.MIN_SIZE:
                    jobs[(k, lh, lw)].append((i, float(scale)))
        for (_, lh, lw), members in sorted(jobs.items()):
            blob = np.empty((len(members), 3, lh, lw), np.float32)
            for j, (i, _) in enumerate(members):
                blob[j] = P.area_resize(normed[i], (lh, lw)).transpose(2, 0, 1)
            reg, prob = self.session.run({self.input_name: blob}, ["reg", "prob"])
            for (i, scale), r, p in zip(members, reg, prob):
                b, s = P.pnet_candidates(p[1], r, scale, t_pnet)
                keep = P.mtcnn_nms(b, t_level)
                per_level[i].append((b[keep], s[keep]))
        out = []
        for levels in per_level:
            if not levels:
                out.append(np.zeros((0, 5)))
                continue
            b = np.concatenate([lv[0] for lv in levels])
            s = np.concatenate([lv[1] for lv in levels])
            order = np.argsort(s)[::-1]
            b, s = b[order], s[order]
            keep = P.mtcnn_nms(b, t_all)
            out.append(np.concatenate([P.square_boxes(b[keep]), s[keep, None]], axis=1))
        return out

    def _run_crops(self, session: OrtSession, normed: list[np.ndarray], boxes: list[np.ndarray], size: int) -> list:
        """Run R-Net or O-Net on the crops of every image's boxes, all images together."""
        counts = [len(b) for b in boxes]
        total = sum(counts)
        names = [o.name for o in session.outputs]
        if total == 0:
            return [[np.zeros((0,) + tuple(o.shape[1:]), np.float32) for o in session.outputs] for _ in boxes]
        crops = np.concatenate(
            [P.crop_and_resize(img, b[:, :4], size) for img, b in zip(normed, boxes) if len(b)]
        ).transpose(0, 3, 1, 2)
        outs: list[list[np.ndarray]] = [[] for _ in names]
        for start in range(0, total, self.crop_batch):
            chunk = np.ascontiguousarray(crops[start : start + self.crop_batch])
            for j, value in enumerate(session.run({session.inputs[0].name: chunk}, names)):
                outs[j].append(np.asarray(value))
        merged = {name: np.concatenate(parts) for name, parts in zip(names, outs)}
        bounds = np.cumsum([0] + counts)
        return [{n: v[bounds[i] : bounds[i + 1]] for n, v in merged.items()} for i in range(len(boxes))]

    def _stage_rnet(self, normed: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        threshold, nms_t = self.options.thresholds[1], self.options.nms[2]
        out = []
        for b, res in zip(boxes, self._run_crops(self.rnet, normed, boxes, 24)):
            if len(b) == 0:
                out.append(np.zeros((0, 5)))
                continue
            scores = res["prob"][:, 1].astype(np.float64)
            refined = P.calibrate(b[:, :4], res["reg"])
            keep = np.nonzero(scores > threshold)[0]
            refined, scores = refined[keep], scores[keep]
            order = np.argsort(scores)[::-1]
            refined, scores = refined[order], scores[order]
            keep = P.mtcnn_nms(refined, nms_t)
            out.append(np.concatenate([P.square_boxes(refined[keep]), scores[keep, None]], axis=1))
        return out

    def _stage_onet(
        self, normed: list[np.ndarray], boxes: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for b, res in zip(boxes, self._run_crops(self.onet, normed, boxes, 48)):
            if len(b) == 0:
                out.append((np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2))))
                continue
            points = P.onet_landmarks(b[:, :4], res["points"])
            scores = res["prob"][:, 1].astype(np.float64)
            refined = P.calibrate(b[:, :4], res["reg"])
            keep = np.nonzero(scores > self.det_thresh)[0]
            refined, scores, points = refined[keep], scores[keep], points[keep]
            order = np.argsort(scores)[::-1]
            refined, scores, points = refined[order], scores[order], points[order]
            keep = P.mtcnn_nms(refined, self.nms_thresh, method="min")
            out.append((refined[keep], scores[keep], points[keep]))
        return out

    def refine(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run O-Net alone on given boxes (squared first): keypoints and a face probability for each.

        Used to give keypoints to faces another detector found.

        Args:
            image: ``(H, W, 3)`` ``uint8`` BGR.
            boxes: ``(N, 4)`` ``[x1, y1, x2, y2]``.

        Returns:
            ``(boxes, scores, kps)``: O-Net's refined boxes ``(N, 4)``, face probabilities ``(N,)``
            and keypoints ``(N, 5, 2)`` (``float32``), in input order, none dropped.
        """
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(b) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        normed = _normalize(image)
        squared = P.square_boxes(b)
        (res,) = self._run_crops(self.onet, [normed], [squared], 48)
        points = P.onet_landmarks(squared, res["points"])
        refined = P.calibrate(squared, res["reg"])
        return refined.astype(np.float32), res["prob"][:, 1].astype(np.float32), points.astype(np.float32)

    def __repr__(self) -> str:
        return f"MTCNN({self._label}, {self.options}, det_thresh={self.det_thresh})"


_MEAN = np.asarray(MTCNN_NORMALIZATION.mean, np.float32)
_STD = np.asarray(MTCNN_NORMALIZATION.std, np.float32)


def _normalize(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` ``uint8`` BGR → ``float32`` RGB ``(pixel - 127.5) / 128`` (:data:`MTCNN_NORMALIZATION`, HWC)."""
    return (image[:, :, ::-1].astype(np.float32) - _MEAN) / _STD
