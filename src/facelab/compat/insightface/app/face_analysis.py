"""InsightFace's ``FaceAnalysis`` on :class:`facelab.FaceAnalyzer`: the same calls, batched underneath.

``FaceAnalysis(name, root, allowed_modules, providers=...)`` loads a pack like InsightFace:

* ``name`` a folder → its ``.onnx`` files; ``name="open"`` → facelab's open pack (dlib's CC0
  models, offline); a folder ``<root>/models/<name>/`` (InsightFace's download or your own
  models) → its files, as they are; another facelab zoo pack name (``buffalo_l`` ...) → that
  pack from facelab's verified cache, downloaded into ``$FACELAB_HOME`` when missing;
* files are taken in name order and the **first model of each task wins**, as in InsightFace;
  a face swapper in the folder is set aside (InsightFace would fail on it), and a file facelab
  cannot classify is skipped with a warning;
* ``prepare(ctx_id, det_thresh=0.5, det_size=None)``: ``det_size`` ``None`` or ``(0, 0)`` means
  InsightFace 2.1's Auto (128 x 128 and 640 x 640 merged by one NMS); ``ctx_id < 0`` moves every
  model to the CPU provider; a non-negative ``ctx_id`` keeps the providers chosen at load time.

``get(img)`` returns :class:`~facelab.compat.insightface.app.common.Face` dicts with InsightFace's
keys, types and key order, but runs each model once per chunk of faces instead of once per
face (:meth:`facelab.FaceAnalyzer.analyze_batch`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelab.compat.insightface.app.common import Face
from facelab.compat.insightface.model_zoo.model_zoo import DEFAULT_ROOT, check_kwargs, runtime_options, wrap_runner
from facelab.detection.scrfd import DEFAULT_DET_SIZES as _SCRFD_AUTO_SIZES
from facelab.errors import ConfigError, ModelNotFoundError

__all__ = ["FaceAnalysis", "DEFAULT_DET_SIZES", "resolve_insightface_pack"]

_logger = logging.getLogger(__name__)

#: InsightFace 2.1's Auto detector sizes ``(width, height)`` (facelab's SCRFD default).
DEFAULT_DET_SIZES = list(_SCRFD_AUTO_SIZES)

#: InsightFace task names ``allowed_modules`` takes, mapped to facelab's module names.
_MODULES = {
    "detection": "detection",
    "recognition": "recognition",
    "landmark_2d_106": "landmark_2d_106",
    "landmark_3d_68": "landmark_3d_68",
    "genderage": "genderage",
    "landmark_5": "landmark_5",  # facelab's open pack (dlib's five points)
}
_ATTRIBUTE = re.compile(r"^attribute_\d+$")


def _is_auto(det_size: Any) -> bool:
    if det_size is None:
        return True
    if isinstance(det_size, np.ndarray):
        det_size = det_size.tolist()
    return (
        isinstance(det_size, (list, tuple))
        and len(det_size) == 2
        and all(isinstance(v, (int, float, np.integer)) for v in det_size)
        and int(det_size[0]) == 0
        and int(det_size[1]) == 0
    )


def resolve_insightface_pack(name: str | os.PathLike, root: str | os.PathLike = DEFAULT_ROOT) -> Any:
    """Find the pack ``FaceAnalysis(name, root)`` loads (see the module docstring for the order).

    Returns:
        A :class:`facelab.zoo.ResolvedPack`.

    Raises:
        ModelNotFoundError: no such folder or pack.
        ModelError: a folder without a face detector.
    """
    from facelab.zoo import list_packs, pack_builder, resolve_folder, resolve_pack

    if not isinstance(name, (str, os.PathLike)):
        raise ConfigError(f"FaceAnalysis: name must be a pack name or a folder, not {type(name).__name__}")
    direct = Path(name).expanduser()
    if direct.is_dir():
        return resolve_folder(direct, strict=False)
    text = str(name)
    if pack_builder(text) is not None:  # "open": built locally by facelab
        return resolve_pack(text)
    folder = Path(root).expanduser() / "models" / text
    if folder.is_dir():
        return resolve_folder(folder, strict=False)
    if text in list_packs():
        return resolve_pack(text, insightface_root=root)
    raise ModelNotFoundError(
        f"FaceAnalysis(name={text!r}): no folder {folder} and not a pack facelab knows ({', '.join(list_packs())}); "
        "pass a folder of .onnx files as name, or put your models in that folder"
    )


def _modules(allowed_modules: Sequence[str] | None) -> list[str] | None:
    """Facelab module names for InsightFace's ``allowed_modules``."""
    if allowed_modules is None:
        return None
    if isinstance(allowed_modules, str):
        allowed_modules = [allowed_modules]
    modules: list[str] = []
    for name in allowed_modules:
        module = _MODULES.get(name) or ("attribute" if _ATTRIBUTE.match(str(name)) else None)
        if module is None:
            raise ConfigError(
                f"allowed_modules: unknown task {name!r}; InsightFace's tasks are {sorted(_MODULES)} and attribute_<N>"
            )
        modules.append(module)
    if "detection" not in modules:
        raise ConfigError(f"allowed_modules must include 'detection' (got {list(allowed_modules)})")
    return modules


class FaceAnalysis:
    """InsightFace's face-analysis app on facelab (see the module docstring).

    Args:
        name: pack name or folder (default ``"buffalo_l"``).
        root: InsightFace's storage root (default ``~/.insightface``).
        allowed_modules: InsightFace task names to load (``"detection"`` must be one), or
            ``None`` for every model of the pack.
        **kwargs: ``providers``, ``provider_options``, ``sess_options`` (see
            :func:`facelab.compat.insightface.model_zoo.model_zoo.runtime_options`); InsightFace
            2.1's ``addons`` (liveness) are not supported.

    Attributes:
        models: InsightFace task name → model object, in model-file name order.
        det_model: the detection model.
        model_dir: the folder the models were read from.
        analyzer: the :class:`facelab.FaceAnalyzer` doing the work.

    Raises:
        ModelNotFoundError: the pack is not found.
        ModelError: a pack without a face detector, or an unusable model file.
        ConfigError: bad ``allowed_modules``, providers or arguments.

    Example:
        >>> from facelab.compat.insightface.app import FaceAnalysis
        >>> app = FaceAnalysis(providers=["CPUExecutionProvider"])  # doctest: +SKIP
        >>> app.prepare(ctx_id=-1, det_size=(640, 640))  # doctest: +SKIP
        >>> faces = app.get(img)  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str | os.PathLike = "buffalo_l",
        root: str | os.PathLike = DEFAULT_ROOT,
        allowed_modules: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        from facelab.pipeline import FaceAnalyzer

        addons = kwargs.pop("addons", None)
        if addons:
            raise ConfigError(f"FaceAnalysis: InsightFace 2.1 addons {list(addons)} are not supported by facelab")
        kwargs.pop("liveness_mode", None)
        kwargs.pop("liveness_threshold", None)
        check_kwargs(kwargs, "FaceAnalysis")
        runtime = runtime_options(kwargs.get("providers"), kwargs.get("provider_options"), kwargs.get("sess_options"))
        resolved = resolve_insightface_pack(name, root)
        self.model_dir = str(resolved.root)
        self.analyzer = FaceAnalyzer(resolved, modules=_modules(allowed_modules), runtime=runtime)
        loaded = [(card, path) for card, path in resolved.models if card.task in self.analyzer.models]
        self.models: dict[str, Any] = {}
        for card, path in sorted(loaded, key=lambda item: Path(item[1]).name):
            model = wrap_runner(card, path, runtime, self.analyzer.models[card.task])
            self.models[model.taskname] = model
        self.det_model = self.models["detection"]
        self.det_thresh = self.det_model.det_thresh
        self.det_size = self.det_model.input_sizes
        _logger.info(
            "FaceAnalysis(%s): %s", resolved.name, {t: Path(m.model_file).name for t, m in self.models.items()}
        )

    def prepare(self, ctx_id: int = 0, det_thresh: float | None = None, det_size: Any = None) -> None:
        """Set the detector and the device, as InsightFace's ``prepare``.

        Args:
            ctx_id: ``< 0`` runs every model on the CPU provider; otherwise the providers given
                at load time are kept.
            det_thresh: detection score threshold; ``None`` keeps the detector's own (0.5 for
                SCRFD, InsightFace's default; the open pack's MTCNN keeps its cascade's thresholds).
            det_size: ``(width, height)``, a list of sizes merged by one NMS, or ``None`` /
                ``(0, 0)`` for Auto (128 x 128 and 640 x 640 for SCRFD; the open pack's own pyramid).
        """
        self.det_thresh = 0.5 if det_thresh is None else det_thresh
        auto = _is_auto(det_size)
        # InsightFace records Auto as its two sizes; the detector gets "auto" = its own default,
        # which for SCRFD is those sizes and for the open pack's MTCNN its image pyramid.
        self.det_size = list(DEFAULT_DET_SIZES) if auto else det_size
        for taskname, model in self.models.items():
            if taskname == "detection":
                model.prepare(ctx_id, input_size="auto" if auto else det_size, det_thresh=det_thresh)
            else:
                model.prepare(ctx_id)
        self._sync()

    def _sync(self) -> None:
        """Hand the analyzer the models' current runners (``prepare`` may have rebuilt some)."""
        for model in self.models.values():
            if self.analyzer.models.get(model.card.task) is not model.runner:
                self.analyzer.models[model.card.task] = model.runner

    def get(self, img: np.ndarray, max_num: int = 0, det_metric: str = "default") -> list[Face]:
        """Detect and analyse the faces of one image.

        Args:
            img: ``(H, W, 3)`` ``uint8`` BGR image (a path or encoded bytes work too).
            max_num: keep at most this many faces (0 = all), chosen by ``det_metric``.
            det_metric: ``"default"`` (large and central first) or ``"max"`` (largest first).

        Returns:
            One :class:`~facelab.compat.insightface.app.common.Face` per face, in detector order
            (``[]`` when there is none).

        Raises:
            ImageError: the image is empty or not an image.
        """
        self._sync()
        analysed = self.analyzer.analyze(img, max_num=max_num, metric=det_metric)
        faces = []
        for item in analysed:
            face = Face(
                bbox=np.asarray(item.bbox, np.float32),
                kps=None if item.kps is None else np.asarray(item.kps, np.float32),
                det_score=np.float32(item.score),
            )
            for taskname, model in self.models.items():
                if taskname != "detection":
                    model.store(face, item)
            faces.append(face)
        return faces

    def draw_on(self, img: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """InsightFace's drawing: a copy of ``img`` with red boxes, keypoints and ``"sex,age"`` labels.

        Boxes are 2 px red rectangles, keypoints radius-1 circles drawn 2 px thick (points 0 and
        3 green, the others red), and ``"<sex>,<age>"`` is written above each box in green when
        gender and age are known; coordinates are truncated to integers as InsightFace does.

        Returns:
            ``(H, W, 3)`` ``uint8`` BGR copy.
        """
        import cv2

        red, green = (0, 0, 255), (0, 255, 0)
        out = img.copy()
        for face in faces:
            box = np.asarray(face.bbox).astype(int)
            cv2.rectangle(out, (box[0], box[1]), (box[2], box[3]), red, 2)
            if face.kps is not None:
                for index, (x, y) in enumerate(np.asarray(face.kps).astype(int)):
                    cv2.circle(out, (int(x), int(y)), 1, green if index in (0, 3) else red, 2)
            if face.gender is not None and face.age is not None:
                label = f"{face.sex},{int(face.age)}"
                cv2.putText(out, label, (box[0] - 1, box[1] - 4), cv2.FONT_HERSHEY_COMPLEX, 0.7, green, 1)
        return out
