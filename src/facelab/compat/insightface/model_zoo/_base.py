"""The base of InsightFace's model classes on facelab runners.

Each object wraps one facelab runner (:mod:`facelab.detection`, :mod:`facelab.recognition`,
:mod:`facelab.alignment.landmarks`, :mod:`facelab.attributes`, :mod:`facelab.swap`) built from
the model's card, and offers the methods and attributes InsightFace programs call on what
``insightface.model_zoo.get_model`` returns: ``taskname``, ``prepare(ctx_id, ...)``,
``get(img, face)``, ``detect``, ``get_feat``, ``compute_sim``, ``forward``, ``input_size``,
``input_mean``, ``input_std``. Results equal InsightFace's on the same model file; errors are
facelab's (:mod:`facelab.errors`) instead of ``assert`` failures.

Images are ``(H, W, 3)`` ``uint8`` BGR arrays, as in InsightFace; faces are
:class:`~facelab.compat.insightface.app.common.Face` dicts.

Each class lives in the module of the same name as InsightFace's (``model_zoo.scrfd``,
``model_zoo.arcface_onnx``, ``model_zoo.landmark``, ``model_zoo.attribute``,
``model_zoo.inswapper``), so imports such as ``from insightface.model_zoo.inswapper import
INSwapper`` keep working.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from facelab.errors import ConfigError
from facelab.pipeline import build_runner
from facelab.runtime.session import RuntimeOptions
from facelab.structures import Detections
from facelab.structures import Face as FacelabFace
from facelab.zoo.card import ModelCard

__all__ = ["Model", "CPU_PROVIDER", "cpu_runtime", "runner_sessions"]


_logger = logging.getLogger(__name__)

#: ONNX Runtime's CPU provider name.
CPU_PROVIDER = "CPUExecutionProvider"


def runner_sessions(runner: Any) -> list[Any]:
    """The facelab :class:`~facelab.runtime.session.OrtSession` objects a runner holds (may be empty)."""
    session = getattr(runner, "session", None)
    return [session] if session is not None and hasattr(session, "providers") else []


def cpu_runtime(runtime: RuntimeOptions) -> RuntimeOptions:
    """``runtime`` with the CPU provider only (what ``ctx_id < 0`` asks for)."""
    return dataclasses.replace(runtime, providers=["cpu"])


class Model:
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
        sessions = runner_sessions(self.runner)
        return sessions[0].session if sessions else None

    @property
    def providers(self) -> list[str]:
        """Execution providers ONNX Runtime granted the model's session(s)."""
        return [p for s in runner_sessions(self.runner) for p in s.providers]

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
        sessions = runner_sessions(self.runner)
        return list(sessions[0].inputs[0].shape) if sessions else []

    @property
    def input_name(self) -> str | None:
        """The first graph input's name."""
        sessions = runner_sessions(self.runner)
        return sessions[0].inputs[0].name if sessions else None

    @property
    def output_names(self) -> list[str]:
        """The graph outputs' names."""
        sessions = runner_sessions(self.runner)
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
        self.runtime = cpu_runtime(self.runtime)
        if any(p != CPU_PROVIDER for p in self.providers):
            _logger.info("%s: ctx_id < 0, reloading on the CPU provider", self.model_file)
            self.runner = self._build()

    def _detections(self, face: Any) -> Detections:
        """One-face :class:`~facelab.structures.Detections` from a compat face's ``bbox``/``kps``.

        Raises:
            ConfigError: the face has no ``bbox``.
        """
        bbox, kps = face.get("bbox"), face.get("kps")
        if bbox is None:
            raise ConfigError(f"{type(self).__name__}.get needs face.bbox (x1, y1, x2, y2); this face has none")
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
