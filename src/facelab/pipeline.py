"""``FaceAnalyzer``: detect → align → embed → landmarks/attributes, batched across faces and images.

The analyser loads a model pack (a zoo name such as ``"buffalo_l"`` or ``"open"``, or a folder of
ONNX files), builds one runner per task from each model's card through
:data:`facelab.registry.RUNNERS`, and runs them so that every model is called once per chunk
of faces rather than once per face.

Runner protocol (what the pipeline calls; every registered runner class provides it):

* detection: ``detect_batch(images, max_num=0, metric="default") -> list[Detections]``
* recognition: ``embed_detections(images, detections, face_values) -> list[(n_i, D) float32]``,
  where ``face_values`` holds, per image, the values the per-face runners (next item) returned
* every other per-face task: ``predict_detections(images, detections) -> list[dict[str, list]]``,
  one dict per image mapping :class:`~facelab.structures.Face` field names to per-face values.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelab.attributes.quality import face_quality
from facelab.errors import ConfigError, ModelError
from facelab.io.image import ImageSource, load_image
from facelab.recognition.compare import resolve_threshold
from facelab.registry import RUNNERS
from facelab.runtime.session import RuntimeOptions
from facelab.structures import Detections, Face, fill_faces

__all__ = ["FaceAnalyzer", "DEFAULT_PACK", "MODULE_ALIASES", "RUNNER_MODULES", "load_runners"]

_logger = logging.getLogger(__name__)

#: Pack used when none is named: the open (CC0, offline) pack built from dlib's models.
DEFAULT_PACK = "open"

#: Friendly module names accepted in ``modules=`` besides the card task names.
MODULE_ALIASES: dict[str, tuple[str, ...]] = {
    "detection": ("detection",),
    "recognition": ("recognition",),
    "landmarks": ("landmark_2d_106", "landmark_3d_68", "landmark_5"),
    "landmark_2d_106": ("landmark_2d_106",),
    "landmark_3d_68": ("landmark_3d_68",),
    "landmark_5": ("landmark_5",),
    "pose": ("landmark_3d_68",),
    "genderage": ("genderage",),
    "attributes": ("genderage", "attribute"),
    "attribute": ("attribute",),
}

#: Modules whose import registers runner classes in :data:`facelab.registry.RUNNERS`.
RUNNER_MODULES = (
    "facelab.detection",
    "facelab.recognition",
    "facelab.alignment",
    "facelab.attributes",
    "facelab.swap",
    "facelab.dlib.pack",
)


def load_runners() -> None:
    """Import every module that registers runners (cheap after the first call)."""
    for name in RUNNER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


# Order in which per-face tasks run (recognition last, so it can use refined landmarks).
_FACE_TASK_ORDER = ("landmark_5", "landmark_2d_106", "landmark_3d_68", "genderage", "attribute")


def _wanted_tasks(modules: Sequence[str] | None) -> set[str] | None:
    if modules is None:
        return None
    tasks = {"detection"}
    for name in modules:
        if name not in MODULE_ALIASES:
            raise ConfigError(f"unknown module {name!r}; choose from {sorted(MODULE_ALIASES)}")
        tasks.update(MODULE_ALIASES[name])
    return tasks


def _detector_override(detector: Any, home: str | os.PathLike | None) -> tuple[Any, Path]:
    """``(card, path)`` of the ``detector=`` argument of :class:`FaceAnalyzer`.

    Raises:
        ModelError: the file is missing, unreadable or of an unknown signature.
        ConfigError: the model is not a face detector, or the argument has the wrong type.
    """
    from facelab.zoo import ModelCard, identify_model

    if isinstance(detector, tuple):
        if len(detector) != 2 or not isinstance(detector[0], ModelCard):
            raise ConfigError(f"detector=: expected a path or a (ModelCard, path) pair, got {detector!r}")
        card, path = detector[0], Path(detector[1])
        if not path.is_file():
            raise ModelError(f"detector=: model file not found: {path}")
    elif isinstance(detector, (str, os.PathLike)):
        path = Path(detector)
        try:
            card = identify_model(path, home=home)
        except ModelError as exc:
            raise ModelError(f"detector={str(path)!r}: {exc}") from exc
    else:
        raise ConfigError(f"detector=: expected a path or a (ModelCard, path) pair, got {type(detector).__name__}")
    if card.task != "detection":
        raise ConfigError(f"detector={str(path)!r} is a {card.task!r} model ({card.arch}), not a face detector")
    return card, path


class FaceAnalyzer:
    """Analyse faces in images with one model pack.

    Args:
        pack: zoo pack name (``facelab models list``), or a folder of ONNX files classified by
            signature. ``None`` uses :data:`DEFAULT_PACK`.
        modules: tasks to load (see :data:`MODULE_ALIASES`); detection is always loaded.
            ``None`` loads everything in the pack (except face swap, which is separate).
        det_size: ``(width, height)`` to fix the detector input, e.g. ``(640, 640)``; ``None``
            uses the detector's default (InsightFace 1.0+'s auto multi-scale 128 + 640 for SCRFD;
            native size capped at 1280 + 320 for YuNet). YuNet also takes ``"native"`` (exactly
            OpenCV's FaceDetectorYN).
        det_thresh: detection score threshold; ``None`` keeps the detector's own default (0.5 for
            SCRFD/RetinaFace as InsightFace, 0.9 for YuNet as OpenCV, 0.0 for dlib's MMOD).
        det_options: further detector options, passed to its constructor (e.g. ``{"nms_thresh": 0.3}``,
            or ``{"mode": "dlib"}`` for the open pack's MMOD detector).
        detector: replace the pack's detector: the path of an ONNX face detector (identified like
            a pack member: a card JSON beside it, a known SHA-256, else its signature), or a
            ``(ModelCard, path)`` pair. ``det_size``, ``det_thresh`` and ``det_options`` apply to
            it. Example: ``FaceAnalyzer("open", detector="face_detection_yunet_2026may.onnx")``
            (the open pack's dlib shape predictor then maps YuNet's boxes to dlib-like boxes, see
            :data:`facelab.dlib.pack.DLIB_BOX_MAPPINGS`).
        providers: ONNX Runtime providers (``"auto"``, ``["cuda", "cpu"]``, ...); ignored when
            ``runtime`` is given.
        runtime: full :class:`~facelab.runtime.session.RuntimeOptions` (threads, strict mode).
        batch_size: faces per recognition/landmark run call.
        threshold: cosine similarity threshold for "same person"; a float, or the path of a
            calibration JSON written by ``facelab eval calibrate``. Default: the recogniser card's
            documented threshold, if it has one.
        home: model folder root (default ``$FACELAB_HOME`` or ``~/.facelab``).
        download: allow downloading a missing pack.
        max_pixels: decompression-bomb limit for decoded images.

    Example:
        >>> fa = FaceAnalyzer()                              # doctest: +SKIP
        >>> faces = fa.analyze("group.jpg")                   # doctest: +SKIP
        >>> faces[0].bbox, faces[0].normed_embedding.shape    # doctest: +SKIP
    """

    def __init__(
        self,
        pack: str | os.PathLike | None = None,
        *,
        modules: Sequence[str] | None = None,
        det_size: tuple[int, int] | str | None = None,
        det_thresh: float | None = None,
        det_options: dict[str, Any] | None = None,
        detector: str | os.PathLike | tuple[Any, str | os.PathLike] | None = None,
        providers: str | Sequence[Any] = "auto",
        runtime: RuntimeOptions | None = None,
        batch_size: int = 32,
        threshold: float | str | os.PathLike | None = None,
        home: str | os.PathLike | None = None,
        download: bool = True,
        max_pixels: int | None = None,
    ) -> None:
        from facelab.zoo import resolve_pack

        load_runners()
        self.runtime = runtime or RuntimeOptions(providers=providers)
        self.max_pixels = max_pixels
        wanted = _wanted_tasks(modules)
        override = None if detector is None else _detector_override(detector, home)
        resolved = resolve_pack(DEFAULT_PACK if pack is None else pack, home=home, download=download)
        self.pack_name = resolved.name
        self.models: dict[str, Any] = {}
        self.cards: dict[str, Any] = {}
        self.paths: dict[str, Path] = {}  # model file per task (the gallery hashes the recogniser's)
        members = list(resolved.models)
        if override is not None:
            members = [override] + [(card, path) for card, path in members if card.task != "detection"]
        for card, path in members:
            task = card.task
            if task == "swap" or task in self.models or (wanted is not None and task not in wanted):
                continue
            # A runner registered for "task.arch" (e.g. "recognition.dlib_resnet") wins over the task's.
            runner_name = f"{task}.{card.arch}" if f"{task}.{card.arch}" in RUNNERS else task
            if runner_name not in RUNNERS:
                _logger.info("%s: no runner for task %r; skipped", path, task)
                continue
            options: dict[str, Any] = {"batch_size": batch_size}
            if task == "detection":
                options = dict(det_options or {})
                if det_thresh is not None:
                    options["det_thresh"] = float(det_thresh)
                if det_size is not None:
                    # "auto"/"native" (YuNet) pass through; sizes become tuples
                    options["det_size"] = det_size if isinstance(det_size, str) else tuple(det_size)
            try:
                self.models[task] = RUNNERS.get(runner_name).from_card(card, Path(path), self.runtime, **options)
            except TypeError as exc:  # an option the runner does not take
                raise ConfigError(f"{card.name}: unsupported option for its {task} runner: {exc}") from exc
            self.cards[task] = card
            self.paths[task] = Path(path)
        if "detection" not in self.models:
            raise ModelError(f"pack {self.pack_name!r} has no usable face detector")
        for task, runner in self.models.items():
            adapt = getattr(runner, "use_detector", None)  # e.g. dlib's shape predictor: box mapping
            if task != "detection" and adapt is not None:
                adapt(self.cards["detection"].arch)
        if wanted is not None and (missing := sorted(wanted - set(self.models) - {"landmark_5", "attribute"})):
            _logger.warning("pack %r has no model for %s", self.pack_name, missing)
        self.threshold = self._resolve_threshold(threshold)
        _logger.info("FaceAnalyzer(%s): %s", self.pack_name, {t: c.name for t, c in self.cards.items()})

    def _resolve_threshold(self, threshold: float | str | os.PathLike | None) -> float | None:
        # One rule for every threshold user (the gallery too): facelab.recognition.compare.resolve_threshold.
        return resolve_threshold(threshold, self.cards.get("recognition"))

    @property
    def detector(self) -> Any:
        """The detection runner."""
        return self.models["detection"]

    @property
    def recognizer(self) -> Any | None:
        """The recognition runner, or ``None`` when the pack (or ``modules``) has none."""
        return self.models.get("recognition")

    def detect(self, image: ImageSource, max_num: int = 0, metric: str = "default") -> Detections:
        """Run only the detector on one image; see :class:`~facelab.structures.Detections`."""
        return self.detector.detect_batch([self._load(image)], max_num=max_num, metric=metric)[0]

    def analyze(self, image: ImageSource, max_num: int = 0, metric: str = "default") -> list[Face]:
        """Analyse one image.

        Args:
            image: path, bytes, ``(H, W, 3)`` ``uint8`` BGR array, or PIL image.
            max_num: keep at most this many faces (0 = all), chosen by ``metric``.
            metric: ``"default"`` (large and central first, as InsightFace) or ``"max"`` (largest).

        Returns:
            Faces in detector order (score-descending, or by ``metric`` when ``max_num`` is set).
        """
        return self.analyze_batch([image], max_num=max_num, metric=metric)[0]

    def analyze_batch(
        self, images: Sequence[ImageSource], max_num: int = 0, metric: str = "default"
    ) -> list[list[Face]]:
        """Analyse several images; every model runs on all their faces together, in chunks.

        Returns:
            One list of :class:`~facelab.structures.Face` per input image, in input order.
        """
        arrays = [self._load(img) for img in images]
        if not arrays:
            return []
        dets = self.detector.detect_batch(arrays, max_num=max_num, metric=metric)
        faces = [
            [
                Face(bbox=d.boxes[i], score=float(d.scores[i]), kps=None if d.kps is None else d.kps[i])
                for i in range(len(d))
            ]
            for d in dets
        ]
        if not any(faces):
            return faces
        for image, per_image in zip(arrays, faces):
            for face in per_image:
                face.quality = face_quality(image, face.bbox, face.kps, face.score)
        # What the per-face runners computed, per image; the recogniser may reuse it (dlib's
        # recogniser aligns on the landmark runner's shapes instead of predicting them again).
        face_values: list[dict[str, list]] = [{} for _ in arrays]
        for task in _FACE_TASK_ORDER:
            runner = self.models.get(task)
            if runner is None:
                continue
            values = runner.predict_detections(arrays, dets)
            fill_faces(faces, values)
            for merged, per_image in zip(face_values, values):
                merged.update(per_image)
        recognizer = self.recognizer
        if recognizer is not None:
            embedded = recognizer.embed_detections(arrays, dets, face_values)
            for per_image, embeddings in zip(faces, embedded):
                for face, emb in zip(per_image, embeddings):
                    face.embedding = np.asarray(emb, dtype=np.float32)
                    face.model = self.cards["recognition"].name
        return faces

    def _load(self, image: ImageSource) -> np.ndarray:
        return load_image(image, max_pixels=self.max_pixels)

    def is_same(self, similarity: float) -> bool | None:
        """Apply the analyser's threshold to a cosine similarity (``None`` when no threshold is known)."""
        return None if self.threshold is None else bool(similarity >= self.threshold)

    def draw(self, image: ImageSource, faces: Sequence[Face]) -> np.ndarray:
        """Return a BGR copy of ``image`` with ``faces`` drawn (see :func:`facelab.viz.draw`)."""
        from facelab.viz import draw

        return draw(self._load(image), faces)
