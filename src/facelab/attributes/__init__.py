"""Face attributes on detection boxes: gender/age and other vector heads.

Importing this package registers :class:`AttributeRunner` as the ``"genderage"`` and
``"attribute"`` runners in :data:`facelab.registry.RUNNERS`.
"""

from facelab.attributes.genderage import AttributeRunner as AttributeRunner
from facelab.attributes.genderage import decode_genderage as decode_genderage
from facelab.attributes.genderage import default_attribute_card as default_attribute_card

__all__ = ["AttributeRunner", "decode_genderage", "default_attribute_card"]
