"""InsightFace's ``Landmark`` interface on facelab's landmark runners (``model_zoo.landmark``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facelab.compat.insightface.model_zoo._base import Model
from facelab.runtime.session import RuntimeOptions
from facelab.structures import Face as FacelabFace
from facelab.structures import fill_faces
from facelab.zoo.card import ModelCard

__all__ = ["Landmark"]


class Landmark(Model):
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
        fill_faces([[analysed]], self.runner.predict_detections([img], [self._detections(face)]))
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
