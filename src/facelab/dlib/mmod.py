"""dlib's CNN face detector (MMOD, ``mmod_human_face_detector.dat``) on ONNX Runtime.

The network (converted to ONNX by :mod:`facelab.dlib.convert`) is a fully convolutional scorer:
it runs **once** on a tiled image pyramid (:mod:`facelab.dlib.pyramid`) and outputs one score
map per detector window. Decoding follows dlib's ``loss_mmod_::to_label`` (facts from
``dlib/dnn/loss.h``; our own code):

1. every output location whose score exceeds ``adjust_threshold`` (0 by default) is a
   candidate; its window (e.g. 80x80) is centred on the location's input-tensor position
   (``p_in = stride * p_out + offset``, 8 and 14 for the face model);
2. the window is mapped from the tiled image to the image through the pyramid level whose tile
   holds its centre, then rounded to integer pixels;
3. candidates are sorted by score and greedily kept unless they overlap a kept one according to
   dlib's ``test_box_overlap`` (intersection over the area of the *bounding box of both* above
   the IoU threshold, or either box covered above the coverage threshold).

Two modes:

* :data:`DLIB_MODE` reproduces dlib's Python ``cnn_face_detection_model_v1(img, 1)``: one
  ``pyramid_up`` (x2) and the full pyramid. Slow: every pixel is upsampled 4x before the
  network sees it (dlib itself took ~12 s per 1-2 MP photo on this machine).
* :data:`FAST_MODE`, the default, resizes the image so its longer side is ``max_side`` (1024)
  pixels, using dlib's own ``pyramid_up`` when that is a 2x upsample (small images) and
  OpenCV's area/linear resize otherwise, then runs the full pyramid once (levels built with
  OpenCV, sub-pixel different from dlib's). Faces much smaller than the 80-pixel window *after*
  that resize (about 80 / scale pixels in the photo: ~80 px on a 1024-px photo, ~100 px on a
  1280-px one, ~40 px on a 512-px one) are not found; pass ``min_face=<pixels>`` to reach
  smaller faces (it raises the scale, and the time) or use :data:`DLIB_MODE`. On this 2-CPU
  machine it takes about 0.3-0.45 s per 1-2 MP photo (``benchmarks/bench_open_pack.py``)
  against ~12 s for dlib itself, and found every face dlib found on the 20 reference photos.

Boxes come out as facelab's ``[x1, y1, x2, y2]`` with ``x2 = right + 1``, ``y2 = bottom + 1`` of
dlib's inclusive integer rectangle; :func:`dlib_rects_from_boxes` is the inverse. Scores are
dlib's raw detection confidences (not probabilities; around 1 for clear faces, > 0 is a face at
dlib's default threshold).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from facelab.detection.base import Detector, register_detector
from facelab.dlib.pyramid import (
    TiledPyramid,
    build_tiled_pyramid,
    pyramid_up2,
    rect_down2,
    tiled_pyramid_layout,
    tiled_to_image,
)
from facelab.errors import ConfigError, ModelError
from facelab.ops.normalize import Normalization, to_tensor
from facelab.structures import Detections

if TYPE_CHECKING:
    from facelab.dlib.dnn import DlibNetwork
    from facelab.runtime.session import OrtSession, RuntimeOptions
    from facelab.zoo.card import ModelCard

__all__ = [
    "MMODGeometry",
    "MMODMode",
    "DLIB_MODE",
    "FAST_MODE",
    "FASTER_MODE",
    "DlibMMOD",
    "decode_mmod",
    "mmod_nms",
    "dlib_rects_from_boxes",
    "boxes_from_dlib_rects",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MMODGeometry:
    """What the detector needs to know about the network besides its weights.

    Attributes:
        windows: ``(width, height)`` of each detector window, one per output channel.
        stride / offset: output-to-input mapping per axis: ``p_in = stride * p_out + offset``.
        avg_rgb: per-channel means subtracted before dividing by 256 (dlib's input layer).
        pyramid_rate: ``N`` of ``pyramid_down<N>`` (6).
        pyramid_padding / pyramid_outer_padding: tiling gaps (10 and 11).
        nms_iou / nms_covered: dlib's ``overlaps_nms`` thresholds.

    The defaults are those of ``mmod_human_face_detector.dat`` (read from the file).
    """

    windows: tuple[tuple[int, int], ...] = ((80, 80),)
    stride: float = 8.0
    offset: float = 14.0
    # The face model's values as stored (float32) in mmod_human_face_detector.dat.
    avg_rgb: tuple[float, float, float] = (122.78199768066406, 117.0009994506836, 104.2979965209961)
    pyramid_rate: int = 6
    pyramid_padding: int = 10
    pyramid_outer_padding: int = 11
    nms_iou: float = 0.3382761351109955
    nms_covered: float = 1.0

    @property
    def normalization(self) -> Normalization:
        """RGB, ``(x - avg) / 256``: dlib's ``input_rgb_image_pyramid``."""
        return Normalization("RGB", self.avg_rgb, (256.0, 256.0, 256.0))

    @property
    def min_window(self) -> int:
        """Smallest window side in pixels (the smallest face found at full resolution)."""
        return int(min(min(w) for w in self.windows))

    @classmethod
    def from_network(cls, network: DlibNetwork) -> MMODGeometry:
        """Read the geometry from a parsed MMOD network (:func:`facelab.dlib.dnn.load_dnn`)."""
        from facelab.dlib.dnn import LossMMOD, output_to_input_point

        if not isinstance(network.loss, LossMMOD) or not network.input.is_pyramid:
            raise ModelError(f"{network.source}: not a dlib MMOD detector with a pyramid input")
        x0, _ = output_to_input_point(network, 0.0, 0.0)
        x1, _ = output_to_input_point(network, 1.0, 1.0)
        y0 = output_to_input_point(network, 0.0, 0.0)[1]
        y1 = output_to_input_point(network, 1.0, 1.0)[1]
        sx, ox = float(x1 - x0), float(x0)
        sy, oy = float(y1 - y0), float(y0)
        if abs(sx - sy) > 1e-9 or abs(ox - oy) > 1e-9:
            raise ModelError(f"{network.source}: anisotropic output mapping is not supported")
        opts = network.loss.options
        inp = network.input
        return cls(
            windows=tuple((int(w.width), int(w.height)) for w in opts.detector_windows),
            stride=sx,
            offset=ox,
            avg_rgb=tuple(float(v) for v in inp.avg_rgb),  # type: ignore[arg-type]
            pyramid_rate=int(inp.pyramid_rate or 6),
            pyramid_padding=int(inp.pyramid_padding if inp.pyramid_padding is not None else 10),
            pyramid_outer_padding=int(inp.pyramid_outer_padding if inp.pyramid_outer_padding is not None else 11),
            nms_iou=float(opts.overlaps_nms.iou_thresh),
            nms_covered=float(opts.overlaps_nms.percent_covered_thresh),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (for a model card's ``extra["mmod"]``)."""
        out = asdict(self)
        out["windows"] = [list(w) for w in self.windows]
        out["avg_rgb"] = list(self.avg_rgb)
        return out

    @classmethod
    def from_card_extra(cls, extra: dict[str, Any], mean: tuple[float, ...] | None = None) -> MMODGeometry | None:
        """Geometry from a card's ``extra``, or ``None`` when it holds none.

        Reads ``extra["mmod"]`` (:meth:`to_dict`), or the keys
        :func:`facelab.dlib.convert.convert_cached` writes (``detector_windows``, ``pyramid_*``,
        ``overlaps_nms``, ``output_to_input``; the card's ``mean`` is the input average).
        """
        if "mmod" in extra:
            return cls.from_dict(extra["mmod"])
        if "detector_windows" not in extra:
            return None
        base = cls()
        mapping = extra.get("output_to_input", {})
        nms = extra.get("overlaps_nms", (base.nms_iou, base.nms_covered))
        return cls(
            windows=tuple((int(w[0]), int(w[1])) for w in extra["detector_windows"]),
            stride=float(mapping.get("scale", base.stride)),
            offset=float(mapping.get("offset", base.offset)),
            avg_rgb=tuple(float(v) for v in mean) if mean is not None else base.avg_rgb,  # type: ignore[arg-type]
            pyramid_rate=int(extra.get("pyramid_rate") or base.pyramid_rate),
            pyramid_padding=int(extra.get("pyramid_padding", base.pyramid_padding)),
            pyramid_outer_padding=int(extra.get("pyramid_outer_padding", base.pyramid_outer_padding)),
            nms_iou=float(nms[0]),
            nms_covered=float(nms[1]),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MMODGeometry:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["windows"] = tuple(tuple(int(v) for v in w) for w in data.get("windows", ((80, 80),)))
        if "avg_rgb" in data:
            data["avg_rgb"] = tuple(float(v) for v in data["avg_rgb"])
        return cls(**data)


@dataclass(frozen=True)
class MMODMode:
    """How an image is prepared before the single network run.

    Attributes:
        upsample: ``int`` = dlib's ``upsample_num_times`` (``pyramid_up`` x2 that many times,
            no other resize); ``"auto"`` = resize to ``max_side`` (see below).
        max_side: with ``upsample="auto"``, the longer image side after resizing (up or down;
            at most a 2x upsample). ``None`` keeps the size (scale 1).
        min_face: with ``upsample="auto"``, the smallest face side (photo pixels) that must be
            found: the scale is raised to ``window / min_face`` when that is larger (capped at
            ``max_scale``).
        max_scale: upper bound of the auto scale.
        max_levels: use only the first pyramid levels (``None``: dlib's full pyramid). Each level
            is 5/6 of the previous; level ``L`` finds faces ``window * 1.2**L`` pixels wide.
        level_step: keep every ``level_step``-th pyramid scale only (1 = dlib's; 2 halves the
            work of the smaller levels but faces between two kept scales score lower).
        exact: build the pyramid exactly as dlib (numpy, align-corners); ``False`` uses
            OpenCV's resize, faster, sub-pixel different.
    """

    upsample: int | str = "auto"
    max_side: int | None = 1024
    min_face: float | None = None
    max_scale: float = 2.0
    max_levels: int | None = None
    level_step: int = 1
    exact: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.upsample, str):
            if self.upsample != "auto":
                raise ConfigError(f"upsample must be a non-negative int or 'auto', not {self.upsample!r}")
        elif int(self.upsample) < 0:
            raise ConfigError(f"upsample must be >= 0, not {self.upsample}")
        if self.max_side is not None and self.max_side < 16:
            raise ConfigError(f"max_side must be at least 16, not {self.max_side}")
        if self.min_face is not None and self.min_face <= 0:
            raise ConfigError(f"min_face must be positive, not {self.min_face}")
        if self.max_levels is not None and self.max_levels < 1:
            raise ConfigError(f"max_levels must be at least 1, not {self.max_levels}")
        if int(self.level_step) < 1:
            raise ConfigError(f"level_step must be at least 1, not {self.level_step}")


#: dlib's own behaviour: ``cnn_face_detection_model_v1(img, upsample_num_times=1)``.
DLIB_MODE = MMODMode(upsample=1, max_side=None, exact=True)
#: facelab's default: longer side resized to 1024 px (at most 2x up), full pyramid, one run.
FAST_MODE = MMODMode()
#: As :data:`FAST_MODE` but only every other pyramid scale (steps of 1.44 instead of 1.2): about
#: 40 % less work; faces between two kept scales score lower (it still found every reference face).
FASTER_MODE = MMODMode(level_step=2)


def _lround(values: np.ndarray) -> np.ndarray:
    """C ``lround``: halves away from zero."""
    v = np.asarray(values, np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _dlib_area(r: np.ndarray) -> np.ndarray:
    w = r[..., 2] - r[..., 0] + 1
    h = r[..., 3] - r[..., 1] + 1
    return np.where((w > 0) & (h > 0), w * h, 0.0)


def mmod_nms(rects: np.ndarray, scores: np.ndarray, iou: float = 0.4, covered: float = 1.0) -> np.ndarray:
    """Dlib's MMOD non-max suppression.

    Args:
        rects: ``(N, 4)`` integer-valued dlib rectangles ``[left, top, right, bottom]`` (inclusive).
        scores: ``(N,)`` scores.
        iou: two boxes overlap when ``|A ∩ B| / |bounding box of A and B|`` exceeds this...
        covered: ...or when ``|A ∩ B|`` exceeds this fraction of ``|A|`` or of ``|B|``.

    Returns:
        Indices of the kept boxes, best score first.
    """
    r = np.asarray(rects, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    kept: list[int] = []
    areas = _dlib_area(r)
    for i in order:
        if kept:
            k = r[kept]
            lo, hi = k[:, :2], k[:, 2:]
            inner = _dlib_area(np.concatenate([np.maximum(lo, r[i, :2]), np.minimum(hi, r[i, 2:])], axis=1))
            outer = _dlib_area(np.concatenate([np.minimum(lo, r[i, :2]), np.maximum(hi, r[i, 2:])], axis=1))
            with np.errstate(divide="ignore", invalid="ignore"):
                hit = (inner > 0) & (
                    (inner / outer > iou) | (inner / areas[kept] > covered) | (inner / max(areas[i], 1e-12) > covered)
                )
            if hit.any():
                continue
        kept.append(int(i))
    return np.asarray(kept, np.int64)


def decode_mmod(
    scores: np.ndarray,
    geometry: MMODGeometry,
    layout: TiledPyramid,
    adjust_threshold: float = 0.0,
    *,
    exact: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn the network's score maps into dlib rectangles in the pyramid's first-level image.

    Args:
        scores: ``(K, H', W')`` score maps (one per detector window) of the tiled image.
        geometry: windows and output-to-input mapping.
        layout: the tiled pyramid the network saw.
        adjust_threshold: keep locations scoring above this.
        exact: map through the pyramid as dlib (``False`` for OpenCV-built levels).

    Returns:
        ``(rects, scores)``: ``(N, 4)`` ``float64`` integer-valued dlib rectangles and ``(N,)``
        ``float32`` scores, after NMS, best first.
    """
    all_rects = []
    all_scores = []
    for k, (ww, wh) in enumerate(geometry.windows):
        rows, cols = np.nonzero(scores[k] > adjust_threshold)
        if len(rows) == 0:
            continue
        px = geometry.stride * cols + geometry.offset
        py = geometry.stride * rows + geometry.offset
        tiled = np.stack([px - (ww - 1) / 2.0, py - (wh - 1) / 2.0, px + (ww - 1) / 2.0, py + (wh - 1) / 2.0], axis=1)
        all_rects.append(_lround(tiled_to_image(layout, tiled, exact=exact)))
        all_scores.append(scores[k][rows, cols])
    if not all_rects:
        return np.zeros((0, 4)), np.zeros((0,), np.float32)
    rects = np.concatenate(all_rects)
    sc = np.concatenate(all_scores).astype(np.float32)
    keep = mmod_nms(rects, sc, geometry.nms_iou, geometry.nms_covered)
    return rects[keep], sc[keep]


def boxes_from_dlib_rects(rects: np.ndarray) -> np.ndarray:
    """``(N, 4)`` dlib inclusive rectangles → facelab ``[x1, y1, x2, y2]`` ``float32`` (``x2 = right + 1``)."""
    r = np.asarray(rects, np.float64).reshape(-1, 4)
    return (r + np.array([0.0, 0.0, 1.0, 1.0])).astype(np.float32)


def dlib_rects_from_boxes(boxes: np.ndarray) -> np.ndarray:
    """Facelab ``[x1, y1, x2, y2]`` boxes → dlib inclusive integer rectangles ``[x1, y1, x2 - 1, y2 - 1]`` (rounded)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.floor(b - np.array([0.0, 0.0, 1.0, 1.0]) + 0.5)


@register_detector("dlib_mmod")
class DlibMMOD(Detector):
    """dlib's MMOD CNN face detector (``mmod_human_face_detector.dat`` converted to ONNX).

    No keypoints: run the 5-point shape predictor (:class:`facelab.dlib.pack.DlibLandmark5`)
    on its boxes.

    Args:
        session: the converted network.
        geometry: windows, mapping and pyramid settings (default: the face model's values; read
            them from the network with :meth:`MMODGeometry.from_network` or from the card).
        mode: :data:`FAST_MODE` (default, also ``"fast"``), :data:`FASTER_MODE` (``"faster"``),
            :data:`DLIB_MODE` (``"dlib"``), or any :class:`MMODMode` (or a dict of its fields).
        det_thresh: dlib's ``adjust_threshold`` (default 0.0: dlib's own).
        nms_thresh: NMS overlap threshold (default: the model's, 0.4).
        **kwargs: :class:`~facelab.detection.base.Detector` options (``max_batch``, ``card``).

    Example:
        >>> from facelab.dlib.pack import open_detector  # doctest: +SKIP
        >>> open_detector().detect("t1.jpg").boxes.shape  # doctest: +SKIP
        (6, 4)
    """

    arch: ClassVar[str] = "dlib_mmod"
    default_det_thresh: ClassVar[float] = 0.0

    def __init__(
        self,
        session: OrtSession,
        *,
        geometry: MMODGeometry | None = None,
        mode: MMODMode | str | dict[str, Any] | None = None,
        det_thresh: float | None = None,
        nms_thresh: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.geometry = geometry or MMODGeometry()
        kwargs.pop("normalization", None)  # the input normalisation is the geometry's
        super().__init__(
            session,
            det_thresh=det_thresh,
            nms_thresh=self.geometry.nms_iou if nms_thresh is None else nms_thresh,
            normalization=self.geometry.normalization,
            **kwargs,
        )
        self.mode = _as_mode(mode)

    @property
    def with_kps(self) -> bool:
        """MMOD predicts boxes only."""
        return False

    @classmethod
    def from_card(
        cls, card: ModelCard, path: str | Path, runtime: RuntimeOptions | None = None, **overrides: Any
    ) -> DlibMMOD:
        """Build from a card and the converted ``.onnx`` at ``path``.

        The card's ``extra`` describes the :class:`MMODGeometry` (see
        :meth:`MMODGeometry.from_card_extra`; the face model's values otherwise).

        ``det_size`` (a pipeline option of other detectors) is ignored: MMOD sizes its input
        from the image and the :class:`MMODMode`.
        """
        from facelab.runtime.session import create_session

        if card.task != "detection":
            raise ModelError(f"model card {card.name!r} is a {card.task!r} model, not a detector")
        kwargs: dict[str, Any] = {"card": card}
        geometry = MMODGeometry.from_card_extra(card.extra, card.mean)
        if geometry is not None:
            kwargs["geometry"] = geometry
        for key in ("det_thresh", "nms_thresh", "mode", "max_batch"):
            if key in card.extra:
                kwargs[key] = card.extra[key]
        overrides.pop("det_size", None)
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(create_session(path, runtime), **kwargs)

    def with_mode(self, mode: MMODMode | str | dict[str, Any]) -> DlibMMOD:
        """A detector sharing this session with another :class:`MMODMode` (or ``"fast"``/``"dlib"``)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.mode = _as_mode(mode)
        return other

    # ------------------------------------------------------------------------------ internals

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        """Resize per the mode; returns the network image and how to map rectangles back."""
        mode = self.mode
        if mode.upsample != "auto":
            img = image
            for _ in range(int(mode.upsample)):
                img = pyramid_up2(img)
            return img, ("pyr", int(mode.upsample))
        h, w = image.shape[:2]
        scale = 1.0 if mode.max_side is None else mode.max_side / max(h, w)
        if mode.min_face is not None:
            scale = max(scale, self.geometry.min_window / float(mode.min_face))
        scale = min(scale, mode.max_scale)
        if abs(scale - 1.0) < 1e-3:
            return image, ("pyr", 0)
        if scale >= 2.0 - 1e-3 and mode.max_scale >= 2.0:
            return pyramid_up2(image), ("pyr", 1)
        import cv2

        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        return cv2.resize(image, (nw, nh), interpolation=interp), ("scale", (w / nw, h / nh))

    def _detect_images(self, images: list[np.ndarray]) -> list[Detections]:
        return [self._detect_one(img) for img in images]

    def _detect_one(self, image: np.ndarray) -> Detections:
        rects, scores = self.detect_rects(image)
        return Detections(boxes_from_dlib_rects(rects), scores, None)

    def detect_rects(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detect faces and return dlib's own rectangles.

        Args:
            image: ``(H, W, 3)`` ``uint8`` BGR.

        Returns:
            ``(rects, scores)``: ``(N, 4)`` ``int64`` inclusive ``[left, top, right, bottom]``
            (dlib's ``rectangle``) and ``(N,)`` ``float32`` confidences, best first.
        """
        img, back = self._prepare(image)
        geom = self.geometry
        h, w = img.shape[:2]
        if min(h, w) < geom.min_window // 2:
            # Too small for any face window (and for the network's three stride-2 layers).
            return np.zeros((0, 4), np.int64), np.zeros((0,), np.float32)
        step = int(self.mode.level_step)
        layout = tiled_pyramid_layout(
            h,
            w,
            n=geom.pyramid_rate,
            padding=geom.pyramid_padding,
            outer_padding=geom.pyramid_outer_padding,
            max_levels=self.mode.max_levels,
            rate=None if step == 1 else (1.0 - 1.0 / geom.pyramid_rate) ** step,
        )
        exact = self.mode.exact and step == 1
        tensor = to_tensor(img, geom.normalization)[0]
        tiled = build_tiled_pyramid(tensor, layout, exact=exact)
        out = self.session.run({self.input_name: tiled[None].astype(self.input_dtype)})[0]
        maps = np.asarray(out[0], np.float32)
        if maps.ndim == 2:
            maps = maps[None]
        rects, scores = decode_mmod(maps, geom, layout, self.det_thresh, exact=exact)
        if len(rects) and self.nms_thresh != geom.nms_iou:
            keep = mmod_nms(rects, scores, self.nms_thresh, geom.nms_covered)
            rects, scores = rects[keep], scores[keep]
        kind, value = back
        if kind == "pyr" and value:
            rects = _lround(rect_down2(rects, value))
        elif kind == "scale":
            sx, sy = value
            # The rectangle covers pixels left..right, i.e. [left - 0.5, right + 0.5] with pixel
            # centres at integers; scale that span (x_photo + 0.5 = (x + 0.5) * s) and take the
            # pixels it covers again.
            left = rects[:, 0] * sx
            top = rects[:, 1] * sy
            right = (rects[:, 2] + 1) * sx - 1
            bottom = (rects[:, 3] + 1) * sy - 1
            rects = _lround(np.stack([left, top, right, bottom], axis=1))
        return rects.astype(np.int64).reshape(-1, 4), scores.astype(np.float32)

    def __repr__(self) -> str:
        return f"DlibMMOD({self._label}, mode={self.mode}, det_thresh={self.det_thresh})"


_MODES = {"fast": FAST_MODE, "default": FAST_MODE, "faster": FASTER_MODE, "dlib": DLIB_MODE}


def _as_mode(mode: MMODMode | str | dict[str, Any] | None) -> MMODMode:
    if mode is None:
        return FAST_MODE
    if isinstance(mode, MMODMode):
        return mode
    if isinstance(mode, str):
        if mode not in _MODES:
            raise ConfigError(f"unknown MMOD mode {mode!r}; known: {sorted(_MODES)}")
        return _MODES[mode]
    if isinstance(mode, dict):
        return replace(FAST_MODE, **mode)
    raise ConfigError(f"mode must be an MMODMode, 'fast', 'dlib' or a dict, not {type(mode).__name__}")
