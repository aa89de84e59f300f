"""InsightFace's ``ArcFaceONNX`` interface on facelab's recognisers (``model_zoo.arcface_onnx``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelab.compat.insightface.model_zoo._base import Model, runner_sessions
from facelab.runtime.session import RuntimeOptions
from facelab.structures import Face as FacelabFace
from facelab.zoo.card import ModelCard

__all__ = ["ArcFaceONNX"]


class ArcFaceONNX(Model):
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
        sessions = runner_sessions(self.runner)
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
