"""Dense landmark regressors: InsightFace's ``2d106det`` (106 2D points) and ``1k3d68`` (68 3D points).

Pre-processing (InsightFace's ``Landmark``): a square crop centred on the detection box centre
with ``scale = S / (1.5 * max(w, h))`` and no rotation (``S`` = 192), normalised as the card says
(InsightFace's packaged models normalise inside the graph, so their cards have mean 0, std 1;
a model without that uses 127.5 / 128).

Post-processing: the output vector is reshaped to ``(-1, 3)`` when it has at least 3000 values,
else ``(-1, 2)``; only the **last** ``lmk_num`` rows are kept (``1k3d68`` outputs 1103 x 3 and
the last 68 are the landmarks); ``x, y`` are mapped from ``[-1, 1]`` to crop pixels by
``(v + 1) * (S // 2)``, ``z`` is multiplied by ``S // 2``, and the points are mapped back to the
image with the inverse crop transform (``z`` scaled by the same factor as ``x, y``).

All boxes of one or several images are cropped first and run in chunks of ``batch_size``
(one crop per call when the model's batch axis is fixed at 1). The 3D runner also estimates
head pose (:mod:`facelab.alignment.pose`) when a mean shape is installed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facelab.alignment.pose import estimate_pose, load_meanshape
from facelab.alignment.transform import CROP_EXPAND, invert_affine, pair_images, run_box_crops, transform_points
from facelab.errors import ConfigError, ModelError
from facelab.registry import RUNNERS
from facelab.runtime.batching import crop_model_input_size, split_per_image
from facelab.runtime.session import OrtSession, RuntimeOptions, create_session
from facelab.structures import Detections, Face, fill_faces
from facelab.zoo.card import ModelCard

__all__ = ["LandmarkRunner", "default_landmark_card", "decode_landmarks", "CROP_EXPAND"]

_logger = logging.getLogger(__name__)

_TASK = re.compile(r"^landmark_(2|3)d_(\d+)$")


def default_landmark_card(
    path: str | Path, task: str, in_graph_normalization: bool = True, **overrides: object
) -> ModelCard:
    """Card for a user-supplied InsightFace-style landmark model.

    Args:
        path: the ``.onnx`` file.
        task: ``"landmark_2d_106"`` or ``"landmark_3d_68"``.
        in_graph_normalization: ``True`` (InsightFace's ``2d106det`` / ``1k3d68``): feed raw
            pixels (mean 0, std 1); ``False``: ``(x - 127.5) / 128``.
        **overrides: any :class:`~facelab.zoo.card.ModelCard` field.
    """
    mean, std = ((0.0,) * 3, (1.0,) * 3) if in_graph_normalization else ((127.5,) * 3, (128.0,) * 3)
    values = {"task": task, "arch": "insightface_landmark", "color_order": "RGB", "mean": mean, "std": std}
    return ModelCard.for_local_file(path, **{**values, **overrides})


def decode_landmarks(pred: np.ndarray, matrix: np.ndarray, input_size: int, lmk_num: int) -> np.ndarray:
    """Turn one model output vector into landmarks in image pixels.

    Args:
        pred: the model's output for one crop (any shape; flattened).
        matrix: ``(2, 3)`` image→crop matrix of that crop.
        input_size: crop side ``S``.
        lmk_num: number of landmarks to keep (the last ``lmk_num`` rows).

    Returns:
        ``(lmk_num, 2)`` or ``(lmk_num, 3)`` ``float32`` landmarks.
    """
    flat = np.asarray(pred, dtype=np.float32).reshape(-1)
    pts = flat.reshape(-1, 3) if flat.size >= 3000 else flat.reshape(-1, 2)
    if len(pts) < lmk_num:
        raise ModelError(f"the model gives {len(pts)} points, fewer than the {lmk_num} expected")
    pts = pts[len(pts) - lmk_num :].copy()
    half = input_size // 2
    pts[:, :2] = (pts[:, :2] + 1) * half
    if pts.shape[1] == 3:
        pts[:, 2] *= half
    return transform_points(pts, invert_affine(matrix))


@RUNNERS.register("landmark_2d_106")
@RUNNERS.register("landmark_2d_68")
@RUNNERS.register("landmark_2d_98")
@RUNNERS.register("landmark_3d_68")
class LandmarkRunner:
    """Regress dense landmarks inside detection boxes.

    Attributes:
        card: the model card; its task (``landmark_<D>d_<N>``) gives the dimension and count.
        session: the ONNX Runtime session.
        input_size: crop side (192 for InsightFace's models).
        lmk_dim: 2 or 3.
        lmk_num: landmarks per face.
        batch_size: crops per ``run`` call for a dynamic batch axis.
        meanshape_path: explicit mean-shape file for pose (3D only), else the default search.
        crop_expand: box sides per crop side (card ``extra["crop_scale"]``, default 1.5).
    """

    def __init__(
        self, session: OrtSession, card: ModelCard, batch_size: int = 32, meanshape_path: str | Path | None = None
    ) -> None:
        match = _TASK.match(card.task)
        if match is None:
            raise ConfigError(f"{card.name}: LandmarkRunner needs a landmark_<2|3>d_<N> card, not {card.task!r}")
        self.input_size = crop_model_input_size(session, card.input_size, card.name, "a landmark model", batch_size)
        self.card = card
        self.session = session
        self.lmk_dim = int(match.group(1))
        self.lmk_num = int(match.group(2))
        self.batch_size = int(batch_size)
        self.meanshape_path = meanshape_path
        self.normalization = card.normalization
        self.crop_expand = float(card.extra.get("crop_scale", CROP_EXPAND))
        out = session.outputs[0].shape
        if len(out) >= 2 and all(d is not None for d in out[1:]):
            size = int(np.prod(out[1:]))
            dim = 3 if size >= 3000 else 2
            if dim != self.lmk_dim or size // dim < self.lmk_num:
                raise ModelError(
                    f"{card.name}: output of {size} values does not hold {self.lmk_num} {self.lmk_dim}D points"
                )

    @classmethod
    def from_card(
        cls, card: ModelCard, path: str | Path, runtime: RuntimeOptions | None = None, **kwargs: object
    ) -> LandmarkRunner:
        """Load the model file ``path`` described by ``card`` (kwargs: ``batch_size``, ``meanshape_path``)."""
        return cls(create_session(path, runtime), card, **kwargs)  # type: ignore[arg-type]

    @property
    def task(self) -> str:
        """``"landmark_2d_106"``, ``"landmark_3d_68"``, ...: the :class:`~facelab.structures.Face` field filled."""
        return self.card.task

    def predict_batch(
        self, images: np.ndarray | Sequence[np.ndarray], boxes_per_image: np.ndarray | Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Landmarks of every box of one or several images, in chunked ``run`` calls.

        Args:
            images: one ``(H, W, 3)`` ``uint8`` BGR image or a sequence of them.
            boxes_per_image: for one image its ``(n, 4)`` boxes ``[x1, y1, x2, y2]`` (extra
                columns such as a score are ignored); for several, one such array per image.

        Returns:
            Per image, ``(n_i, lmk_num, lmk_dim)`` ``float32`` landmarks in image pixels.
        """
        raw, matrices, counts = run_box_crops(
            self.session,
            images,
            boxes_per_image,
            self.input_size,
            self.normalization,
            self.batch_size,
            self.crop_expand,
        )
        points = np.zeros((len(raw), self.lmk_num, self.lmk_dim), np.float32)
        for i in range(len(raw)):
            points[i] = decode_landmarks(raw[i], matrices[i], self.input_size, self.lmk_num)
        return split_per_image(points, counts)

    def predict(self, img: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks of the boxes of one image: ``(n, lmk_num, lmk_dim)`` ``float32``."""
        return self.predict_batch([img], [boxes])[0]

    def _values(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[dict[str, list]]:
        results = self.predict_batch(images, boxes)
        meanshape = load_meanshape(self.meanshape_path) if self.task == "landmark_3d_68" else None
        out: list[dict[str, list]] = []
        for pts in results:
            values: dict[str, list] = {self.task: list(pts)}
            if meanshape is not None:
                values["pose"] = [estimate_pose(lmk, meanshape) for lmk in pts]
            out.append(values)
        return out

    def predict_detections(
        self, images: Sequence[np.ndarray], detections: Sequence[Detections]
    ) -> list[dict[str, list]]:
        """Pipeline protocol: landmarks (and pose) of every detection of every image.

        Args:
            images: ``(H, W, 3)`` ``uint8`` BGR images.
            detections: one :class:`~facelab.structures.Detections` per image.

        Returns:
            Per image, ``{task: [(lmk_num, lmk_dim) per face]}``, plus ``"pose": [(3,) per face]``
            for ``landmark_3d_68`` when a mean shape is installed.
        """
        imgs, dets = pair_images(images, detections)
        return self._values(imgs, [d.boxes for d in dets])

    def annotate(
        self, images: np.ndarray | Sequence[np.ndarray], faces: Sequence[Face] | Sequence[Sequence[Face]]
    ) -> None:
        """Fill ``landmark_2d_106`` / ``landmark_3d_68`` (and ``pose`` for 3D-68) of every face, in place.

        Landmark tasks other than the two :class:`~facelab.structures.Face` fields go to
        ``face.attributes[task]``. Pose stays ``None`` when no mean shape is installed.
        """
        imgs, face_lists = pair_images(images, faces)
        boxes = [np.asarray([f.bbox for f in fl], np.float32).reshape(-1, 4) for fl in face_lists]
        fill_faces(face_lists, self._values(imgs, boxes))

    def __repr__(self) -> str:
        return f"LandmarkRunner({self.card.name!r}, task={self.task}, input={self.input_size}, batch={self.batch_size})"
