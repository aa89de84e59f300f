"""InsightFace's ``app``: ``FaceAnalysis`` and (in ``app.common``) ``Face``.

Example:
    >>> from facelab.compat.insightface.app import FaceAnalysis
    >>> app = FaceAnalysis(name="buffalo_l")  # doctest: +SKIP
"""

from facelab.compat.insightface.app import common as common
from facelab.compat.insightface.app.common import Face as Face
from facelab.compat.insightface.app.face_analysis import FaceAnalysis as FaceAnalysis

__all__ = ["Face", "FaceAnalysis", "common"]
