"""InsightFace's ``Attribute`` interface on facelab's attribute runner (``model_zoo.attribute``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facelab.compat.insightface.model_zoo._base import Model
from facelab.runtime.session import RuntimeOptions
from facelab.structures import Face as FacelabFace
from facelab.zoo.card import ModelCard

__all__ = ["Attribute"]


class Attribute(Model):
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
