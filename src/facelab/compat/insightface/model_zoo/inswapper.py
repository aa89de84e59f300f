"""InsightFace's ``INSwapper`` interface on facelab's face swapper (``model_zoo.inswapper``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from facelab.compat.insightface.model_zoo._base import Model
from facelab.errors import ConfigError

__all__ = ["INSwapper"]


class INSwapper(Model):
    """A face swapper (``inswapper_128.onnx``, supplied by the user) with InsightFace's ``INSwapper`` interface.

    Like InsightFace's class it has no ``taskname``: it is not part of a pack's analysis.
    """

    tasks = ("swap",)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` of the aligned target crop (128 x 128)."""
        size = int(self.runner.input_size)
        return size, size

    @property
    def emap(self) -> np.ndarray:
        """``(512, 512)`` ``float32`` embedding map (the model's last initializer)."""
        return self.runner.emap

    @property
    def input_names(self) -> list[str]:
        """Names of the two graph inputs (target image, latent)."""
        return self.runner.session.input_names

    def get(self, img: np.ndarray, target_face: Any, source_face: Any, paste_back: bool = True) -> Any:
        """Give ``target_face`` (in ``img``) the identity of ``source_face``.

        Args:
            img: ``(H, W, 3)`` ``uint8`` BGR image holding the target face.
            target_face: a compat ``Face`` with ``kps``.
            source_face: a compat ``Face`` with ``embedding`` (from the recogniser the swap model
                was trained with: ``buffalo_l``'s ``w600k_r50`` for ``inswapper_128``), or an
                embedding array.
            paste_back: blend the generated face into a copy of ``img``.

        Returns:
            The ``(H, W, 3)`` ``uint8`` BGR image, or with ``paste_back=False`` ``(bgr_fake, M)``:
            the ``(128, 128, 3)`` ``uint8`` BGR generated crop and the ``(2, 3)`` image→crop matrix.

        Raises:
            ConfigError: the target has no keypoints or the source no embedding.
        """
        kps = target_face.get("kps") if isinstance(target_face, dict) else target_face
        if kps is None:
            raise ConfigError("INSwapper.get: the target face has no kps (five keypoints)")
        source = source_face.get("embedding") if isinstance(source_face, dict) else source_face
        if source is None:
            raise ConfigError("INSwapper.get: the source face has no embedding; run the recogniser on it first")
        return self.runner.swap(img, np.asarray(kps, np.float32), np.asarray(source, np.float32), paste_back=paste_back)

    def forward(self, img: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Run the graph on an ``(1, 3, 128, 128)`` float blob (``x / 255`` applied here) and a ``(1, 512)`` latent."""
        blob = ((np.asarray(img, np.float32) - self.input_mean) / self.input_std).astype(np.float32)
        names = self.input_names
        return self.runner.session.run({names[0]: blob, names[1]: np.asarray(latent, np.float32)})[0]
