"""Face swapping with an inswapper-style model the user supplies (e.g. InsightFace's ``inswapper_128``).

facelab ships no swap weights; InsightFace's ``inswapper_128.onnx`` is not redistributable
(contact InsightFace for licensing). Given such a file, :class:`FaceSwapper` reproduces
InsightFace's ``INSwapper``:

* the target face is aligned to ``S`` x ``S`` (128) with the ArcFace template for 128 crops
  (the 112 template shifted +8 px in ``x``, :func:`~facelab.alignment.templates.arcface_points`)
  and fed as RGB ``x / 255``;
* the identity input is the source embedding L2-normalised, multiplied by ``emap`` (the
  model's **last** graph initializer, a 512 x 512 matrix read with the ``onnx`` package on first
  use), and L2-normalised again. The source embedding must come from the recogniser the swap
  model was trained with (``w600k_r50`` of ``buffalo_l`` for ``inswapper_128``);
* the output (NCHW RGB in ``[0, 1]``) becomes a BGR ``uint8`` crop and is pasted back through
  the inverse alignment with a soft mask: a white crop warped back, thresholded at 20, eroded
  with a ``k = max(mask_size // 10, 10)`` square kernel and blurred with a Gaussian of size
  ``2 * max(mask_size // 20, 5) + 1`` (``mask_size`` = sqrt of the mask box's height x width).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from facelab.alignment.transform import invert_affine, norm_crop
from facelab.errors import ConfigError, ModelError
from facelab.ops.normalize import to_tensor
from facelab.registry import RUNNERS
from facelab.runtime.batching import square_input_size
from facelab.runtime.session import OrtSession, RuntimeOptions, create_session
from facelab.structures import Face
from facelab.zoo.card import ModelCard

__all__ = ["FaceSwapper", "default_swapper_card", "read_last_initializer", "blend_back"]

_logger = logging.getLogger(__name__)


def default_swapper_card(path: str | Path, **overrides: object) -> ModelCard:
    """Card for a user-supplied inswapper-style model: ArcFace-128 template, RGB, ``x / 255``."""
    values: dict = {
        "task": "swap",
        "arch": "inswapper",
        "license": "user-supplied model: check its licence (InsightFace's inswapper needs a licence from InsightFace)",
        "color_order": "RGB",
        "mean": (0.0, 0.0, 0.0),
        "std": (255.0, 255.0, 255.0),
        "align_template": "arcface_112_5pt",
    }
    return ModelCard.for_local_file(path, **{**values, **overrides})


def read_last_initializer(path: str | Path) -> np.ndarray:
    """The last graph initializer of an ONNX file, as a numpy array (inswapper's ``emap``).

    Raises:
        ModelError: the ``onnx`` package is missing, or the file has no initializer.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise ModelError("reading the swap model's emap needs the 'onnx' package: pip install onnx") from exc
    model = onnx.load(str(path))
    if not model.graph.initializer:
        raise ModelError(f"{path}: the model has no initializers, so no emap matrix")
    return np.asarray(numpy_helper.to_array(model.graph.initializer[-1]))


def blend_back(img: np.ndarray, crop: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Blend a generated aligned crop back into the image with InsightFace's soft mask.

    Args:
        img: ``(H, W, 3)`` ``uint8`` BGR target image.
        crop: ``(S, S, 3)`` ``uint8`` BGR generated face.
        matrix: ``(2, 3)`` image→crop matrix used to align the target.

    Returns:
        ``(H, W, 3)`` ``uint8`` BGR image (a copy of ``img`` when the crop maps outside it).
    """
    import cv2

    height, width = img.shape[:2]
    inverse = invert_affine(matrix)
    size = crop.shape[0]
    fake = cv2.warpAffine(crop, inverse, (width, height), borderValue=0.0)
    mask = cv2.warpAffine(np.full((size, size), 255, np.float32), inverse, (width, height), borderValue=0.0)
    mask[mask > 20] = 255
    rows, cols = np.where(mask == 255)
    if rows.size == 0:
        return img.copy()
    mask_size = int(np.sqrt((rows.max() - rows.min()) * (cols.max() - cols.min())))
    k = max(mask_size // 10, 10)
    mask = cv2.erode(mask, np.ones((k, k), np.uint8), iterations=1)
    k = max(mask_size // 20, 5)
    mask = cv2.GaussianBlur(mask, (2 * k + 1, 2 * k + 1), 0)
    mask = (mask / 255)[:, :, None]
    return (mask * fake + (1 - mask) * img.astype(np.float32)).astype(np.uint8)


@RUNNERS.register("swap")
class FaceSwapper:
    """Swap a source identity onto target faces with an inswapper-style ONNX model.

    Attributes:
        card: the model card.
        session: the ONNX Runtime session (two inputs: an ``(1, 3, S, S)`` image and an
            ``(1, 512)`` latent; one ``(1, 3, S, S)`` output).
        path: the model file (``emap`` is read from it on first use).
        input_size: side ``S`` of the aligned crop (128).
    """

    def __init__(self, session: OrtSession, card: ModelCard, path: str | Path) -> None:
        if len(session.inputs) != 2 or len(session.outputs) != 1:
            raise ModelError(
                f"{card.name}: a swap model has two inputs (image, latent) and one output, "
                f"this one has {len(session.inputs)} and {len(session.outputs)}"
            )
        ranks = [len(i.shape) for i in session.inputs]
        image_index = ranks.index(4) if 4 in ranks else 0
        self.card = card
        self.session = session
        self.path = Path(path)
        self._image_input = session.inputs[image_index]
        self._latent_input = session.inputs[1 - image_index]
        self.input_size = square_input_size(self._image_input.shape, card.input_size, card.name)
        self.normalization = card.normalization
        self._emap: np.ndarray | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_card(cls, card: ModelCard, path: str | Path, runtime: RuntimeOptions | None = None) -> FaceSwapper:
        """Load the swap model file ``path`` described by ``card``."""
        if card.task != "swap":
            raise ConfigError(f"{card.name}: FaceSwapper needs a swap card, not {card.task!r}")
        return cls(create_session(path, runtime), card, path)

    @property
    def emap(self) -> np.ndarray:
        """``(D, D)`` ``float32`` embedding map (the model's last initializer), read on first use."""
        if self._emap is None:
            with self._lock:
                if self._emap is None:
                    emap = read_last_initializer(self.path).astype(np.float32)
                    if emap.ndim != 2 or emap.shape[0] != emap.shape[1]:
                        raise ModelError(f"{self.path}: the last initializer is {emap.shape}, not a square emap matrix")
                    self._emap = emap
        return self._emap

    def latent(self, source_embedding: np.ndarray | Face) -> np.ndarray:
        """The identity input: ``normalize(normalize(embedding) @ emap)`` as ``(1, D)`` ``float32``."""
        if isinstance(source_embedding, Face):
            if source_embedding.embedding is None:
                raise ConfigError("the source face has no embedding; run the recogniser on it first")
            source_embedding = source_embedding.embedding
        vec = np.asarray(source_embedding, dtype=np.float32).reshape(1, -1)
        emap = self.emap
        if vec.shape[1] != emap.shape[0]:
            raise ConfigError(
                f"source embedding has {vec.shape[1]} values but the swap model's emap expects {emap.shape[0]}"
            )
        norm = float(np.linalg.norm(vec))
        if not norm > 0:
            raise ConfigError("the source embedding is zero")
        latent = (vec / norm) @ emap
        latent /= np.linalg.norm(latent)
        return latent.astype(np.float32)

    def swap(
        self, img: np.ndarray, target_face_kps: np.ndarray, source_embedding: np.ndarray | Face, paste_back: bool = True
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Replace the identity of one target face.

        Args:
            img: ``(H, W, 3)`` ``uint8`` BGR image holding the target face.
            target_face_kps: ``(5, 2)`` keypoints of the target face (or a Face with ``kps``).
            source_embedding: ``(D,)`` raw or normalised embedding of the source identity, or a
                :class:`~facelab.structures.Face` with one.
            paste_back: blend the result into the image; otherwise return the crop.

        Returns:
            ``(H, W, 3)`` ``uint8`` BGR image, or with ``paste_back=False`` ``(crop, M)``: the
            ``(S, S, 3)`` ``uint8`` BGR generated crop and the ``(2, 3)`` image→crop matrix.
        """
        if isinstance(target_face_kps, Face):
            target_face_kps = target_face_kps.kps
        if target_face_kps is None:
            raise ConfigError("the target face has no keypoints")
        aligned, matrix = norm_crop(img, target_face_kps, self.input_size, self.card.align_template, return_matrix=True)
        blob = to_tensor(aligned, self.normalization)
        latent = self.latent(source_embedding)
        (pred,) = self.session.run({self._image_input.name: blob, self._latent_input.name: latent})
        fake = np.clip(255 * np.asarray(pred)[0].transpose(1, 2, 0), 0, 255).astype(np.uint8)[:, :, ::-1]
        fake = np.ascontiguousarray(fake)
        if not paste_back:
            return fake, matrix
        return blend_back(img, fake, matrix)

    def __repr__(self) -> str:
        return f"FaceSwapper({self.card.name!r}, input={self.input_size})"
