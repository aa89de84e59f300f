"""Reading images into facelab's one layout: ``(H, W, 3)`` ``uint8`` BGR."""

from facelab.io.image import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS
from facelab.io.image import ImageSource as ImageSource
from facelab.io.image import load_image as load_image

__all__ = ["DEFAULT_MAX_PIXELS", "ImageSource", "load_image"]
