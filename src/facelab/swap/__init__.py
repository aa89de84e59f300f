"""Face swapping with a user-supplied inswapper-style model.

Importing this package registers :class:`FaceSwapper` as the ``"swap"`` runner in
:data:`facelab.registry.RUNNERS`.
"""

from facelab.swap.inswapper import FaceSwapper as FaceSwapper
from facelab.swap.inswapper import blend_back as blend_back
from facelab.swap.inswapper import default_swapper_card as default_swapper_card

__all__ = ["FaceSwapper", "blend_back", "default_swapper_card"]
