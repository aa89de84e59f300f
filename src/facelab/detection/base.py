"""The one interface of every face detector, its registry, and the ``"detection"`` runner dispatcher.

A detector wraps one ONNX Runtime session and turns images into :class:`~facelab.structures.Detections`:

* :meth:`Detector.detect` takes one image, anything :func:`facelab.io.load_image` accepts (a path,
  encoded bytes, a PIL image or a ``(H, W, 3)`` ``uint8`` **BGR** array);
* :meth:`Detector.detect_batch` takes a list of them and runs the network once per chunk of
  ``max_batch`` images when the model's batch axis is dynamic (one run per input size), looping
  otherwise.

Architectures register their class in :data:`DETECTORS` under their model-card ``arch``
(``"scrfd"``, ``"retinaface"``, ``"yunet"``). ONE runner is registered in
:data:`facelab.registry.RUNNERS` under the task ``"detection"``; it picks the class by
``card.arch``.

Contract of a registered class: ``from_card(card, path, runtime=None, **overrides)`` and
``from_path(path, runtime=None, **kwargs)`` constructors, and ``_detect_images(images)`` returning
one :class:`Detections` per ``(H, W, 3)`` ``uint8`` BGR image, after NMS and before ``max_num``.
"""

from __future__ import annotations

import abc
import importlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from facelab.errors import ConfigError, ModelError
from facelab.ops.boxes import MAX_NUM_METRICS, select_max_num
from facelab.ops.normalize import Normalization, to_tensor
from facelab.registry import RUNNERS, Registry
from facelab.structures import Detections

if TYPE_CHECKING:
    from facelab.io.image import ImageSource
    from facelab.runtime.session import OrtSession, RuntimeOptions
    from facelab.zoo.card import ModelCard

__all__ = [
    "Detector",
    "DETECTORS",
    "DetectionRunner",
    "register_detector",
    "normalize_sizes",
    "parse_rotations",
    "unrotate_detections",
    "unrotate_points",
    "ROTATIONS",
]

_logger = logging.getLogger(__name__)

#: Detector classes by model-card ``arch``.
DETECTORS: Registry = Registry("detector architecture")

#: Architectures whose detector class lives outside this package, by the module that registers it.
ARCH_MODULES = {
    "dlib_mmod": "facelab.dlib.mmod",
    "mtcnn": "facelab.mtcnn.detector",
    "mtcnn_mmod": "facelab.mtcnn.fused",
}

#: ``rotations`` values: quarter turns (``np.rot90``'s ``k``, counter-clockwise) tried in turn.
ROTATIONS = {"none": (), "off": (), "auto": (3, 2, 1)}


def register_detector(arch: str) -> Any:
    """Class decorator: register a :class:`Detector` subclass under ``arch`` in :data:`DETECTORS`."""
    return DETECTORS.register(arch)


def normalize_sizes(det_size: Any) -> list[tuple[int, int]] | None:
    """Turn a ``det_size`` argument into a list of ``(width, height)`` pairs.

    Args:
        det_size: ``None`` or ``"auto"`` (the detector's own default, multi-scale where it has
            one), one ``(width, height)`` pair, an int (a square side), or a sequence of pairs.
            ``(0, 0)`` stands for InsightFace's Auto sizes ``[(128, 128), (640, 640)]``.

    Returns:
        Distinct sizes in the given order, or ``None`` for ``None`` / ``"auto"``.

    Raises:
        ConfigError: for malformed or non-positive sizes.
    """
    if det_size is None or (isinstance(det_size, str) and det_size.strip().lower() == "auto"):
        return None
    if isinstance(det_size, (int, np.integer)):
        det_size = (int(det_size), int(det_size))
    items = list(det_size) if isinstance(det_size, (list, tuple, np.ndarray)) else None
    if not items:
        raise ConfigError(f"det_size must be (width, height) or a list of them, not {det_size!r}")
    if not isinstance(items[0], (list, tuple, np.ndarray)):
        items = [items]
    sizes: list[tuple[int, int]] = []
    for item in items:
        if len(item) != 2:
            raise ConfigError(f"det_size entries must be (width, height) pairs, not {item!r}")
        width, height = int(item[0]), int(item[1])
        if width == 0 and height == 0:
            new = [(128, 128), (640, 640)]
        elif width <= 0 or height <= 0:
            raise ConfigError(f"det_size values must be positive, not {item!r}")
        else:
            new = [(width, height)]
        sizes.extend(s for s in new if s not in sizes)
    return sizes


def parse_rotations(value: Any) -> tuple[int, ...]:
    """Turn a ``rotations`` option into the quarter turns to retry when an image has no face.

    Args:
        value: ``None``/``"none"``/``False`` (no retry), ``"auto"`` or ``True`` (90, 180 and 270
            degrees clockwise), or a sequence of clockwise angles among 90, 180, 270.

    Returns:
        ``np.rot90`` ``k`` values (counter-clockwise quarter turns), in trial order.

    Raises:
        ConfigError: anything else.

    Example:
        >>> parse_rotations("auto"), parse_rotations([90]), parse_rotations(None)
        ((3, 2, 1), (3,), ())
    """
    if value is None or value is False:
        return ()
    if value is True:
        return ROTATIONS["auto"]
    if isinstance(value, str):
        key = value.strip().lower()
        if key not in ROTATIONS:
            raise ConfigError(f"rotations must be 'auto', 'none' or a list of 90/180/270, not {value!r}")
        return ROTATIONS[key]
    try:
        angles = [int(a) for a in value]
    except (TypeError, ValueError):
        raise ConfigError(f"rotations must be 'auto', 'none' or a list of 90/180/270, not {value!r}") from None
    if any(a not in (90, 180, 270) for a in angles):
        raise ConfigError(f"rotation angles must be 90, 180 or 270 (clockwise), not {angles}")
    return tuple((4 - a // 90) % 4 for a in dict.fromkeys(angles))


def unrotate_points(points: np.ndarray, k: int, height: float, width: float) -> np.ndarray:
    """Points found in ``np.rot90(image, k)`` → the image's frame (continuous pixel coordinates).

    Args:
        points: ``(..., 2)`` ``(x, y)`` in the turned image.
        k: counter-clockwise quarter turns that produced it (``np.rot90``'s ``k``).
        height: the unturned image's height (1 for coordinates normalised to a square's side).
        width: its width.

    Returns:
        ``(..., 2)`` ``(x, y)`` in the unturned image.
    """
    x, y = points[..., 0], points[..., 1]
    k %= 4
    if k == 1:
        x, y = width - y, x
    elif k == 2:
        x, y = width - x, height - y
    elif k == 3:
        x, y = y, height - x
    return np.stack([x, y], axis=-1)


def unrotate_detections(dets: Detections, k: int, shape: Sequence[int]) -> Detections:
    """Map detections of ``np.rot90(image, k)`` back to ``image`` (of shape ``shape``).

    Boxes become the axis-aligned boxes of the mapped corners; keypoints keep their order (the
    subject's eyes stay the subject's eyes, so aligning on them turns the face upright).
    """
    if len(dets) == 0:
        return dets
    h, w = int(shape[0]), int(shape[1])
    b = dets.boxes.astype(np.float64)
    corners = unrotate_points(np.stack([b[:, :2], b[:, 2:]], axis=1), k, h, w)
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    kps = None if dets.kps is None else unrotate_points(dets.kps.astype(np.float64), k, h, w)
    return Detections(boxes, dets.scores, kps)


class Detector(abc.ABC):
    """Base class of facelab's face detectors.

    Attributes:
        session: the :class:`~facelab.runtime.session.OrtSession`.
        det_thresh: score threshold; candidates with ``score >= det_thresh`` are kept.
        nms_thresh: NMS IoU threshold.
        normalization: how images become the network input tensor.
        max_batch: most images per network run in :meth:`detect_batch`.
        card: the model card, when built from one.
    """

    #: Model-card ``arch`` of the class.
    arch: ClassVar[str] = ""
    #: Default normalisation when no card gives one.
    default_normalization: ClassVar[Normalization] = Normalization()
    #: Default thresholds.
    default_det_thresh: ClassVar[float] = 0.5
    default_nms_thresh: ClassVar[float] = 0.4
    #: Quarter turns retried on images where nothing is found (:func:`parse_rotations`; the
    #: ``rotations`` option of :class:`DetectionRunner`, ``det_options={"rotations": "auto"}``).
    rotations: tuple[int, ...] = ()

    def __init__(
        self,
        session: OrtSession,
        *,
        det_thresh: float | None = None,
        nms_thresh: float | None = None,
        normalization: Normalization | None = None,
        max_batch: int = 16,
        card: ModelCard | None = None,
    ) -> None:
        self.session = session
        self.det_thresh = float(self.default_det_thresh if det_thresh is None else det_thresh)
        self.nms_thresh = float(self.default_nms_thresh if nms_thresh is None else nms_thresh)
        self.normalization = normalization or self.default_normalization
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, not {max_batch}")
        self.max_batch = int(max_batch)
        self.card = card
        if len(session.inputs) != 1 or len(session.inputs[0].shape) != 4:
            raise ModelError(f"{self._label}: a detector needs one NCHW input, got {session.inputs}")
        self.input_name = session.inputs[0].name
        self.input_dtype = np.float16 if "float16" in session.inputs[0].dtype else np.float32

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def from_path(cls, path: str | Path, runtime: RuntimeOptions | None = None, **kwargs: Any) -> Detector:
        """Load an ``.onnx`` file with ONNX Runtime and wrap it.

        Args:
            path: the model file.
            runtime: providers and threads (default :class:`~facelab.runtime.session.RuntimeOptions()`).
            **kwargs: constructor arguments (``det_size``, ``det_thresh``, ``nms_thresh``, ...).

        Raises:
            ModelError: missing, unloadable or not of this architecture's signature.
        """
        from facelab.runtime.session import create_session

        return cls(create_session(path, runtime), **kwargs)

    @classmethod
    def from_card(
        cls, card: ModelCard, path: str | Path, runtime: RuntimeOptions | None = None, **overrides: Any
    ) -> Detector:
        """Build from a model card and its file on disk.

        The card supplies the normalisation (``color_order``, ``mean``, ``std``), a fixed
        ``input_size`` (used as ``det_size``) and, in ``card.extra``, optional ``det_thresh``,
        ``nms_thresh`` and ``det_size``; ``overrides`` win over the card.
        """
        if card.task != "detection":
            raise ModelError(f"model card {card.name!r} is a {card.task!r} model, not a detector")
        kwargs: dict[str, Any] = {"normalization": card.normalization, "card": card}
        if card.input_size is not None:
            kwargs["det_size"] = tuple(card.input_size)
        for key in cls._card_keys():
            if key in card.extra:
                kwargs[key] = card.extra[key]
        kwargs.update(overrides)
        return cls.from_path(path, runtime, **kwargs)

    @classmethod
    def _card_keys(cls) -> tuple[str, ...]:
        return ("det_thresh", "nms_thresh", "det_size", "max_batch")

    # ---------------------------------------------------------------------------------- public

    @property
    def with_kps(self) -> bool:
        """Whether this model predicts five keypoints."""
        return True

    @property
    def supports_batch(self) -> bool:
        """Whether one network run can take several images (dynamic batch axis, batched outputs)."""
        batch = self.session.inputs[0].shape[0]
        return batch is None and all(len(o.shape) >= 3 for o in self.session.outputs)

    def detect(self, image: ImageSource, max_num: int = 0, metric: str = "default") -> Detections:
        """Detect faces in one image.

        Args:
            image: a path, bytes, PIL image or ``(H, W, 3)`` ``uint8`` BGR array.
            max_num: keep at most this many faces (``0`` = all), chosen by ``metric``.
            metric: ``"default"`` (large and near the image centre) or ``"max"`` (largest), as
                InsightFace.

        Returns:
            :class:`~facelab.structures.Detections` in image pixels: boxes ``(N, 4)`` ``float32``
            ``[x1, y1, x2, y2]``, scores ``(N,)``, keypoints ``(N, 5, 2)`` (``None`` for a model
            without keypoints), best score first (or in ``max_num`` order).

        Raises:
            ImageError: the image cannot be read.
            ConfigError: unknown ``metric``.
        """
        return self.detect_batch([image], max_num=max_num, metric=metric)[0]

    def detect_batch(
        self, images: Sequence[ImageSource], max_num: int = 0, metric: str = "default"
    ) -> list[Detections]:
        """Detect faces in several images; see :meth:`detect` for arguments and results.

        Images of different sizes are fine. With a dynamic batch axis the network runs once per
        chunk of :attr:`max_batch` images (and input size); otherwise once per image.
        Results equal those of :meth:`detect` image by image.
        """
        from facelab.io.image import load_image

        if metric not in MAX_NUM_METRICS:
            raise ConfigError(f"metric must be one of {MAX_NUM_METRICS}, not {metric!r}")
        if isinstance(images, (str, bytes, np.ndarray)) or not isinstance(images, Sequence):
            raise ConfigError("detect_batch takes a list of images; use detect() for one image")
        loaded = [load_image(image) for image in images]
        results: list[Detections] = []
        for start in range(0, len(loaded), self.max_batch):
            chunk = loaded[start : start + self.max_batch]
            found = self._detect_images(chunk)
            if self.rotations:
                found = self._retry_rotated(chunk, found)
            for img, dets in zip(chunk, found):
                keep = select_max_num(dets.boxes, img.shape, max_num, metric)
                results.append(dets if len(keep) == len(dets) else dets.select(keep))
        return results

    def _retry_rotated(self, images: list[np.ndarray], found: list[Detections]) -> list[Detections]:
        """For images without a face, the best of :attr:`rotations` (highest top score), mapped back."""
        empty = [i for i, d in enumerate(found) if len(d) == 0]
        if not empty:
            return found
        found = list(found)
        best: dict[int, tuple[float, Detections]] = {}
        for k in self.rotations:
            turned = [np.ascontiguousarray(np.rot90(images[i], k)) for i in empty]
            for i, dets in zip(empty, self._detect_images(turned)):
                if len(dets) and (i not in best or float(dets.scores.max()) > best[i][0]):
                    best[i] = (float(dets.scores.max()), unrotate_detections(dets, k, images[i].shape))
        for i, (_, dets) in best.items():
            found[i] = dets
        return found

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._label}, det_thresh={self.det_thresh}, nms_thresh={self.nms_thresh})"

    # -------------------------------------------------------------------------------- internals

    @property
    def _label(self) -> str:
        return str(self.session.path) if self.session.path else "<bytes>"

    @abc.abstractmethod
    def _detect_images(self, images: list[np.ndarray]) -> list[Detections]:
        """One :class:`Detections` per BGR image, after NMS, before ``max_num``."""

    def _run(self, canvases: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Run equally sized ``(H, W, 3)`` ``uint8`` BGR canvases; per canvas, the outputs without batch axis.

        One ``session.run`` for all canvases when :attr:`supports_batch`; a loop otherwise.
        Outputs of rank ≥ 3 lose their leading (batch) axis; rank-2 outputs (SCRFD exports
        without batch axis) are returned as they are.
        """
        if not canvases:
            return []
        names = [o.name for o in self.session.outputs]
        if len(canvases) > 1 and self.supports_batch:
            blob = to_tensor(np.stack(canvases), self.normalization, self.input_dtype)
            outs = self.session.run({self.input_name: blob}, names)
            return [[np.asarray(o[i], dtype=np.float32) for o in outs] for i in range(len(canvases))]
        per_image = []
        for canvas in canvases:
            outs = self.session.run({self.input_name: to_tensor(canvas, self.normalization, self.input_dtype)}, names)
            per_image.append([np.asarray(o[0] if o.ndim >= 3 else o, dtype=np.float32) for o in outs])
        return per_image

    def _fixed_input_size(self) -> tuple[int, int] | None:
        """``(width, height)`` when the graph fixes both spatial axes, else ``None``."""
        height, width = self.session.inputs[0].shape[2:4]
        if height is None or width is None:
            return None
        return int(width), int(height)

    def _single_det_size(self, det_size: Any) -> tuple[int, int] | None:
        """The one input size of a detector that runs every image at a single size.

        The graph's fixed ``(width, height)`` wins; else ``det_size`` (one size) or ``None``
        (each image at its own size).

        Raises:
            ConfigError: ``det_size`` lists more than one size.
        """
        fixed = self._fixed_input_size()
        if fixed is not None:
            return fixed
        sizes = normalize_sizes(det_size)
        if sizes is None:
            return None
        if len(sizes) == 1:
            return sizes[0]
        raise ConfigError(f"{type(self).__name__} takes one det_size, not {sizes}")


@RUNNERS.register("detection")
class DetectionRunner:
    """The ``"detection"`` runner: builds the detector class registered for ``card.arch``."""

    @staticmethod
    def from_card(
        card: ModelCard, path: str | Path, runtime: RuntimeOptions | None = None, **overrides: Any
    ) -> Detector:
        """Build the detector of ``card.arch`` (see :data:`DETECTORS`).

        Raises:
            ModelError: no detector is registered for the card's architecture.
        """
        import facelab.detection  # noqa: F401  (registers every architecture)

        module = ARCH_MODULES.get(card.arch)
        if module is not None and card.arch not in DETECTORS:
            importlib.import_module(module)  # registers the class (kept out of the import graph)
        if card.arch not in DETECTORS:
            raise ModelError(
                f"model card {card.name!r}: no detector for architecture {card.arch!r}; known: {DETECTORS.names()}"
            )
        rotations = parse_rotations(overrides.pop("rotations", None))
        detector = DETECTORS.get(card.arch).from_card(card, path, runtime, **overrides)
        detector.rotations = rotations
        return detector
