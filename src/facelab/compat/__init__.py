"""Compatibility layers: run code written for other face libraries on facelab.

* :mod:`facelab.compat.insightface` — InsightFace's Python API (``FaceAnalysis``, ``model_zoo``,
  ``utils.face_align``, ``data``): change ``import insightface`` to
  ``import facelab.compat.insightface as insightface`` and the rest of the program stays as it is.

Nothing below this package imports it, and ``import facelab`` does not load it.
"""

__all__: list[str] = []
