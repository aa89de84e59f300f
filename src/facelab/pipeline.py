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

Runners are built with ``from_card(card, path, runtime, **options)``, one per task; a runner
class that fuses several models of one task (liveness) defines ``from_cards(members, runtime,
**options)`` and gets every member of its task at once.

Liveness is an add-on: its models come from the ``liveness`` pack (Silent-Face-Anti-Spoofing,
Apache-2.0), loaded beside the main pack when ``modules`` asks for ``"liveness"``
(``FaceAnalyzer("buffalo_l", modules=["recognition", "liveness"])``; ``modules=["all",
"liveness"]`` keeps every model of the main pack). It is not loaded by ``modules=None``.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab.attributes.quality import face_quality
from facelab.errors import ConfigError, ModelError
from facelab.io.image import ImageSource, load_image
from facelab.recognition.compare import resolve_threshold
from facelab.registry import RUNNERS
from facelab.runtime.session import RuntimeOptions
from facelab.structures import Detections, Face, fill_faces

if TYPE_CHECKING:
    from facelab.zoo import ResolvedPack

__all__ = [
    "FaceAnalyzer",
    "DEFAULT_PACK",
    "MODULE_ALIASES",
    "ADDON_PACKS",
    "RUNNER_MODULES",
    "build_runner",
    "load_runners",
    "runner_name",
]

_logger = logging.getLogger(__name__)

#: Pack used when none is named: the open (CC0, offline) pack built from dlib's models.
DEFAULT_PACK = "open"

#: Friendly module names accepted in ``modules=`` besides the card task names.
MODULE_ALIASES: dict[str, tuple[str, ...]] = {
    "detection": ("detection",),
    "recognition": ("recognition",),
    "landmarks": ("landmark_2d_106", "landmark_3d_68", "landmark_5", "landmark_2d_68", "landmark_2d_98"),
    "landmark_2d_106": ("landmark_2d_106",),
    "landmark_3d_68": ("landmark_3d_68",),
    "landmark_5": ("landmark_5",),
    "pose": ("landmark_3d_68",),
    "genderage": ("genderage",),
    "attributes": ("genderage", "attribute"),
    "attribute": ("attribute",),
    "liveness": ("liveness",),
    "all": (),  # every model of the main pack (with "liveness": everything plus liveness)
}

#: Modules whose import registers runner classes in :data:`facelab.registry.RUNNERS`.
RUNNER_MODULES = (
    "facelab.detection",
    "facelab.recognition",
    "facelab.alignment",
    "facelab.attributes",
    "facelab.swap",
    "facelab.liveness",
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


def runner_name(card: Any) -> str | None:
    """Name in :data:`facelab.registry.RUNNERS` of the runner for ``card``, or ``None`` when none is registered.

    A runner registered for ``"<task>.<arch>"`` (e.g. ``"recognition.dlib_resnet"``) wins over the task's.
    """
    load_runners()
    for name in (f"{card.task}.{card.arch}", card.task):
        if name in RUNNERS:
            return name
    return None


def build_runner(card: Any, path: str | os.PathLike, runtime: RuntimeOptions | None = None, **options: Any) -> Any:
    """Load the runner of one model: the class :func:`runner_name` picks, built ``from_card``.

    Args:
        card: the model's :class:`~facelab.zoo.card.ModelCard`.
        path: its file.
        runtime: providers and threads.
        **options: runner options (``batch_size``; ``det_size``/``det_thresh``/... for detectors).

    Raises:
        ModelError: no runner is registered for the card's task.
        ConfigError: an option the runner does not take.
    """
    name = runner_name(card)
    if name is None:
        raise ModelError(f"{card.name}: facelab has no runner for task {card.task!r}")
    try:
        return RUNNERS.get(name).from_card(card, Path(path), runtime, **options)
    except TypeError as exc:  # an option the runner does not take
        raise ConfigError(f"{card.name}: unsupported option for its {card.task} runner: {exc}") from exc


# Order in which per-face tasks run (recognition last, so it can use refined landmarks).
_FACE_TASK_ORDER = (
    "landmark_5",
    "landmark_2d_106",
    "landmark_3d_68",
    "landmark_2d_68",  # trained with facelab train landmarks; stored in face.attributes
    "landmark_2d_98",
    "genderage",
    "attribute",
    "liveness",
)

#: Add-on tasks and the pack their models come from when the main pack has none.
ADDON_PACKS = {"liveness": "liveness"}


def _wanted_tasks(modules: Sequence[str] | None) -> set[str] | None:
    """Tasks to load from the main pack (``None`` = all of them); unknown names raise ``ConfigError``."""
    if modules is None:
        return None
    if isinstance(modules, str):
        raise ConfigError(f"modules must be a list of names such as [{modules!r}], not a string")
    tasks = {"detection"}
    for name in modules:
        if name not in MODULE_ALIASES:
            raise ConfigError(f"unknown module {name!r}; choose from {sorted(MODULE_ALIASES)}")
        tasks.update(MODULE_ALIASES[name])
    return None if "all" in modules else tasks


def _wanted_addons(modules: Sequence[str] | None) -> list[str]:
    """Add-on tasks (:data:`ADDON_PACKS`) that ``modules`` asks for explicitly."""
    if modules is None:
        return []
    return [task for task in ADDON_PACKS if any(task in MODULE_ALIASES.get(name, ()) for name in modules)]


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


def _faces_with_quality(arrays: Sequence[np.ndarray], dets: Sequence[Detections]) -> list[list[Face]]:
    """One :class:`Face` per detection, with its quality (see :mod:`facelab.attributes.quality`)."""
    faces = []
    for image, d in zip(arrays, dets):
        per_image = []
        for i in range(len(d)):
            kps = None if d.kps is None else d.kps[i]
            face = Face(bbox=d.boxes[i], score=float(d.scores[i]), kps=kps)
            face.quality = face_quality(image, face.bbox, face.kps, face.score)
            per_image.append(face)
        faces.append(per_image)
    return faces


class FaceAnalyzer:
    """Analyse faces in images with one model pack.

    Args:
        pack: zoo pack name (``facelab models list``), a folder of ONNX files classified by
            signature, or an already resolved :class:`~facelab.zoo.ResolvedPack`. ``None`` uses
            :data:`DEFAULT_PACK`.
        modules: tasks to load (see :data:`MODULE_ALIASES`); detection is always loaded.
            ``None`` loads everything in the pack (except face swap, which is separate), as does
            ``"all"``. ``"liveness"`` adds the liveness models of ``liveness_pack``.
        det_size: ``(width, height)`` to fix the detector input, e.g. ``(640, 640)``; ``None`` or
            ``"auto"`` uses the detector's own default (InsightFace 1.0+'s auto multi-scale 128 + 640
            for SCRFD; 640 x 640 for RetinaFace; native size capped at 1280 + 320 for YuNet; the
            image pyramid for MTCNN and MMOD). YuNet also takes ``"native"`` (exactly OpenCV's
            FaceDetectorYN).
        det_thresh: detection score threshold; ``None`` keeps the detector's own default (0.5 for
            SCRFD/RetinaFace as InsightFace, 0.9 for YuNet as OpenCV, 0.0 for dlib's MMOD).
        det_options: further detector options, passed to its constructor (e.g. ``{"nms_thresh": 0.3}``;
            for the open pack ``{"mmod": False}`` (MTCNN alone), ``{"mode": "dlib"}`` (its MMOD part in
            dlib's mode), ``{"min_face": 40}``); ``{"rotations": "auto"}`` works for every detector:
            an image where nothing is found is tried again turned by 90, 180 and 270 degrees, and
            the best turn's boxes and keypoints are mapped back to the image.
        detector: replace the pack's detector: the path of an ONNX face detector (identified like
            a pack member: a card JSON beside it, a known SHA-256, else its signature), or a
            ``(ModelCard, path)`` pair. ``det_size``, ``det_thresh`` and ``det_options`` apply to
            it. Example: ``FaceAnalyzer("open", detector="face_detection_yunet_2026may.onnx")``
            (the open pack's dlib shape predictor then maps YuNet's boxes to dlib-like boxes, see
            :data:`facelab.dlib.pack.DLIB_BOX_MAPPINGS`).
        providers: ONNX Runtime providers (``"auto"``, ``["cuda", "cpu"]``, ...); ignored when
            ``runtime`` is given.
        runtime: full :class:`~facelab.runtime.session.RuntimeOptions` (threads, strict mode).
        batch_size: faces per recognition/landmark run call (liveness runs in chunks of its own,
            :data:`facelab.liveness.runner.LIVENESS_BATCH`).
        threshold: cosine similarity threshold for "same person"; a float, or the path of a
            calibration JSON written by ``facelab eval calibrate``. Default: the recogniser card's
            documented threshold, if it has one.
        home: model folder root (default ``$FACELAB_HOME`` or ``~/.facelab``).
        download: allow downloading a missing pack.
        max_pixels: decompression-bomb limit for decoded images.
        liveness_pack: pack of the liveness models when ``modules`` has ``"liveness"`` and the
            main pack has none (default ``"liveness"``, downloaded on first use unless
            ``download=False``).
        liveness_threshold: ``is_live`` threshold on the fused real-face probability (default
            :data:`facelab.liveness.LIVENESS_THRESHOLD`, 0.5).

    Example:
        >>> fa = FaceAnalyzer()                              # doctest: +SKIP
        >>> faces = fa.analyze("group.jpg")                   # doctest: +SKIP
        >>> faces[0].bbox, faces[0].normed_embedding.shape    # doctest: +SKIP
    """

    def __init__(
        self,
        pack: str | os.PathLike | ResolvedPack | None = None,
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
        liveness_pack: str | os.PathLike | None = None,
        liveness_threshold: float | None = None,
    ) -> None:
        from facelab.zoo import ResolvedPack, resolve_pack

        load_runners()
        self.runtime = runtime or RuntimeOptions(providers=providers)
        self.max_pixels = max_pixels
        wanted = _wanted_tasks(modules)
        override = None if detector is None else _detector_override(detector, home)
        if isinstance(pack, ResolvedPack):
            resolved = pack
        else:
            resolved = resolve_pack(DEFAULT_PACK if pack is None else pack, home=home, download=download)
        self.pack_name = resolved.name
        self.models: dict[str, Any] = {}
        self.cards: dict[str, Any] = {}
        self.paths: dict[str, Path] = {}  # model file per task (the gallery hashes the recogniser's)
        members = list(resolved.models)
        if override is not None:
            members = [override] + [(card, path) for card, path in members if card.task != "detection"]
        for task in _wanted_addons(modules):
            if not any(card.task == task for card, _ in members):
                name = liveness_pack if task == "liveness" and liveness_pack is not None else ADDON_PACKS[task]
                addon = resolve_pack(name, home=home, download=download)
                found = [(card, path) for card, path in addon.models if card.task == task]
                if not found:
                    raise ModelError(f"pack {addon.name!r} has no {task} model")
                members += found
        multi: dict[str, tuple[Any, list[tuple[Any, Path]]]] = {}
        for card, path in members:
            task = card.task
            if task == "swap" or task in self.models or (wanted is not None and task not in wanted):
                continue
            name = runner_name(card)
            if name is None:
                _logger.info("%s: no runner for task %r; skipped", path, task)
                continue
            if hasattr(RUNNERS.get(name), "from_cards"):  # fuses every model of its task
                multi.setdefault(task, (RUNNERS.get(name), []))[1].append((card, Path(path)))
                continue
            options: dict[str, Any] = {"batch_size": batch_size}
            if task == "detection":
                options = dict(det_options or {})
                if det_thresh is not None:
                    options["det_thresh"] = float(det_thresh)
                if det_size is not None:
                    # "auto"/"native" (YuNet) pass through; sizes become tuples
                    options["det_size"] = det_size if isinstance(det_size, str) else tuple(det_size)
            self.models[task] = build_runner(card, Path(path), self.runtime, **options)
            self.cards[task] = card
            self.paths[task] = Path(path)
        for task, (runner_cls, group) in multi.items():
            options: dict[str, Any] = {"home": home}  # these runners choose their own chunk size
            if task == "liveness" and liveness_threshold is not None:
                options["threshold"] = float(liveness_threshold)
            self.models[task] = runner_cls.from_cards(group, self.runtime, **options)
            self.cards[task] = group[0][0]
            self.paths[task] = Path(group[0][1])
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

    @property
    def liveness(self) -> Any | None:
        """The liveness runner (:class:`facelab.liveness.LivenessRunner`), or ``None`` when not loaded."""
        return self.models.get("liveness")

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
        return self.analyze_detections(arrays, dets)

    def analyze_detections(self, images: Sequence[np.ndarray], dets: Sequence[Detections]) -> list[list[Face]]:
        """Run every per-face model on given detections (e.g. a tracker's chosen faces of video frames).

        Args:
            images: ``(H, W, 3)`` ``uint8`` BGR arrays.
            dets: one :class:`~facelab.structures.Detections` per image, in its pixels.

        Returns:
            One list of :class:`~facelab.structures.Face` per image, in detection order, with
            quality, landmarks/attributes and embeddings as :meth:`analyze_batch` fills them.
        """
        arrays = list(images)
        dets = list(dets)
        if len(arrays) != len(dets):
            raise ConfigError(f"analyze_detections: {len(arrays)} images but {len(dets)} detection sets")
        faces = _faces_with_quality(arrays, dets)
        if not any(faces):
            return faces
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

    def detect_faces(self, image: ImageSource, max_num: int = 0, metric: str = "default") -> list[Face]:
        """Detect faces in one image and score their quality, without the per-face models.

        Returns:
            :class:`~facelab.structures.Face` objects with ``bbox``, ``score``, ``kps`` and
            ``quality`` set, in detector order (or by ``metric`` when ``max_num`` is set).
        """
        array = self._load(image)
        dets = self.detector.detect_batch([array], max_num=max_num, metric=metric)
        return _faces_with_quality([array], dets)[0]

    def _load(self, image: ImageSource) -> np.ndarray:
        return load_image(image, max_pixels=self.max_pixels)

    def is_same(self, similarity: float) -> bool | None:
        """Apply the analyser's threshold to a cosine similarity (``None`` when no threshold is known)."""
        return None if self.threshold is None else bool(similarity >= self.threshold)

    def draw(self, image: ImageSource, faces: Sequence[Face]) -> np.ndarray:
        """Return a BGR copy of ``image`` with ``faces`` drawn (see :func:`facelab.viz.draw`)."""
        from facelab.viz import draw

        return draw(self._load(image), faces)
