"""InsightFace's ``SCRFD`` interface on any facelab face detector (``model_zoo.scrfd``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from facelab.compat.insightface.model_zoo._base import CPU_PROVIDER, Model, cpu_runtime
from facelab.errors import ConfigError
from facelab.runtime.session import RuntimeOptions
from facelab.zoo.card import ModelCard

_logger = logging.getLogger(__name__)

__all__ = ["SCRFD", "RetinaFace"]


#: Most detector variants kept for per-call ``detect(input_size=..., det_thresh=...)`` overrides.
_MAX_VARIANTS = 4


class SCRFD(Model):
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
            self.runtime = cpu_runtime(self.runtime)
        rebuild = self._changes(wanted) or (cpu and any(p != CPU_PROVIDER for p in self.providers))
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


def _det_size(value: Any) -> Any:
    """InsightFace's ``input_size`` as facelab's ``det_size``: ``"auto"`` and ``(0, 0)`` stay Auto; sizes are tuples."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple, np.ndarray)):
        return [tuple(int(v) for v in item) for item in value]
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return tuple(int(v) for v in value)
    raise ConfigError(f"input_size must be (width, height) or a list of (width, height) pairs, not {value!r}")


#: InsightFace's name for the same anchor-free decoder (its ``RetinaFace`` class).
RetinaFace = SCRFD
