"""InsightFace's ``model_zoo``: ``get_model`` and the model classes, on facelab runners.

Example:
    >>> import facelab.compat.insightface as insightface
    >>> handler = insightface.model_zoo.get_model("w600k_r50.onnx")  # doctest: +SKIP
    >>> handler.prepare(ctx_id=0)  # doctest: +SKIP
"""

from facelab.compat.insightface.model_zoo.model_zoo import get_model as get_model
from facelab.compat.insightface.model_zoo.models import SCRFD as SCRFD
from facelab.compat.insightface.model_zoo.models import ArcFaceONNX as ArcFaceONNX
from facelab.compat.insightface.model_zoo.models import Attribute as Attribute
from facelab.compat.insightface.model_zoo.models import INSwapper as INSwapper
from facelab.compat.insightface.model_zoo.models import Landmark as Landmark

#: InsightFace's name for the same (anchor-free) detector class.
RetinaFace = SCRFD

__all__ = ["ArcFaceONNX", "Attribute", "INSwapper", "Landmark", "RetinaFace", "SCRFD", "get_model"]
