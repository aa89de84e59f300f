"""Named five-point alignment templates: where the keypoints go in an aligned crop.

Coordinates are pixels of the crop (``x`` right, ``y`` down), keypoints in
:class:`~facelab.structures.FaceKeypoint` order. A model card names its template; the
recogniser's crop is made by mapping the detected keypoints onto it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelab.errors import ConfigError

__all__ = ["AlignTemplate", "ARCFACE_112", "get_template", "register_template", "list_templates", "arcface_points"]


@dataclass(frozen=True)
class AlignTemplate:
    """A five-point template for a square crop.

    Attributes:
        name: registry name, e.g. ``"arcface_112_5pt"``.
        size: side of the crop the points are given for, in pixels.
        points: ``(5, 2)`` ``float32`` keypoint positions in that crop.
    """

    name: str
    size: int
    points: np.ndarray

    def for_size(self, size: int) -> np.ndarray:
        """Return ``(5, 2)`` ``float32`` points for an output crop of ``size`` pixels (scaled)."""
        return (self.points * (float(size) / self.size)).astype(np.float32)


#: InsightFace's ArcFace template for 112x112 crops (``arcface_dst`` in its face_align).
ARCFACE_112 = AlignTemplate(
    "arcface_112_5pt",
    112,
    np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
        dtype=np.float32,
    ),
)

_TEMPLATES: dict[str, AlignTemplate] = {}


def register_template(template: AlignTemplate) -> AlignTemplate:
    """Add a template to the registry; a duplicate name raises ``ConfigError`` (a ``ValueError``)."""
    if template.name in _TEMPLATES:
        raise ConfigError(f"alignment template {template.name!r} is already registered")
    _TEMPLATES[template.name] = template
    return template


def get_template(name: str) -> AlignTemplate:
    """Return the registered template called ``name``."""
    try:
        return _TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown alignment template {name!r}; known: {sorted(_TEMPLATES)}") from None


def list_templates() -> list[str]:
    """Names of the registered templates."""
    return sorted(_TEMPLATES)


def arcface_points(image_size: int = 112) -> np.ndarray:
    """ArcFace destination points for an ``image_size`` crop, exactly as InsightFace's ``estimate_norm``.

    Sizes divisible by 112 scale the template; otherwise sizes divisible by 128 use the 112
    template scaled by ``size / 128`` and shifted right by ``8 * size / 128`` pixels (so a 128 crop
    is the 112 template moved +8 px in ``x``, not enlarged).

    Raises:
        ConfigError: ``image_size`` is a multiple of neither 112 nor 128.
    """
    if image_size % 112 == 0:
        ratio, shift = image_size / 112.0, 0.0
    elif image_size % 128 == 0:
        ratio = image_size / 128.0
        shift = 8.0 * ratio
    else:
        raise ConfigError(f"ArcFace alignment needs a crop size divisible by 112 or 128, not {image_size}")
    dst = ARCFACE_112.points.astype(np.float64) * ratio
    dst[:, 0] += shift
    return dst.astype(np.float32)


register_template(ARCFACE_112)
