"""The ``open`` model pack: MTCNN (MIT) fused with dlib's MMOD, dlib's 5 points and 128-d recogniser (CC0).

The detector is :class:`facelab.mtcnn.fused.MTCNNWithMMOD`: MTCNN's P/R/O-Net from the PyPI
package ``mtcnn==1.0.0`` (ipazc/mtcnn, MIT; converted by :mod:`facelab.mtcnn.convert`) and dlib's
MMOD, five ArcFace-order keypoints (O-Net's) for every face. The dlib weights come from the PyPI
package ``face-recognition-models==0.3.0`` (data only, CC0;
the models are Davis King's, trained for dlib): ``mmod_human_face_detector.dat``,
``shape_predictor_5_face_landmarks.dat`` and ``dlib_face_recognition_resnet_model_v1.dat``.
The two networks are converted to ONNX by :func:`facelab.dlib.convert.convert_cached` (cached
under ``$FACELAB_HOME``, rebuilt when the source changes); the shape predictor runs in numpy.
Nothing is downloaded. dlib's 68-point model in the same package is *not* used (its training
data, iBUG 300-W, is not for commercial use).

Runners (the pipeline's protocol, see :mod:`facelab.pipeline`):

* detection: :class:`facelab.mtcnn.fused.MTCNNWithMMOD` (arch ``"mtcnn_mmod"`` in
  :data:`facelab.detection.base.DETECTORS`; :func:`open_face_detector`), boxes and five keypoints;
  :func:`open_detector` is its MMOD part alone (:class:`facelab.dlib.mmod.DlibMMOD`, boxes only).
* ``landmark_5``: :class:`DlibLandmark5` (arch ``"dlib_shape_5"``), dlib's 5 points per box.
* ``recognition``: :class:`DlibResNetRecognizer` (arch ``"dlib_resnet"``): shape predictor →
  dlib's 150x150 chip (``get_face_chip_details(shape, 150, 0.25)``) → ResNet → 128-d
  descriptor, for all faces of all images in batched runs. It needs no detector keypoints.

**dlib's 5 points and facelab's keypoints.** dlib's order is: 0 outer and 1 inner corner of the
eye on the image *right*, 2 outer and 3 inner corner of the eye on the image *left*, 4 the base
of the nose (subnasale). :func:`dlib5_to_facelab` derives what it can in
:class:`~facelab.structures.FaceKeypoint` order: ``LEFT_EYE`` / ``RIGHT_EYE`` = midpoints of the
eye corners (close to, not exactly, the pupil centres InsightFace's detectors give); ``NOSE`` =
dlib's nose base, which lies *below* the nose tip InsightFace uses (so it is only approximate);
``LEFT_MOUTH`` / ``RIGHT_MOUTH`` cannot be derived (NaN). Because two of five points are
missing, dlib's points are never put into ``Detections.kps``/``Face.kps`` (which hold the
detector's O-Net points); the landmark runner
reports them as ``Face.attributes["dlib_shape_5"]`` (``(5, 2)``, dlib order) and
``Face.attributes["eyes_nose_from_dlib"]`` (``(3, 2)``: ``LEFT_EYE``, ``RIGHT_EYE``, ``NOSE`` as
derived above; JSON-safe, no NaN).

**Same-person threshold.** dlib's rule is Euclidean distance < 0.6 between raw descriptors.
facelab compares cosine similarities; the card's ``extra["threshold_cosine"]`` holds the
threshold calibrated on ``verification/deepface/master.csv`` (see
``extra["threshold_calibration"]`` for how it was obtained).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from facelab.dlib.chips import extract_chips, face_chip_details
from facelab.dlib.mmod import DlibMMOD, MMODGeometry, MMODMode, dlib_rects_from_boxes
from facelab.errors import ConfigError, ModelError
from facelab.ops.normalize import Normalization, to_tensor
from facelab.registry import RUNNERS, Registry
from facelab.structures import Detections

if TYPE_CHECKING:
    from facelab.dlib.shape_predictor import ShapePredictorModel
    from facelab.runtime.session import OrtSession, RuntimeOptions
    from facelab.zoo.card import ModelCard, PackCard

__all__ = [
    "OPEN_PACK_NAME",
    "DLIB_SHAPE_5_NAMES",
    "DlibLandmark5",
    "DlibResNetRecognizer",
    "dlib5_to_facelab",
    "load_shape_predictor_cached",
    "open_pack_card",
    "build_open_pack",
    "open_detector",
    "open_landmarker",
    "open_recognizer",
    "THRESHOLD_COSINE",
    "THRESHOLD_EUCLIDEAN_DLIB",
    "THRESHOLD_CALIBRATION",
    "BoxMapping",
    "DLIB_BOX_MAPPINGS",
    "dlib_box_mapping_for",
    "YUNET_TO_DLIB",
    "MTCNN_TO_DLIB",
    "OPEN_MMOD_MODE",
    "open_face_detector",
]

_logger = logging.getLogger(__name__)

OPEN_PACK_NAME = "open"

#: dlib's 5-point order (image left/right as seen in the picture).
DLIB_SHAPE_5_NAMES = (
    "eye_image_right_outer_corner",
    "eye_image_right_inner_corner",
    "eye_image_left_outer_corner",
    "eye_image_left_inner_corner",
    "nose_base",
)

#: dlib's documented rule: same person when the Euclidean distance of raw descriptors is below 0.6.
THRESHOLD_EUCLIDEAN_DLIB = 0.6
#: Cosine-similarity threshold equivalent to dlib's rule, calibrated on deepface's master.csv
#: (300 pairs) with this package's pipeline (re-measured with the v2 MTCNN+MMOD detector); see
#: :data:`THRESHOLD_CALIBRATION`.
THRESHOLD_COSINE = 0.923
#: How :data:`THRESHOLD_COSINE` was obtained (copied into the recogniser card's ``extra``).
THRESHOLD_CALIBRATION: dict[str, Any] = {
    "dataset": "verification/deepface/master.csv (300 pairs: 38 same, 262 different; 25 images)",
    "pipeline": (
        "open pack v2: MTCNN+MMOD detector (largest face per image), MTCNN_TO_DLIB box mapping, 5-point "
        "shape predictor, dlib chip 150/0.25, ResNet descriptor (facelab 0.x, dlib converter 1, MTCNN converter 2)"
    ),
    "method": (
        "dlib's rule ||a - b|| < 0.6 on raw descriptors becomes a cosine threshold through "
        "||a - b||^2 = |a|^2 + |b|^2 - 2|a||b|cos: with the mean squared descriptor norm m measured on "
        "the 25 images (m = 2.348), cos >= 1 - 0.36 / (2 m) = 0.9233, rounded to 0.923"
    ),
    "accuracy_euclidean_0.6": 0.9967,
    "accuracy_cosine_0.923": 1.0,
    "perfect_cosine_interval": [0.9197, 0.9261],
    "note": (
        "Re-measured with the v2 detector (issue 8): the chips changed with the boxes, 0.923 still classifies "
        "all 300 pairs correctly (v1, dlib MMOD boxes: interval [0.9184, 0.9271], m = 2.351); the Euclidean "
        "rule misses one same-person pair. dlib's own pipeline: 0.9967."
    ),
}

_SOURCE = "face-recognition-models 0.3.0 (PyPI, CC0); models by Davis E. King for dlib"
_SOURCE_URL = "https://pypi.org/project/face-recognition-models/0.3.0/"
_LICENSE = "CC0-1.0"
_MTCNN_SOURCE_URL = "https://pypi.org/project/mtcnn/1.0.0/"
#: The MMOD mode inside the open pack's fused detector: longer side at 512 px (faces from about a
#: sixth of the photo's longer side up: the large, masked and turned faces MTCNN's cascade rejects).
OPEN_MMOD_MODE: dict[str, Any] = {"max_side": 512}


def dlib5_to_facelab(shapes: np.ndarray) -> np.ndarray:
    """Dlib 5-point shapes → facelab :class:`~facelab.structures.FaceKeypoint` order where derivable.

    Args:
        shapes: ``(5, 2)`` or ``(N, 5, 2)`` points in dlib's order (:data:`DLIB_SHAPE_5_NAMES`).

    Returns:
        Same leading shape, ``(…, 5, 2)`` ``float32``: ``LEFT_EYE`` (image left) = midpoint of
        dlib points 2 and 3, ``RIGHT_EYE`` = midpoint of 0 and 1, ``NOSE`` = dlib point 4 (the
        nose *base*, below InsightFace's nose tip: approximate), ``LEFT_MOUTH`` and
        ``RIGHT_MOUTH`` = NaN (dlib's 5-point model has no mouth points).
    """
    s = np.asarray(shapes, dtype=np.float32)
    if s.shape[-2:] != (5, 2):
        raise ConfigError(f"dlib5_to_facelab needs (…, 5, 2) shapes, got {s.shape}")
    out = np.full(s.shape, np.nan, np.float32)
    out[..., 0, :] = (s[..., 2, :] + s[..., 3, :]) / 2
    out[..., 1, :] = (s[..., 0, :] + s[..., 1, :]) / 2
    out[..., 2, :] = s[..., 4, :]
    return out


_SP_CACHE: dict[tuple[str, int, int], ShapePredictorModel] = {}


def load_shape_predictor_cached(path: str | os.PathLike) -> ShapePredictorModel:
    """:func:`facelab.dlib.shape_predictor.load_shape_predictor`, parsed once per file version.

    The landmark runner and the recogniser of one pack share the same parsed model, and the
    parsed arrays are cached on disk under ``$FACELAB_HOME/converted`` (parsing the 9 MB file
    takes seconds; reading the cache, milliseconds).
    """
    from facelab.dlib.convert import facelab_home
    from facelab.dlib.shape_predictor import load_shape_predictor

    p = Path(path)
    try:
        stat = p.stat()
        key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError:
        return load_shape_predictor(p)  # raises the reader's "not found" error
    model = _SP_CACHE.get(key)
    if model is None:
        model = load_shape_predictor(p, cache_dir=facelab_home() / "converted")
        _SP_CACHE.clear()  # keep one model: a new file version replaces the old one
        _SP_CACHE[key] = model
    return model


def _shape_predictor_for(card: ModelCard | None, near: Path | None) -> ShapePredictorModel:
    """Load the 5-point shape predictor named by a card (beside ``near``), else the bundled one."""
    from facelab.convert.dlib_reader import bundled_model_path

    load_shape_predictor = load_shape_predictor_cached
    name = "shape_predictor_5_face_landmarks.dat"
    if card is not None:
        name = str(card.extra.get("shape_predictor", name))
    if near is not None and (near.parent / name).is_file():
        return load_shape_predictor(near.parent / name)
    if Path(name).is_file():
        return load_shape_predictor(name)
    return load_shape_predictor(bundled_model_path(Path(name).name))


@dataclasses.dataclass(frozen=True)
class BoxMapping:
    """Linear map from another detector's face boxes to dlib-MMOD-like boxes.

    dlib's shape predictor was trained on boxes of dlib's own detector; boxes of another detector
    (tighter, taller, shifted) put its regression trees off their training distribution. With
    ``(cx, cy, w, h)`` the centre and size of a box::

        cx' = cx + dx * w,   cy' = cy + dy * h,   w' = sw * w,   h' = sh * h

    Attributes:
        dx, dy: centre offsets as fractions of the box width / height.
        sw, sh: width / height scales.
        note: how the parameters were obtained.
    """

    dx: float = 0.0
    dy: float = 0.0
    sw: float = 1.0
    sh: float = 1.0
    note: str = ""

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` ``[x1, y1, x2, y2]`` boxes (pixels); returns ``(N, 4)`` ``float32``."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        cx = (b[:, 0] + b[:, 2]) / 2 + self.dx * w
        cy = (b[:, 1] + b[:, 3]) / 2 + self.dy * h
        w, h = w * self.sw, h * self.sh
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)


#: Box mappings to dlib-like boxes, by detector architecture (:attr:`ModelCard.arch`). A detector
#: without an entry feeds its boxes to the shape predictor unchanged (and a log line says so).
DLIB_BOX_MAPPINGS: Registry = Registry("dlib box mapping")
DLIB_BOX_MAPPINGS.register("dlib_mmod")(BoxMapping(note="dlib's own detector: identity"))
#: YuNet (OpenCV Zoo ``face_detection_yunet_2026may.onnx``, default options, each image at its own
#: size) → dlib MMOD boxes. Fitted (mean of per-face ratios) on the 29 faces of the dlib reference
#: images (``reference/dlib_reference.npz``, dlib 20.0.1 ``cnn_face_detection_model_v1(img, 1)``)
#: that YuNet finds (IoU >= 0.3 with dlib's rect; it misses 2 of 31, the very large faces of
#: ``RD/d1.jpeg`` and ``bulk/woman.png``). Error of the shape predictor's 5 points against dlib's
#: reference shapes, mean distance / inter-eye distance (eye = midpoint of its two corners),
#: two-fold (fit on alternate faces, evaluate on the others; the two folds' fits differed by < 0.03
#: in every parameter):
#:
#: ====================  ==================  ==================
#: boxes                 fold 1 mean / max   fold 2 mean / max
#: ====================  ==================  ==================
#: dlib's MMOD rects     0.000 / 0.000       0.000 / 0.000
#: raw YuNet             0.028 / 0.064       0.020 / 0.070
#: mapped YuNet          0.018 / 0.062       0.010 / 0.024
#: ====================  ==================  ==================
#:
#: All 29 faces with this (rounded) fit: mean 0.0128, median 0.0084 (raw YuNet boxes: 0.0240 / 0.0204).
#:
#: End-to-end on ``verification/deepface/master.csv`` (300 pairs, largest face per image, cosine
#: threshold 0.923, ``det_size=(640, 640)``): accuracy 1.000 with and without the mapping; the
#: mapping moves the descriptors closer to those of the MMOD pipeline (cosine to them: mean 0.9995,
#: min 0.9976 mapped; 0.9989 / 0.9971 raw). YuNet at ``det_size="native"`` (OpenCV's single size)
#: misses large faces (dlib box width >= 403 px: 10 of those 25 portraits, accuracy 0.917) and a
#: 640x640 letterbox misses small ones (2 of 6 in ``images/t1.jpg``); YuNet's default (auto: native
#: size capped at 1280 + a 320x320 letterbox) finds all 31 reference faces (mapped error mean
#: 0.0119) and one face in each of the 25 master.csv portraits (accuracy 1.000).
YUNET_TO_DLIB = DLIB_BOX_MAPPINGS.register("yunet")(
    BoxMapping(
        dx=-0.060,
        dy=-0.009,
        sw=1.103,
        sh=0.843,
        note="YuNet 2026may -> dlib MMOD, fitted on 29 dlib reference faces (see facelab.dlib.pack)",
    )
)


#: MTCNN (``facelab.mtcnn``, the open pack's default detector, with its open-pack options) → dlib
#: MMOD boxes, fitted (mean of per-face ratios) on the 31 faces of the dlib reference images, all
#: found by MTCNN. Shape-predictor error against dlib's reference shapes (mean distance /
#: inter-eye distance): raw MTCNN boxes 0.0233 mean / 0.083 max; mapped 0.0133 / 0.051 (two folds
#: fitted on alternate faces and evaluated on the others: 0.0126 and 0.0105). The fused detector
#: (``"mtcnn_mmod"``) gives MTCNN-like boxes for every face, so it uses the same mapping.
MTCNN_TO_DLIB = DLIB_BOX_MAPPINGS.register("mtcnn")(
    BoxMapping(
        dx=-0.051,
        dy=0.007,
        sw=1.119,
        sh=0.852,
        note="MTCNN (mtcnn==1.0.0 weights) -> dlib MMOD, fitted on 31 dlib reference faces (see facelab.dlib.pack)",
    )
)
DLIB_BOX_MAPPINGS.register("mtcnn_mmod")(MTCNN_TO_DLIB)


def dlib_box_mapping_for(detector_arch: str | None) -> BoxMapping | None:
    """The registered :class:`BoxMapping` for a detector architecture, or ``None`` when none is known."""
    if detector_arch is None or detector_arch not in DLIB_BOX_MAPPINGS:
        return None
    return DLIB_BOX_MAPPINGS.get(detector_arch)


def _shape_boxes(boxes: np.ndarray, mapping: BoxMapping | None) -> np.ndarray:
    """Dlib rectangles for the shape predictor from detector boxes, through ``mapping`` when set."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return dlib_rects_from_boxes(b if mapping is None else mapping.apply(b))


class _DetectorAware:
    """Mixin: the shape-predictor users remember which detector's boxes they receive."""

    box_mapping: BoxMapping | None = None

    def use_detector(self, arch: str | None) -> None:
        """Adapt to boxes of a detector of architecture ``arch`` (called by :class:`facelab.pipeline.FaceAnalyzer`).

        Sets :attr:`box_mapping` to the registered mapping (:data:`DLIB_BOX_MAPPINGS`); an
        architecture without one keeps the boxes as they are, with an info log line.
        """
        self.box_mapping = dlib_box_mapping_for(arch)
        if self.box_mapping is None:
            _logger.info("no dlib box mapping for detector %r: its boxes go to the shape predictor unchanged", arch)


def _rects_of(det: Detections) -> np.ndarray:
    return dlib_rects_from_boxes(det.boxes)


@RUNNERS.register("landmark_5")
class DlibLandmark5(_DetectorAware):
    """dlib's 5-point shape predictor as the ``landmark_5`` runner (numpy, no ONNX).

    Attributes:
        model: the parsed :class:`~facelab.dlib.shape_predictor.ShapePredictorModel`.
        card: its card, when built from one.
    """

    arch: ClassVar[str] = "dlib_shape_5"

    def __init__(self, model: ShapePredictorModel, card: ModelCard | None = None) -> None:
        if model.num_parts != 5:
            raise ModelError(
                f"{model.source}: a 5-point shape predictor is needed, this one has {model.num_parts} parts"
            )
        self.model = model
        self.card = card

    @classmethod
    def from_card(
        cls, card: ModelCard, path: str | Path, runtime: RuntimeOptions | None = None, **_: Any
    ) -> DlibLandmark5:
        """Load the ``.dat`` file ``path`` (``runtime`` and pipeline options are ignored: numpy only)."""
        if card.task != "landmark_5":
            raise ConfigError(f"{card.name}: DlibLandmark5 needs a landmark_5 card, not {card.task!r}")
        return cls(load_shape_predictor_cached(path), card)

    def shapes(self, image: np.ndarray, boxes: np.ndarray, *, round_points: bool = True) -> np.ndarray:
        """Dlib 5-point shapes of the faces in ``boxes``.

        Args:
            image: ``(H, W, 3)`` ``uint8`` BGR (or ``(H, W)`` grey).
            boxes: ``(N, 4)`` facelab boxes ``[x1, y1, x2, y2]`` (dlib's rectangle is
                ``[x1, y1, x2 - 1, y2 - 1]``), mapped by :attr:`box_mapping` first when it is set
                (boxes of another detector, see :meth:`use_detector`).
            round_points: round to integer pixels as dlib does (default; what dlib's chips use).

        Returns:
            ``(N, 5, 2)`` ``float32`` in dlib's order (:data:`DLIB_SHAPE_5_NAMES`).
        """
        from facelab.dlib.shape_predictor import predict_many

        return predict_many(self.model, image, _shape_boxes(boxes, self.box_mapping), round_points=round_points)

    def predict_detections(
        self, images: Sequence[np.ndarray], detections: Sequence[Detections]
    ) -> list[dict[str, list]]:
        """Pipeline protocol: per image, ``{"dlib_shape_5": [...], "eyes_nose_from_dlib": [...]}``.

        ``dlib_shape_5`` holds one ``(5, 2)`` array of dlib-order points per face,
        ``eyes_nose_from_dlib`` the ``(3, 2)`` ``LEFT_EYE``, ``RIGHT_EYE``, ``NOSE`` rows of
        :func:`dlib5_to_facelab` (the mouth corners cannot be derived); both land in
        ``Face.attributes``.
        """
        if len(images) != len(detections):
            raise ConfigError(f"got {len(images)} images but {len(detections)} detections")
        out = []
        for image, det in zip(images, detections):
            shapes = self.shapes(image, det.boxes) if len(det) else np.zeros((0, 5, 2), np.float32)
            derived = dlib5_to_facelab(shapes)[:, :3]
            out.append({"dlib_shape_5": list(shapes), "eyes_nose_from_dlib": list(derived)})
        return out


@RUNNERS.register("recognition.dlib_resnet")
class DlibResNetRecognizer(_DetectorAware):
    """dlib's ResNet face recogniser (128-d) with dlib's own alignment.

    Each face: 5-point shape predictor on its box → dlib chip (150x150, padding 0.25, bilinear
    with pyramid anti-aliasing) → network. All faces of all images go through the network in
    chunks of ``batch_size``.

    Attributes:
        session: the converted network.
        card: its card.
        shape_predictor: the 5-point model used for alignment.
        normalization: RGB, ``(x - avg) / 256`` (dlib's ``input_rgb_image_sized``).
        batch_size: chips per ``run`` call.
        padding: chip padding (0.25, what the network was trained with).
    """

    arch: ClassVar[str] = "dlib_resnet"
    chip_size: ClassVar[int] = 150
    #: Side of the crops :meth:`embed` takes (the same name as ArcFace runners use).
    input_size: ClassVar[int] = chip_size

    def __init__(
        self,
        session: OrtSession,
        card: ModelCard,
        shape_predictor: ShapePredictorModel,
        *,
        batch_size: int = 16,
        padding: float = 0.25,
    ) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be at least 1, not {batch_size}")
        if shape_predictor.num_parts != 5:
            raise ModelError(f"{shape_predictor.source}: dlib chips need the 5-point shape predictor")
        self.session = session
        self.card = card
        self.shape_predictor = shape_predictor
        self.normalization: Normalization = card.normalization
        self.batch_size = int(batch_size)
        self.padding = float(padding)
        self.embedding_dim = card.embedding_dim or 128

    @classmethod
    def from_card(
        cls, card: ModelCard, path: str | Path, runtime: RuntimeOptions | None = None, **kwargs: Any
    ) -> DlibResNetRecognizer:
        """Load the converted ``.onnx`` at ``path``.

        The shape predictor named by ``card.extra["shape_predictor"]`` is taken from the same
        folder, else from the installed ``face-recognition-models``.
        """
        from facelab.runtime.session import create_session

        if card.task != "recognition":
            raise ConfigError(f"{card.name}: DlibResNetRecognizer needs a recognition card, not {card.task!r}")
        sp = kwargs.pop("shape_predictor", None) or _shape_predictor_for(card, Path(path))
        allowed = {k: kwargs[k] for k in ("batch_size", "padding") if k in kwargs}
        return cls(create_session(path, runtime), card, sp, **allowed)

    # ----------------------------------------------------------------------------- steps

    def chips(
        self, image: np.ndarray, boxes: np.ndarray, shapes: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Dlib's shapes and 150x150 chips for the faces in ``boxes``.

        Args:
            image: ``(H, W, 3)`` ``uint8`` BGR.
            boxes: ``(N, 4)`` facelab boxes (mapped by :attr:`box_mapping` when set, see
                :meth:`use_detector`).
            shapes: ``(N, 5, 2)`` rounded dlib shapes already predicted for these boxes (by
                :class:`DlibLandmark5` with the same model); ``None`` predicts them here.

        Returns:
            ``(shapes, chips)``: ``(N, 5, 2)`` ``float32`` integer-rounded dlib shapes and
            ``(N, 150, 150, 3)`` ``uint8`` BGR chips.
        """
        from facelab.dlib.shape_predictor import predict_many

        if len(boxes) == 0:
            return np.zeros((0, 5, 2), np.float32), np.zeros((0, self.chip_size, self.chip_size, 3), np.uint8)
        if shapes is None:
            shapes = predict_many(self.shape_predictor, image, _shape_boxes(boxes, self.box_mapping), round_points=True)
        shapes = np.asarray(shapes, np.float32).reshape(len(boxes), 5, 2)
        details = [face_chip_details(s, self.chip_size, self.padding) for s in shapes]
        return shapes, np.stack(extract_chips(image, details))

    def embed(self, chips: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Descriptors of dlib chips.

        Args:
            chips: ``(N, 150, 150, 3)`` ``uint8`` **BGR** chips (or one chip).

        Returns:
            ``(N, 128)`` ``float32`` raw (unnormalised) descriptors, as dlib's
            ``compute_face_descriptor``.
        """
        from facelab.runtime.batching import run_in_chunks

        batch = np.asarray(chips)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.size == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        if batch.shape[1:] != (self.chip_size, self.chip_size, 3) or batch.dtype != np.uint8:
            raise ConfigError(f"expected (N, 150, 150, 3) uint8 chips, got {batch.dtype} {batch.shape}")
        (out,) = run_in_chunks(self.session, batch, self.batch_size, lambda c: to_tensor(c, self.normalization))
        return np.asarray(out, np.float32).reshape(len(batch), -1)

    def embed_detections(
        self,
        images: Sequence[np.ndarray],
        detections: Sequence[Detections],
        face_values: Sequence[dict[str, list]] | None = None,
    ) -> list[np.ndarray]:
        """Pipeline protocol: descriptors of every detected face of every image, batched across images.

        Args:
            images: ``(H, W, 3)`` ``uint8`` BGR images.
            detections: one :class:`~facelab.structures.Detections` per image (boxes are enough;
                keypoints are not used).
            face_values: per image, what earlier per-face runners computed; the
                ``"dlib_shape_5"`` shapes of :class:`DlibLandmark5` are reused instead of being
                predicted a second time.

        Returns:
            One ``(n_i, 128)`` ``float32`` array of raw descriptors per image.
        """
        if len(images) != len(detections):
            raise ConfigError(f"got {len(images)} images but {len(detections)} detections")
        all_chips = []
        counts = []
        for i, (image, det) in enumerate(zip(images, detections)):
            known = (face_values[i] if face_values else {}).get("dlib_shape_5")
            shapes = np.asarray(known, np.float32) if known is not None and len(known) == len(det) else None
            _, chips = self.chips(image, det.boxes, shapes)
            all_chips.append(chips)
            counts.append(len(chips))
        if sum(counts) == 0:
            return [np.zeros((0, self.embedding_dim), np.float32) for _ in counts]
        emb = self.embed(np.concatenate(all_chips))
        return list(np.split(emb, np.cumsum(counts)[:-1]))

    def __repr__(self) -> str:
        return f"DlibResNetRecognizer({self.session.path or '<bytes>'}, batch_size={self.batch_size})"


# ---------------------------------------------------------------------------------------------
# The open pack
# ---------------------------------------------------------------------------------------------


def open_pack_card() -> PackCard:
    """The ``open`` pack card (detector, 5-point landmarks, recogniser; CC0).

    File entries name the artefacts :func:`build_open_pack` produces; their SHA-256 are left
    empty because they are generated locally from the installed data package (whose source
    ``.dat`` hashes the converter's own card records).
    """
    from facelab.mtcnn.detector import MTCNN_NORMALIZATION, OPEN_PACK_OPTIONS
    from facelab.mtcnn.fused import FUSED_FILES
    from facelab.zoo.card import FileSpec, ModelCard, PackCard

    geometry = MMODGeometry()
    mtcnn_options = {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(OPEN_PACK_OPTIONS).items()
    }
    detector = ModelCard(
        name="mtcnn_mmod.open_v2",
        task="detection",
        arch="mtcnn_mmod",
        files=tuple(FileSpec(name) for name in FUSED_FILES),
        license="MIT AND CC0-1.0",
        urls=(_MTCNN_SOURCE_URL, _SOURCE_URL),
        color_order=MTCNN_NORMALIZATION.color_order,
        mean=MTCNN_NORMALIZATION.mean,
        std=MTCNN_NORMALIZATION.std,
        source_url=_MTCNN_SOURCE_URL,
        paper=(
            "K. Zhang et al., Joint Face Detection and Alignment using Multi-task Cascaded CNNs, SPL 2016; "
            "D. E. King, Max-Margin Object Detection, arXiv:1502.00046 (2015)"
        ),
        notes=(
            "MTCNN (P/R/O-Net from the PyPI package mtcnn==1.0.0, ipazc/mtcnn, MIT; converted by "
            "facelab.mtcnn.convert) fused with dlib's MMOD (" + _SOURCE + ", converted by facelab.dlib.convert; "
            "run at 512 px on the longer side, for large, masked or turned faces) under one NMS; O-Net verifies "
            "MMOD-only faces and gives every face five keypoints (facelab.mtcnn.fused). Scores are O-Net face "
            "probabilities. det_options: mmod=False (MTCNN alone), mode='fast'/'dlib'/MMODMode (the MMOD part), "
            "min_face, det_thresh, closeup, rotations='auto'."
        ),
        extra={
            "mtcnn": mtcnn_options,
            "mmod_mode": dict(OPEN_MMOD_MODE),
            "mmod": geometry.to_dict(),
            "verify_thresh": 0.5,
            "det_thresh": OPEN_PACK_OPTIONS.thresholds[2],
            "source_files": ["pnet.lz4", "rnet.lz4", "onet.lz4", "mmod_human_face_detector.dat"],
            "source_packages": ["mtcnn==1.0.0", "face-recognition-models==0.3.0"],
        },
    )
    landmarks = ModelCard(
        name="dlib_shape_5.face_v1",
        task="landmark_5",
        arch="dlib_shape_5",
        files=(FileSpec("shape_predictor_5_face_landmarks.dat"),),
        license=_LICENSE,
        urls=(_SOURCE_URL,),
        input_size=(1, 1),
        source_url=_SOURCE_URL,
        paper="V. Kazemi, J. Sullivan, One Millisecond Face Alignment with an Ensemble of Regression Trees, CVPR 2014",
        notes=(
            f"{_SOURCE}. Evaluated in numpy (facelab.dlib.shape_predictor). Points in dlib order: "
            + ", ".join(DLIB_SHAPE_5_NAMES)
            + ". input_size is not used (the model works on a face box)."
        ),
        extra={"points": list(DLIB_SHAPE_5_NAMES)},
    )
    recognizer = ModelCard(
        name="dlib_resnet.face_v1",
        task="recognition",
        arch="dlib_resnet",
        files=(FileSpec("dlib_face_recognition_resnet_model_v1.onnx"),),
        license=_LICENSE,
        urls=(_SOURCE_URL,),
        input_size=(150, 150),
        color_order="RGB",
        mean=(122.782, 117.001, 104.298),
        std=(256.0, 256.0, 256.0),
        align_template="dlib_chip_150_5pt",
        embedding_dim=128,
        source_url=_SOURCE_URL,
        train_data="about 3 million faces (VGG, FaceScrub and web images; dlib's documentation)",
        metrics={"LFW": {"acc": 99.38, "source": "published by dlib"}},
        notes=(
            f"{_SOURCE}. Chips: dlib's get_face_chip_details(shape_5, 150, 0.25) from the 5-point shape "
            "predictor's points (facelab.dlib.chips). dlib's same-person rule: Euclidean distance < 0.6 "
            "on raw descriptors; the cosine equivalent is extra['threshold_cosine']."
        ),
        extra={
            "threshold_cosine": THRESHOLD_COSINE,
            "threshold_euclidean_dlib": THRESHOLD_EUCLIDEAN_DLIB,
            "threshold_calibration": dict(THRESHOLD_CALIBRATION),
            "shape_predictor": "shape_predictor_5_face_landmarks.dat",
            "chip_padding": 0.25,
            "source_file": "dlib_face_recognition_resnet_model_v1.dat",
        },
    )
    return PackCard(
        name=OPEN_PACK_NAME,
        models=(detector, landmarks, recognizer),
        license="MIT AND CC0-1.0",
        source_url=_SOURCE_URL,
        notes=(
            "Offline, commercially usable default built from PyPI packages, converted locally to ONNX (no "
            "download): MTCNN from mtcnn==1.0.0 (MIT, Ivan de Paz Centeno) fused with dlib's MMOD, and dlib's "
            "5-point shape predictor and ResNet recogniser from face-recognition-models 0.3.0 (CC0, Davis E. King)."
        ),
    )


def _bundled(name: str) -> Path:
    from facelab.convert.dlib_reader import bundled_model_path

    return Path(bundled_model_path(name))


def build_open_pack(home: str | os.PathLike | None = None) -> Any:
    """Build (or reuse) the ``open`` pack's files from the installed ``face-recognition-models``, offline.

    The two networks are converted with :func:`facelab.dlib.convert.convert_cached` (cached in
    ``<home>/converted/``, rebuilt only when a source ``.dat`` or the converter changes); the
    converted ``.onnx`` files and the shape predictor ``.dat`` are then linked (or copied) into
    ``<home>/models/open/`` under the names of :func:`open_pack_card`, so the zoo finds the pack
    there too.

    Args:
        home: the facelab home (default ``$FACELAB_HOME`` or ``~/.facelab``).

    Returns:
        A :class:`facelab.zoo.ResolvedPack`: ``(card, path)`` for the detector (``.onnx``), the
        5-point landmarker (``.dat``) and the recogniser (``.onnx``), detection first. The cards
        carry the SHA-256 and size of the files actually built.

    Raises:
        ModelNotFoundError: ``face-recognition-models`` is not installed.
        ModelError: a source file is corrupt.
    """
    import shutil

    from facelab.dlib.convert import convert_cached, facelab_home
    from facelab.mtcnn.convert import convert_cached as convert_mtcnn
    from facelab.zoo import ResolvedPack
    from facelab.zoo._hub import cached_sha256
    from facelab.zoo.card import FileSpec

    pack = open_pack_card()
    folder = facelab_home(home) / "models" / OPEN_PACK_NAME
    folder.mkdir(parents=True, exist_ok=True)

    def place(built: Path, name: str, spec: FileSpec) -> FileSpec:
        target = folder / name
        if not (
            target.is_file() and target.stat().st_size == spec.size_bytes and cached_sha256(target, home) == spec.sha256
        ):
            tmp = target.with_name(target.name + ".tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(built, tmp)
            except OSError:
                shutil.copyfile(built, tmp)
            os.replace(tmp, target)
        return FileSpec(name, spec.sha256, spec.size_bytes)

    def converted(dat_name: str) -> tuple[Path, FileSpec, dict[str, Any], ModelCard]:
        built, conv_card = convert_cached(_bundled(dat_name), home)
        provenance = {k: v for k, v in conv_card.extra.items() if k.startswith("source") or k == "converter_version"}
        return built, conv_card.files[0], provenance, conv_card

    models = []
    for card in pack.models:
        if card.task == "detection":
            mtcnn = convert_mtcnn(home)
            specs = []
            provenance: dict[str, Any] = {}
            for name, path in zip(card.files[:3], mtcnn.paths()):
                net_card = mtcnn.cards[path.stem.removeprefix("mtcnn_")]
                spec = FileSpec(**net_card["files"][0])
                specs.append(place(path, name.filename, spec))
                provenance[path.stem] = {
                    k: v for k, v in net_card["extra"].items() if k.startswith("source") or k == "converter_version"
                }
            built, spec, mmod_provenance, conv_card = converted("mmod_human_face_detector.dat")
            specs.append(place(built, card.files[3].filename, spec))
            provenance["mmod"] = mmod_provenance
            extra = {**card.extra, "provenance": provenance}
            geometry = MMODGeometry.from_card_extra(conv_card.extra, conv_card.mean)
            if geometry is not None:
                extra["mmod"] = geometry.to_dict()
            models.append((card.with_overrides(files=tuple(specs), extra=extra), folder / specs[0].filename))
        elif card.task == "recognition":
            built, spec, provenance, _ = converted("dlib_face_recognition_resnet_model_v1.dat")
            final = place(built, card.files[0].filename, spec)
            models.append(
                (card.with_overrides(files=(final,), extra={**card.extra, **provenance}), folder / final.filename)
            )
        else:
            dat = _bundled("shape_predictor_5_face_landmarks.dat")
            final = place(dat, card.files[0].filename, FileSpec(dat.name, cached_sha256(dat, home), dat.stat().st_size))
            models.append((card.with_overrides(files=(final,)), folder / final.filename))
    models.sort(key=lambda item: item[0].task != "detection")
    return ResolvedPack(OPEN_PACK_NAME, folder, models, card=pack, source="built")


def _member(task: str, home: str | os.PathLike | None) -> tuple[ModelCard, Path]:
    resolved = build_open_pack(home)
    found = resolved.model(task)
    if found is None:  # pragma: no cover - the pack always has the three tasks
        raise ModelError(f"the open pack has no {task} model")
    return found


def open_detector(
    mode: MMODMode | str | dict[str, Any] | None = None,
    runtime: RuntimeOptions | None = None,
    *,
    home: str | os.PathLike | None = None,
    **kwargs: Any,
) -> DlibMMOD:
    """The open pack's dlib MMOD detector alone (on ONNX Runtime; boxes only).

    The pack's default detector is :func:`open_face_detector` (MTCNN fused with this one).

    Args:
        mode: ``"fast"`` (default; :data:`facelab.dlib.mmod.FAST_MODE`), ``"dlib"``
            (:data:`facelab.dlib.mmod.DLIB_MODE`, dlib's own results), or an
            :class:`~facelab.dlib.mmod.MMODMode`.
        runtime: ONNX Runtime providers and threads.
        home: facelab home for the converted files.
        **kwargs: :class:`~facelab.dlib.mmod.DlibMMOD` options (``det_thresh``, ...).
    """
    from facelab.runtime.session import create_session

    card, path = _member("detection", home)
    mmod_path = path.with_name(card.files[-1].filename)
    geometry = MMODGeometry.from_card_extra(card.extra) or MMODGeometry()
    kwargs.pop("det_size", None)
    return DlibMMOD(create_session(mmod_path, runtime), geometry=geometry, mode=mode, **kwargs)


def open_face_detector(
    runtime: RuntimeOptions | None = None, *, home: str | os.PathLike | None = None, **options: Any
) -> Any:
    """The open pack's default detector: MTCNN + MMOD fused, five keypoints per face.

    Args:
        runtime: ONNX Runtime providers and threads.
        home: facelab home for the converted files.
        **options: ``det_options`` of :class:`facelab.mtcnn.fused.MTCNNWithMMOD` (``mmod=False``,
            ``min_face``, ``det_thresh``, ...).

    Returns:
        A :class:`facelab.mtcnn.fused.MTCNNWithMMOD`.
    """
    from facelab.mtcnn.fused import MTCNNWithMMOD

    card, path = _member("detection", home)
    return MTCNNWithMMOD.from_card(card, path, runtime, **options)


def open_landmarker(*, home: str | os.PathLike | None = None) -> DlibLandmark5:
    """The open pack's 5-point landmarker (dlib's shape predictor in numpy)."""
    card, path = _member("landmark_5", home)
    return DlibLandmark5.from_card(card, path)


def open_recognizer(
    runtime: RuntimeOptions | None = None, *, batch_size: int = 16, home: str | os.PathLike | None = None
) -> DlibResNetRecognizer:
    """The open pack's recogniser (dlib ResNet, 128-d, dlib's chips)."""
    card, path = _member("recognition", home)
    return DlibResNetRecognizer.from_card(card, path, runtime, batch_size=batch_size)


def _register() -> None:
    """Add the ``open`` pack to the zoo's registry (once; a no-op when it is already there)."""
    try:
        from facelab.zoo import list_packs, register_pack, register_pack_builder
    except ImportError:  # pragma: no cover - the zoo is part of facelab
        return
    if OPEN_PACK_NAME not in list_packs():
        register_pack(open_pack_card())
    register_pack_builder(OPEN_PACK_NAME, build_open_pack)


_register()
