"""InsightFace's model classes (``SCRFD``, ``ArcFaceONNX``, ``Landmark``, ``Attribute``, ``INSwapper``) on facelab.

Each object wraps one facelab runner (:mod:`facelab.detection`, :mod:`facelab.recognition`,
:mod:`facelab.alignment.landmarks`, :mod:`facelab.attributes`, :mod:`facelab.swap`) built from
the model's card, and offers the methods and attributes InsightFace programs call on what
``insightface.model_zoo.get_model`` returns: ``taskname``, ``prepare(ctx_id, ...)``,
``get(img, face)``, ``detect``, ``get_feat``, ``compute_sim``, ``forward``, ``input_size``,
``input_mean``, ``input_std``. Results equal InsightFace's on the same model file; errors are
facelab's (:mod:`facelab.errors`) instead of ``assert`` failures.

Images are ``(H, W, 3)`` ``uint8`` BGR arrays, as in InsightFace; faces are
:class:`~facelab.compat.insightface.app.common.Face` dicts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from facelab.errors import ConfigError
from facelab.pipeline import build_runner
from facelab.runtime.session import RuntimeOptions
from facelab.structures import Detections
from facelab.structures import Face as FacelabFace
from facelab.zoo.card import ModelCard

__all__ = ["SCRFD", "ArcFaceONNX", "Landmark", "Attribute", "INSwapper", "model_class", "wrap_runner"]

_logger = logging.getLogger(__name__)

_CPU = "CPUExecutionProvider"
#: Most detector variants kept for per-call ``detect(input_size=..., det_thresh=...)`` overrides.
_MAX_VARIANTS = 4


def _sessions(runner: Any) -> list[Any]:
    """The facelab :class:`~facelab.runtime.session.OrtSession` objects a runner holds (may be empty)."""
    session = getattr(runner, "session", None)
    return [session] if session is not None and hasattr(session, "providers") else []


def _cpu_runtime(runtime: RuntimeOptions) -> RuntimeOptions:
    return dataclasses.replace(runtime, providers=["cpu"])


class _Model:
    """A facelab runner behind InsightFace's model interface.

    Attributes:
        card: the model card (task, preprocessing, provenance).
        model_file: the ``.onnx`` file, as a string (InsightFace's attribute).
        runner: the facelab runner doing the work.
        runtime: providers and threads the runner was built with.
    """

    #: facelab tasks this class serves.
    tasks: ClassVar[tuple[str, ...]] = ()

    def __init__(self, card: ModelCard, path: str | Path, runtime: RuntimeOptions, runner: Any = None) -> None:
        self.card = card
        self.model_file = str(path)
        self.runtime = runtime
        self._options: dict[str, Any] = {}
        self.runner = runner if runner is not None else self._build()

    def _build(self, runtime: RuntimeOptions | None = None, **options: Any) -> Any:
        return build_runner(self.card, self.model_file, runtime or self.runtime, **{**self._options, **options})

    # ------------------------------------------------------------------ InsightFace attributes

    @property
    def session(self) -> Any:
        """The ONNX Runtime ``InferenceSession`` (``None`` for a runner without one)."""
        sessions = _sessions(self.runner)
        return sessions[0].session if sessions else None

    @property
    def providers(self) -> list[str]:
        """Execution providers ONNX Runtime granted the model's session(s)."""
        return [p for s in _sessions(self.runner) for p in s.providers]

    @property
    def input_mean(self) -> float:
        """Value subtracted from 0..255 pixels (InsightFace's attribute; first channel)."""
        return float(self.card.mean[0])

    @property
    def input_std(self) -> float:
        """Divisor after the subtraction (first channel)."""
        return float(self.card.std[0])

    @property
    def input_shape(self) -> list[Any]:
        """The first graph input's shape, ``None`` for dynamic axes."""
        sessions = _sessions(self.runner)
        return list(sessions[0].inputs[0].shape) if sessions else []

    @property
    def input_name(self) -> str | None:
        """The first graph input's name."""
        sessions = _sessions(self.runner)
        return sessions[0].inputs[0].name if sessions else None

    @property
    def output_names(self) -> list[str]:
        """The graph outputs' names."""
        sessions = _sessions(self.runner)
        return sessions[0].output_names if sessions else []

    # ------------------------------------------------------------------------------ behaviour

    def prepare(self, ctx_id: int, **kwargs: Any) -> None:
        """InsightFace's ``prepare``: ``ctx_id < 0`` moves the model to the CPU provider.

        A non-negative ``ctx_id`` keeps the providers the model was loaded with (as in
        InsightFace, the device is chosen by ``providers=`` at load time).
        """
        if int(ctx_id) < 0:
            self._use_cpu()

    def _use_cpu(self) -> None:
        if self.runtime.providers == ["cpu"]:
            return
        self.runtime = _cpu_runtime(self.runtime)
        if any(p != _CPU for p in self.providers):
            _logger.info("%s: ctx_id < 0, reloading on the CPU provider", self.model_file)
            self.runner = self._build()

    def _detections(self, face: Any, *, need_box: bool = True) -> Detections:
        """One-face :class:`~facelab.structures.Detections` from a compat face's ``bbox``/``kps``."""
        bbox, kps = face.get("bbox"), face.get("kps")
        if bbox is None:
            if need_box or kps is None:
                raise ConfigError(f"{type(self).__name__}.get needs face.bbox (x1, y1, x2, y2); this face has none")
            pts = np.asarray(kps, np.float32).reshape(-1, 2)
            bbox = np.concatenate([pts.min(axis=0), pts.max(axis=0)])
        score = face.get("det_score")
        return Detections(
            np.asarray(bbox, np.float32)[None, :4],
            [1.0 if score is None else float(score)],
            None if kps is None else np.asarray(kps, np.float32)[None],
        )

    def store(self, face: Any, analysed: FacelabFace) -> None:
        """Copy what this model computed from a facelab face to a compat face, with InsightFace's keys and types."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_file!r}, runner={self.runner!r})"


class SCRFD(_Model):
    """A face detector (SCRFD, and any other facelab detector) with InsightFace's ``SCRFD`` interface.

    Attributes:
        taskname: ``"detection"``.
        det_thresh: score threshold (default 0.5 for SCRFD).
        nms_thresh: NMS IoU threshold (default 0.4).
        input_sizes: ``(width, height)`` sizes whose candidates one NMS merges (InsightFace
            2.1's Auto ``[(128, 128), (640, 640)]`` until ``prepare`` sets one).
    """

    tasks = ("detection",)

    def __init__(self, card: ModelCard, path: str | Path, runtime: RuntimeOptions, runner: Any = None) -> None:
        self.taskname = "detection"
        super().__init__(card, path, runtime, runner)
        self._variants: dict[tuple[Any, ...], Any] = {}

    @property
    def det_thresh(self) -> float:
        """Score threshold: candidates with ``score >= det_thresh`` are kept."""
        return float(self.runner.det_thresh)

    @property
    def nms_thresh(self) -> float:
        """NMS IoU threshold."""
        return float(self.runner.nms_thresh)

    @property
    def input_sizes(self) -> list[tuple[int, int]] | None:
        """``(width, height)`` network sizes (``None`` when the detector sizes its input from the image)."""
        sizes = getattr(self.runner, "input_sizes", None)
        if sizes is None:
            size = getattr(self.runner, "det_size", None)
            sizes = None if size is None else [tuple(size)]
        return None if sizes is None else [tuple(s) for s in sizes]

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The last (largest) of :attr:`input_sizes`, as InsightFace reports it."""
        sizes = self.input_sizes
        return sizes[-1] if sizes else None

    @property
    def use_kps(self) -> bool:
        """Whether the detector gives five keypoints."""
        return bool(getattr(self.runner, "with_kps", True))

    def prepare(self, ctx_id: int, **kwargs: Any) -> None:
        """InsightFace's ``SCRFD.prepare``: ``input_size``, ``det_thresh`` and ``nms_thresh`` set the detector.

        Args:
            ctx_id: ``< 0`` moves the detector to the CPU provider.
            **kwargs: ``input_size`` (``(width, height)``, a list of them, or ``(0, 0)`` for
                Auto; a model with a fixed input size keeps its own), ``det_thresh``, ``nms_thresh``.
                Options left out keep their current values.

        Raises:
            ConfigError: an unknown option or a malformed size.
        """
        unknown = sorted(set(kwargs) - {"input_size", "det_thresh", "nms_thresh"})
        if unknown:
            raise ConfigError(
                f"SCRFD.prepare: unknown option(s) {unknown}; it takes input_size, det_thresh, nms_thresh"
            )
        wanted = dict(self._options)
        if kwargs.get("input_size") is not None:
            wanted["det_size"] = _det_size(kwargs["input_size"])
        for key in ("det_thresh", "nms_thresh"):
            if kwargs.get(key) is not None:
                wanted[key] = float(kwargs[key])
        cpu = int(ctx_id) < 0 and self.runtime.providers != ["cpu"]
        if cpu:
            self.runtime = _cpu_runtime(self.runtime)
        rebuild = self._changes(wanted) or (cpu and any(p != _CPU for p in self.providers))
        self._options = wanted
        if rebuild:
            self.runner = self._build()
            self._variants.clear()

    def _changes(self, wanted: dict[str, Any]) -> bool:
        """Whether ``wanted`` options differ from what the current detector does."""
        from facelab.detection.base import normalize_sizes

        runner = self.runner
        for key in ("det_thresh", "nms_thresh"):
            if key in wanted and float(wanted[key]) != float(getattr(runner, key)):
                return True
        if wanted.get("det_size") == self._options.get("det_size"):
            return False
        sizes = getattr(runner, "input_sizes", None)
        if sizes is None:  # another detector family: its own det_size semantics
            return True
        if all(d is not None for d in runner.session.inputs[0].shape[2:4]):
            return False  # a fixed input size wins over det_size, as in InsightFace
        return normalize_sizes(wanted.get("det_size")) != [tuple(s) for s in sizes]

    def _variant(self, input_size: Any, det_thresh: float | None) -> Any:
        """The detector for one call's ``input_size``/``det_thresh`` overrides (kept for reuse)."""
        options = dict(self._options)
        if input_size is not None:
            options["det_size"] = _det_size(input_size)
        if det_thresh is not None:
            options["det_thresh"] = float(det_thresh)
        if options == self._options:
            return self.runner
        key = tuple(sorted((k, repr(v)) for k, v in options.items()))
        if key not in self._variants:
            if len(self._variants) >= _MAX_VARIANTS:
                self._variants.pop(next(iter(self._variants)))
            self._variants[key] = self._build(**options)
        return self._variants[key]

    def detect(
        self,
        img: np.ndarray,
        input_size: Any = None,
        max_num: int = 0,
        metric: str = "default",
        det_thresh: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Detect faces: InsightFace's ``SCRFD.detect``.

        Args:
            img: ``(H, W, 3)`` ``uint8`` BGR image.
            input_size: this call's network size(s), overriding ``prepare``'s.
            max_num: keep at most this many faces (0 = all), chosen by ``metric``.
            metric: ``"default"`` (large and central first) or ``"max"`` (largest first).
            det_thresh: this call's score threshold.

        Returns:
            ``(det, kpss)``: ``(N, 5)`` ``float32`` ``[x1, y1, x2, y2, score]`` and ``(N, 5, 2)``
            ``float32`` keypoints (``None`` for a detector without keypoints).
        """
        dets = self._variant(input_size, det_thresh).detect(img, max_num=max_num, metric=metric)
        return dets.det, dets.kps

    def get(self, img: np.ndarray, max_num: int = 0, metric: str = "default") -> list[Any]:
        """Detected faces as compat ``Face`` dicts with ``bbox``, ``kps`` and ``det_score``."""
        from facelab.compat.insightface.app.common import Face

        det, kpss = self.detect(img, max_num=max_num, metric=metric)
        return [
            Face(bbox=det[i, :4], kps=None if kpss is None else kpss[i], det_score=det[i, 4]) for i in range(len(det))
        ]


def _det_size(value: Any) -> Any:
    """InsightFace's ``input_size`` as facelab's ``det_size``: ``(0, 0)`` stays Auto, sizes become tuples."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple, np.ndarray)):
        return [tuple(int(v) for v in item) for item in value]
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return tuple(int(v) for v in value)
    raise ConfigError(f"input_size must be (width, height) or a list of (width, height) pairs, not {value!r}")


class ArcFaceONNX(_Model):
    """A face recogniser with InsightFace's ``ArcFaceONNX`` interface.

    ``get`` aligns on ``face.kps`` (or, for dlib's recogniser in the open pack, on ``face.bbox``)
    and stores the raw embedding in ``face.embedding``.

    Attributes:
        taskname: ``"recognition"``.
    """

    tasks = ("recognition",)

    def __init__(self, card: ModelCard, path: str | Path, runtime: RuntimeOptions, runner: Any = None) -> None:
        self.taskname = "recognition"
        super().__init__(card, path, runtime, runner)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` of the aligned crop."""
        size = int(getattr(self.runner, "input_size", 0) or getattr(self.runner, "chip_size", 0))
        return size, size

    @property
    def output_shape(self) -> list[Any]:
        """The graph output's shape."""
        sessions = _sessions(self.runner)
        return list(sessions[0].outputs[0].shape) if sessions else []

    def get(self, img: np.ndarray, face: Any) -> np.ndarray:
        """Embed one face and store it as ``face.embedding``.

        Args:
            img: ``(H, W, 3)`` ``uint8`` BGR image.
            face: a compat ``Face`` with ``kps`` (``(5, 2)``; ``bbox`` for the open pack).

        Returns:
            ``(D,)`` ``float32`` raw embedding (also set on ``face``).
        """
        analysed = FacelabFace(bbox=np.zeros(4, np.float32), score=1.0)
        if face.get("kps") is not None and hasattr(self.runner, "embed_faces"):
            analysed.embedding = self.runner.embed_faces(img, np.asarray(face.kps, np.float32)[None])[0][0]
        else:
            analysed.embedding = self.runner.embed_detections([img], [self._detections(face)])[0][0]
        self.store(face, analysed)
        return face.embedding

    def get_feat(self, imgs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Embed aligned crops (one ``(S, S, 3)`` BGR crop or a list), in batched runs.

        Crops of another size are resized to the model's (bilinear), as InsightFace's blob
        function does.

        Returns:
            ``(N, D)`` ``float32`` raw embeddings.
        """
        import cv2

        crops = list(imgs) if isinstance(imgs, (list, tuple)) else [imgs]
        size = self.input_size
        batch = np.stack(
            [np.asarray(c) if np.asarray(c).shape[:2] == size[::-1] else cv2.resize(np.asarray(c), size) for c in crops]
        )
        return self.runner.embed(batch)

    def compute_sim(self, feat1: np.ndarray, feat2: np.ndarray) -> float:
        """Cosine similarity of two embeddings (raw or normalised)."""
        from facelab.recognition.compare import compare

        return compare(np.ravel(feat1), np.ravel(feat2))

    def forward(self, batch_data: np.ndarray) -> np.ndarray:
        """Run an ``(N, 3, S, S)`` float batch in the model's channel order: ``(x - mean) / std``, then the graph."""
        mean = np.asarray(self.card.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.card.std, np.float32).reshape(1, -1, 1, 1)
        blob = ((np.asarray(batch_data, np.float32) - mean) / std).astype(np.float32)
        return self.runner.session.run(blob)[0]

    def store(self, face: Any, analysed: FacelabFace) -> None:
        """Set ``face.embedding`` (raw ``(D,)`` ``float32``)."""
        if analysed.embedding is not None:
            face.embedding = np.asarray(analysed.embedding, np.float32).reshape(-1)


class Landmark(_Model):
    """A dense landmark model (2D-106, 3D-68 with head pose) with InsightFace's ``Landmark`` interface.

    Attributes:
        taskname: ``"landmark_2d_106"``, ``"landmark_3d_68"`` (or facelab's ``"landmark_5"``).
        lmk_dim: 2 or 3.
        lmk_num: points per face.
        require_pose: whether ``get`` also sets ``face.pose`` (3D-68; needs the 68-point mean
            shape, see :mod:`facelab.alignment.pose`).
    """

    tasks = ("landmark_2d_106", "landmark_3d_68", "landmark_5")

    def __init__(self, card: ModelCard, path: str | Path, runtime: RuntimeOptions, runner: Any = None) -> None:
        self.taskname = card.task
        super().__init__(card, path, runtime, runner)
        self.lmk_dim = int(getattr(self.runner, "lmk_dim", 2))
        self.lmk_num = int(getattr(self.runner, "lmk_num", 5))
        self.require_pose = card.task == "landmark_3d_68"

    @property
    def input_size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the box crop (192 x 192 for InsightFace's models)."""
        size = getattr(self.runner, "input_size", None)
        return None if size is None else (int(size), int(size))

    def get(self, img: np.ndarray, face: Any) -> np.ndarray:
        """Landmarks of one face (from ``face.bbox``), stored as ``face[taskname]`` (and ``face.pose``).

        Returns:
            ``(lmk_num, lmk_dim)`` ``float32`` points in image pixels.
        """
        analysed = FacelabFace(bbox=np.asarray(face.bbox, np.float32), score=1.0)
        values = self.runner.predict_detections([img], [self._detections(face)])[0]
        for name, column in values.items():
            if name in ("landmark_2d_106", "landmark_3d_68", "pose"):
                setattr(analysed, name, column[0])
            else:
                analysed.attributes[name] = column[0]
        self.store(face, analysed)
        return face.get(self.taskname) if self.taskname in face else face.get("dlib_shape_5")

    def store(self, face: Any, analysed: FacelabFace) -> None:
        """Set ``face[taskname]`` (and ``pose`` for 3D-68 when a mean shape is installed)."""
        if self.taskname in ("landmark_2d_106", "landmark_3d_68"):
            points = getattr(analysed, self.taskname)
            if points is not None:
                face[self.taskname] = points
            if self.require_pose and analysed.pose is not None:
                face["pose"] = analysed.pose
        else:  # facelab's own landmark runners (the open pack's dlib 5 points): their output names
            for name, value in analysed.attributes.items():
                if not name.startswith("attribute_"):
                    face[name] = value


class Attribute(_Model):
    """An attribute model (gender/age, or another vector output) with InsightFace's ``Attribute`` interface.

    Attributes:
        taskname: ``"genderage"`` for a 3-value model, else ``"attribute_<N>"``.
    """

    tasks = ("genderage", "attribute")

    def __init__(self, card: ModelCard, path: str | Path, runtime: RuntimeOptions, runner: Any = None) -> None:
        super().__init__(card, path, runtime, runner)
        dim = getattr(self.runner, "output_dim", None)
        self.taskname = "genderage" if card.task == "genderage" or dim == 3 else f"attribute_{dim}"

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` of the box crop (96 x 96 for ``genderage.onnx``)."""
        size = int(self.runner.input_size)
        return size, size

    def get(self, img: np.ndarray, face: Any) -> Any:
        """Gender and age of one face (from ``face.bbox``), stored on the face; raw outputs for other models.

        Returns:
            ``(gender, age)`` for gender/age (``gender`` ``numpy.int64``, 1 = male; ``age`` ``int``),
            else the model's ``(N,)`` ``float32`` output (not stored, as in InsightFace).
        """
        from facelab.attributes import decode_genderage

        raw = self.runner.predict_raw(img, self._detections(face).boxes)
        if self.taskname != "genderage":
            return raw[0]
        gender, age = decode_genderage(raw)
        analysed = FacelabFace(
            bbox=np.asarray(face.bbox, np.float32), score=1.0, gender=int(gender[0]), age=int(age[0])
        )
        self.store(face, analysed)
        return face.gender, face.age

    def store(self, face: Any, analysed: FacelabFace) -> None:
        """Set ``face.gender`` (``numpy.int64``) and ``face.age`` (``int``) for gender/age models."""
        if self.taskname == "genderage" and analysed.gender is not None:
            face["gender"] = np.int64(analysed.gender)
            face["age"] = int(analysed.age)  # type: ignore[arg-type]


class INSwapper(_Model):
    """A face swapper (``inswapper_128.onnx``, supplied by the user) with InsightFace's ``INSwapper`` interface.

    Like InsightFace's class it has no ``taskname``: it is not part of a pack's analysis.
    """

    tasks = ("swap",)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` of the aligned target crop (128 x 128)."""
        size = int(self.runner.input_size)
        return size, size

    @property
    def emap(self) -> np.ndarray:
        """``(512, 512)`` ``float32`` embedding map (the model's last initializer)."""
        return self.runner.emap

    @property
    def input_names(self) -> list[str]:
        """Names of the two graph inputs (target image, latent)."""
        return self.runner.session.input_names

    def get(self, img: np.ndarray, target_face: Any, source_face: Any, paste_back: bool = True) -> Any:
        """Give ``target_face`` (in ``img``) the identity of ``source_face``.

        Args:
            img: ``(H, W, 3)`` ``uint8`` BGR image holding the target face.
            target_face: a compat ``Face`` with ``kps``.
            source_face: a compat ``Face`` with ``embedding`` (from the recogniser the swap model
                was trained with: ``buffalo_l``'s ``w600k_r50`` for ``inswapper_128``), or an
                embedding array.
            paste_back: blend the generated face into a copy of ``img``.

        Returns:
            The ``(H, W, 3)`` ``uint8`` BGR image, or with ``paste_back=False`` ``(bgr_fake, M)``:
            the ``(128, 128, 3)`` ``uint8`` BGR generated crop and the ``(2, 3)`` image→crop matrix.

        Raises:
            ConfigError: the target has no keypoints or the source no embedding.
        """
        kps = target_face.get("kps") if isinstance(target_face, dict) else target_face
        if kps is None:
            raise ConfigError("INSwapper.get: the target face has no kps (five keypoints)")
        source = source_face.get("embedding") if isinstance(source_face, dict) else source_face
        if source is None:
            raise ConfigError("INSwapper.get: the source face has no embedding; run the recogniser on it first")
        return self.runner.swap(img, np.asarray(kps, np.float32), np.asarray(source, np.float32), paste_back=paste_back)

    def forward(self, img: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Run the graph on an ``(1, 3, 128, 128)`` float blob (``x / 255`` applied here) and a ``(1, 512)`` latent."""
        blob = ((np.asarray(img, np.float32) - self.input_mean) / self.input_std).astype(np.float32)
        names = self.input_names
        return self.runner.session.run({names[0]: blob, names[1]: np.asarray(latent, np.float32)})[0]


#: Compat class per facelab task.
_CLASSES: dict[str, type[_Model]] = {
    task: cls for cls in (SCRFD, ArcFaceONNX, Landmark, Attribute, INSwapper) for task in cls.tasks
}


def model_class(card: ModelCard) -> type[_Model]:
    """The compat class for a card's task (landmark tasks other than the listed ones use :class:`Landmark`).

    Raises:
        ConfigError: a task InsightFace's API has no class for.
    """
    cls = _CLASSES.get(card.task) or (Landmark if card.task.startswith("landmark_") else None)
    if cls is None:
        raise ConfigError(f"{card.name}: no InsightFace-style model class for task {card.task!r}")
    return cls


def wrap_runner(card: ModelCard, path: str | Path, runtime: RuntimeOptions, runner: Any = None) -> _Model:
    """The compat model object for ``card``: wraps ``runner``, or loads one from ``path``."""
    return model_class(card)(card, path, runtime, runner)
