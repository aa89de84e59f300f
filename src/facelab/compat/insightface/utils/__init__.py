"""InsightFace's ``utils``: the ``face_align`` module and ``DEFAULT_MP_NAME``."""

from facelab.compat.insightface.utils import face_align as face_align

#: InsightFace's default model pack.
DEFAULT_MP_NAME = "buffalo_l"

__all__ = ["DEFAULT_MP_NAME", "face_align"]
