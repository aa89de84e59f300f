"""InsightFace's ``model_zoo``: ``get_model`` and the model classes, on facelab runners.

Example:
    >>> import facelab.compat.insightface as insightface
    >>> handler = insightface.model_zoo.get_model("w600k_r50.onnx")  # doctest: +SKIP
    >>> handler.prepare(ctx_id=0)  # doctest: +SKIP
"""

from facelab.compat.insightface.model_zoo.arcface_onnx import ArcFaceONNX as ArcFaceONNX
from facelab.compat.insightface.model_zoo.attribute import Attribute as Attribute
from facelab.compat.insightface.model_zoo.inswapper import INSwapper as INSwapper
from facelab.compat.insightface.model_zoo.landmark import Landmark as Landmark
from facelab.compat.insightface.model_zoo.model_zoo import get_model as get_model
from facelab.compat.insightface.model_zoo.scrfd import SCRFD as SCRFD
from facelab.compat.insightface.model_zoo.scrfd import RetinaFace as RetinaFace

__all__ = ["ArcFaceONNX", "Attribute", "INSwapper", "Landmark", "RetinaFace", "SCRFD", "get_model"]
