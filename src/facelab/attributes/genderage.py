"""Gender/age (and other attribute) heads on box crops, as InsightFace's ``Attribute`` model.

Pre-processing: a square crop centred on the box centre with ``scale = S / (1.5 * max(w, h))``
(``S`` = 96 for InsightFace's ``genderage.onnx``), normalised as the card says (InsightFace's
model normalises in-graph: mean 0, std 1; otherwise 127.5 / 128).

Decoding a 3-value output: ``gender = argmax(pred[:2])`` (1 = male, 0 = female) and
``age = round(pred[2] * 100)`` years (round half to even, as numpy). Any other output size is
returned raw and stored under ``Face.attributes["attribute_<N>"]``. All boxes of all images are
cropped first and run in chunks of ``batch_size``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facelab.alignment.transform import CROP_EXPAND, pair_images, run_box_crops
from facelab.errors import ConfigError, ModelError
from facelab.registry import RUNNERS
from facelab.runtime.batching import crop_model_input_size, split_per_image
from facelab.runtime.session import OrtSession, RuntimeOptions, create_session
from facelab.structures import Detections, Face, fill_faces
from facelab.zoo.card import ModelCard

__all__ = ["AttributeRunner", "default_attribute_card", "decode_genderage"]

_logger = logging.getLogger(__name__)


def default_attribute_card(path: str | Path, in_graph_normalization: bool = True, **overrides: object) -> ModelCard:
    """Card for a user-supplied InsightFace-style gender/age model.

    Args:
        path: the ``.onnx`` file.
        in_graph_normalization: ``True`` (InsightFace's ``genderage.onnx``): mean 0, std 1;
            ``False``: ``(x - 127.5) / 128``.
        **overrides: any :class:`~facelab.zoo.card.ModelCard` field.
    """
    mean, std = ((0.0,) * 3, (1.0,) * 3) if in_graph_normalization else ((127.5,) * 3, (128.0,) * 3)
    values = {"task": "genderage", "arch": "insightface_attribute", "color_order": "RGB", "mean": mean, "std": std}
    return ModelCard.for_local_file(path, **{**values, **overrides})


def decode_genderage(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gender and age from ``(N, 3)`` outputs.

    Returns:
        ``(gender, age)``: two ``(N,)`` ``int64`` arrays; gender 1 = male, 0 = female; age in years.
    """
    pred = np.asarray(pred)
    if pred.ndim != 2 or pred.shape[1] != 3:
        raise ConfigError(f"gender/age decoding needs (N, 3) outputs, got shape {pred.shape}")
    gender = np.argmax(pred[:, :2], axis=1).astype(np.int64)
    age = np.round(pred[:, 2] * 100).astype(np.int64)
    return gender, age


@RUNNERS.register("genderage")
@RUNNERS.register("attribute")
class AttributeRunner:
    """Run an attribute head (gender/age or another vector output) on detection boxes.

    Attributes:
        card: the model card.
        session: the ONNX Runtime session.
        input_size: crop side (96 for InsightFace's ``genderage.onnx``).
        output_dim: values per face (3 for gender/age), or ``None`` when the graph leaves it dynamic.
        batch_size: crops per ``run`` call for a dynamic batch axis.
        crop_expand: box sides per crop side (card ``extra["crop_scale"]``, default 1.5).
    """

    def __init__(self, session: OrtSession, card: ModelCard, batch_size: int = 32) -> None:
        if card.task not in ("genderage", "attribute"):
            raise ConfigError(f"{card.name}: AttributeRunner needs a genderage/attribute card, not {card.task!r}")
        self.input_size = crop_model_input_size(session, card.input_size, card.name, "an attribute model", batch_size)
        self.card = card
        self.session = session
        self.batch_size = int(batch_size)
        self.normalization = card.normalization
        self.crop_expand = float(card.extra.get("crop_scale", CROP_EXPAND))
        out = session.outputs[0].shape
        self.output_dim: int | None = out[1] if len(out) == 2 else None

    @classmethod
    def from_card(
        cls, card: ModelCard, path: str | Path, runtime: RuntimeOptions | None = None, **kwargs: object
    ) -> AttributeRunner:
        """Load the model file ``path`` described by ``card`` (kwargs: ``batch_size``)."""
        return cls(create_session(path, runtime), card, **kwargs)  # type: ignore[arg-type]

    def predict_raw_batch(
        self, images: np.ndarray | Sequence[np.ndarray], boxes_per_image: np.ndarray | Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Raw outputs for every box of one or several images, in chunked ``run`` calls.

        Args:
            images: one ``(H, W, 3)`` ``uint8`` BGR image or a sequence of them.
            boxes_per_image: for one image its ``(n, 4)`` boxes; for several, one array per image.

        Returns:
            Per image, ``(n_i, D)`` ``float32`` outputs.
        """
        raw, _, counts = run_box_crops(
            self.session,
            images,
            boxes_per_image,
            self.input_size,
            self.normalization,
            self.batch_size,
            self.crop_expand,
        )
        return split_per_image(np.asarray(raw, dtype=np.float32).reshape(len(raw), -1), counts)

    def predict_raw(self, img: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Raw outputs for the boxes of one image: ``(n, D)`` ``float32``."""
        return self.predict_raw_batch([img], [boxes])[0]

    def predict(self, img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gender and age for the boxes of one image (3-value models only).

        Returns:
            ``(gender, age)``: ``(n,)`` ``int64`` arrays (gender 1 = male).
        """
        raw = self.predict_raw(img, boxes)
        if raw.shape[1:] != (3,) and len(raw):
            raise ModelError(f"{self.card.name}: gender/age needs 3 outputs per face, the model gives {raw.shape[1]}")
        return decode_genderage(raw.reshape(-1, 3))

    def _values(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[dict[str, list]]:
        out: list[dict[str, list]] = []
        for raw in self.predict_raw_batch(images, boxes):
            if raw.shape[1] == 3:
                genders, ages = decode_genderage(raw)
                out.append({"gender": [int(g) for g in genders], "age": [int(a) for a in ages]})
            else:
                out.append({f"attribute_{raw.shape[1]}": list(raw)})
        return out

    def predict_detections(
        self, images: Sequence[np.ndarray], detections: Sequence[Detections]
    ) -> list[dict[str, list]]:
        """Pipeline protocol: attributes of every detection of every image.

        Args:
            images: ``(H, W, 3)`` ``uint8`` BGR images.
            detections: one :class:`~facelab.structures.Detections` per image.

        Returns:
            Per image, ``{"gender": [int], "age": [int]}`` for a 3-value model, else
            ``{"attribute_<N>": [(N,) float32]}``, one entry per face.
        """
        imgs, dets = pair_images(images, detections)
        return self._values(imgs, [d.boxes for d in dets])

    def annotate(
        self, images: np.ndarray | Sequence[np.ndarray], faces: Sequence[Face] | Sequence[Sequence[Face]]
    ) -> None:
        """Fill ``gender`` and ``age`` (3-value models) or ``attributes["attribute_<N>"]`` of every face, in place."""
        imgs, face_lists = pair_images(images, faces)
        boxes = [np.asarray([f.bbox for f in fl], np.float32).reshape(-1, 4) for fl in face_lists]
        fill_faces(face_lists, self._values(imgs, boxes))

    def __repr__(self) -> str:
        name, size, dim = self.card.name, self.input_size, self.output_dim
        return f"AttributeRunner({name!r}, input={size}, dim={dim}, batch={self.batch_size})"
