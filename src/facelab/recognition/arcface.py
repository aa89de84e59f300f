"""ArcFace-style recogniser: aligned face crops → embeddings, in batches.

The card says how to feed the model: its alignment template (default InsightFace's ArcFace
five-point template), colour order and mean/std (default RGB, ``(x - 127.5) / 127.5``, as
InsightFace's ``w600k_*`` and ``glintr100``). The input size comes from the model (it must be
square). Unlike InsightFace's ``FaceAnalysis``, which calls the recogniser once per face,
:meth:`ArcFaceRecognizer.embed_faces` aligns every face of every image first and runs the model
once per chunk of ``batch_size`` crops (or once per crop when the model's batch axis is fixed
at 1).

Embeddings are returned **raw** (not L2-normalised), as InsightFace's ``Face.embedding``; use
:func:`facelab.recognition.compare.compare` or ``Face.normed_embedding`` to compare them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facelab.alignment.transform import norm_crop_batch, pair_images, template_points
from facelab.errors import ConfigError, ModelError
from facelab.ops.normalize import to_tensor
from facelab.registry import RUNNERS
from facelab.runtime.batching import crop_model_input_size, run_in_chunks, split_per_image
from facelab.runtime.session import OrtSession, RuntimeOptions, create_session
from facelab.structures import Detections, Face
from facelab.zoo.card import ModelCard

__all__ = ["ArcFaceRecognizer", "default_recognizer_card", "DEFAULT_BATCH_SIZE"]

_logger = logging.getLogger(__name__)

#: Crops per ``session.run`` call for models with a dynamic batch axis.
DEFAULT_BATCH_SIZE = 32


def default_recognizer_card(path: str | Path, **overrides: object) -> ModelCard:
    """Card for a user-supplied InsightFace-style recogniser file.

    Defaults: ArcFace 5-point template, RGB, mean 127.5, std 127.5 (InsightFace's ``w600k_*`` /
    ``glintr100`` preprocessing); the licence is the user's responsibility.

    Args:
        path: the ``.onnx`` file.
        **overrides: any :class:`~facelab.zoo.card.ModelCard` field.
    """
    values: dict = {
        "task": "recognition",
        "arch": "arcface",
        "color_order": "RGB",
        "mean": (127.5, 127.5, 127.5),
        "std": (127.5, 127.5, 127.5),
        "align_template": "arcface_112_5pt",
    }
    return ModelCard.for_local_file(path, **{**values, **overrides})


@RUNNERS.register("recognition")
class ArcFaceRecognizer:
    """Embed aligned faces with an ONNX recogniser.

    Attributes:
        card: the model card (preprocessing and provenance).
        session: the ONNX Runtime session.
        input_size: side ``S`` of the square aligned crop.
        embedding_dim: ``D``, from the model's output shape or the card (``None`` if neither says).
        batch_size: crops per ``run`` call for a dynamic batch axis.
    """

    def __init__(self, session: OrtSession, card: ModelCard, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.input_size = crop_model_input_size(session, card.input_size, card.name, "a recogniser", batch_size)
        self.card = card
        self.session = session
        self.batch_size = int(batch_size)
        self.normalization = card.normalization
        out_shape = session.outputs[0].shape
        dim = out_shape[-1] if len(out_shape) >= 2 else None
        if dim is not None and card.embedding_dim is not None and dim != card.embedding_dim:
            raise ModelError(
                f"{card.name}: the card says embedding_dim {card.embedding_dim} but the model outputs {dim}"
            )
        self.embedding_dim: int | None = dim if dim is not None else card.embedding_dim
        self.template = template_points(card.align_template, self.input_size)

    @classmethod
    def from_card(
        cls, card: ModelCard, path: str | Path, runtime: RuntimeOptions | None = None, **kwargs: object
    ) -> ArcFaceRecognizer:
        """Load the model file ``path`` described by ``card``.

        Args:
            card: a ``recognition`` card.
            path: the ``.onnx`` file.
            runtime: providers and threads.
            **kwargs: passed to the constructor (``batch_size``).
        """
        if card.task != "recognition":
            raise ConfigError(f"{card.name}: ArcFaceRecognizer needs a recognition card, not {card.task!r}")
        return cls(create_session(path, runtime), card, **kwargs)  # type: ignore[arg-type]

    def _tensor(self, crops: np.ndarray) -> np.ndarray:
        return to_tensor(crops, self.normalization)

    def align(self, img: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """Aligned crops of the faces of one image.

        Args:
            img: ``(H, W, 3)`` ``uint8`` BGR image.
            kps: ``(N, 5, 2)`` keypoints (or one ``(5, 2)`` set).

        Returns:
            ``(N, S, S, 3)`` ``uint8`` BGR crops.
        """
        kps = np.asarray(kps)
        if kps.shape == (5, 2):
            kps = kps[None]
        if kps.size == 0:
            return np.zeros((0, self.input_size, self.input_size, 3), np.uint8)
        return norm_crop_batch(img, kps, self.input_size, self.template)

    def embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Embed aligned crops, ``batch_size`` per ``run`` call.

        Args:
            crops: ``(N, S, S, 3)`` ``uint8`` BGR aligned crops (or one ``(S, S, 3)`` crop).

        Returns:
            ``(N, D)`` ``float32`` raw embeddings.

        Raises:
            ConfigError: crops of the wrong size.
        """
        batch = np.asarray(crops)
        if batch.size == 0:
            return np.zeros((0, self.embedding_dim or 0), np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[1:] != (self.input_size, self.input_size, 3):
            raise ConfigError(f"expected (N, {self.input_size}, {self.input_size}, 3) crops, got shape {batch.shape}")
        (out,) = run_in_chunks(self.session, batch, self.batch_size, self._tensor)
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)

    def embed_faces(
        self, images: np.ndarray | Sequence[np.ndarray], kps_per_image: np.ndarray | Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Align and embed every face of one or several images in batched ``run`` calls.

        Args:
            images: one ``(H, W, 3)`` ``uint8`` BGR image or a sequence of them.
            kps_per_image: for one image, its ``(n, 5, 2)`` keypoints; for several, one such
                array per image.

        Returns:
            One ``(n_i, D)`` ``float32`` array of raw embeddings per image.
        """
        imgs, kps_list = pair_images(images, kps_per_image)
        crops = [self.align(img, kps) for img, kps in zip(imgs, kps_list)]
        counts = [len(c) for c in crops]
        if sum(counts) == 0:
            return [np.zeros((0, self.embedding_dim or 0), np.float32) for _ in counts]
        return split_per_image(self.embed(np.concatenate(crops, axis=0)), counts)

    def embed_detections(
        self,
        images: Sequence[np.ndarray],
        detections: Sequence[Detections],
        face_values: Sequence[dict[str, list]] | None = None,
    ) -> list[np.ndarray]:
        """Pipeline protocol: embed every detection of every image (detections need keypoints).

        Args:
            images: ``(H, W, 3)`` ``uint8`` BGR images.
            detections: one :class:`~facelab.structures.Detections` per image.
            face_values: what earlier per-face runners computed (unused: ArcFace aligns on the
                detector's keypoints).

        Returns:
            One ``(n_i, D)`` ``float32`` array of raw embeddings per image.
        """
        imgs, dets = pair_images(images, detections)
        kps = []
        for det in dets:
            if det.kps is None:
                if len(det):
                    raise ConfigError("recognition needs five-point keypoints; this detector gives none")
                kps.append(np.zeros((0, 5, 2), np.float32))
            else:
                kps.append(det.kps)
        return self.embed_faces(imgs, kps)

    def annotate(
        self, images: np.ndarray | Sequence[np.ndarray], faces: Sequence[Face] | Sequence[Sequence[Face]]
    ) -> None:
        """Set ``embedding`` and ``model`` of every face (faces need ``kps``), in place.

        Args:
            images: one image with its list of faces, or a sequence of images with one list each.
            faces: the :class:`~facelab.structures.Face` objects to fill.
        """
        imgs, face_lists = pair_images(images, faces)
        kps = []
        for face_list in face_lists:
            for face in face_list:
                if face.kps is None:
                    raise ConfigError("recognition needs five-point keypoints; this face has none")
            kps.append(np.asarray([f.kps for f in face_list]).reshape(-1, 5, 2))
        for face_list, emb in zip(face_lists, self.embed_faces(imgs, kps)):
            for face, vector in zip(face_list, emb):
                face.embedding = vector
                face.model = self.card.name

    def __repr__(self) -> str:
        name, size, dim = self.card.name, self.input_size, self.embedding_dim
        return f"ArcFaceRecognizer({name!r}, input={size}, dim={dim}, batch={self.batch_size})"
