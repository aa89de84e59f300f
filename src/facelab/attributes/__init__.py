"""Face attributes on detection boxes: gender/age and other vector heads, and face quality.

Importing this package registers :class:`AttributeRunner` as the ``"genderage"`` and
``"attribute"`` runners in :data:`facelab.registry.RUNNERS`.
"""

from facelab.attributes.genderage import AttributeRunner as AttributeRunner
from facelab.attributes.genderage import decode_genderage as decode_genderage
from facelab.attributes.genderage import default_attribute_card as default_attribute_card
from facelab.attributes.quality import FaceQuality as FaceQuality
from facelab.attributes.quality import QualityPolicy as QualityPolicy
from facelab.attributes.quality import face_quality as face_quality
from facelab.attributes.quality import pose_from_kps as pose_from_kps

__all__ = [
    "AttributeRunner",
    "decode_genderage",
    "default_attribute_card",
    "FaceQuality",
    "QualityPolicy",
    "face_quality",
    "pose_from_kps",
]
