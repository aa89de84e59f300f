"""Decode any supported image source into a ``(H, W, 3)`` ``uint8`` BGR array.

Sources: a path (``str`` / :class:`os.PathLike`), encoded bytes, a numpy array, or a PIL image.
Files are decoded with Pillow so that EXIF orientation is applied and a decompression-bomb guard
runs *before* the pixels are allocated; JPEG, PNG, WebP and BMP (and whatever else Pillow reads)
are accepted. Grayscale, grayscale+alpha, RGBA, palette and 16-bit images are converted.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from facelab.errors import ImageError, ImageTooLargeError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["DEFAULT_MAX_PIXELS", "ImageSource", "load_image", "to_bgr_uint8"]

#: Largest image, in pixels, decoded unless the caller raises the limit (40 megapixels).
DEFAULT_MAX_PIXELS = 40_000_000

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, "PILImage.Image"]


def _max_pixels(max_pixels: int | None) -> int:
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get("FACELAB_MAX_PIXELS")
    return int(env) if env else DEFAULT_MAX_PIXELS


def to_bgr_uint8(array: np.ndarray, *, assume: str = "BGR") -> np.ndarray:
    """Convert an array image to ``(H, W, 3)`` ``uint8`` BGR.

    Args:
        array: ``(H, W)`` grayscale, ``(H, W, 1)``, ``(H, W, 3)`` colour or ``(H, W, 4)`` with
            alpha; ``uint8``, ``uint16`` (scaled by 1/257), or float in ``[0, 1]``.
        assume: colour order of a 3- or 4-channel input, ``"BGR"`` (OpenCV) or ``"RGB"`` (PIL).

    Returns:
        A C-contiguous ``(H, W, 3)`` ``uint8`` BGR array (a copy only when conversion was needed).

    Raises:
        ImageError: for empty arrays or unsupported shapes/dtypes.
    """
    import cv2

    if not isinstance(array, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(array).__name__}")
    if array.size == 0:
        raise ImageError(f"empty image array of shape {array.shape}")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError("image array contains NaN or infinity")
        array = np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    else:
        raise ImageError(f"unsupported image dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"unsupported image shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    channels = array.shape[2]
    if channels == 1:
        return cv2.cvtColor(np.ascontiguousarray(array[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if channels == 4:
        code = cv2.COLOR_RGBA2BGR if assume == "RGB" else cv2.COLOR_BGRA2BGR
        return cv2.cvtColor(np.ascontiguousarray(array), code)
    if assume == "RGB":
        # OpenCV swaps channels ~10x faster than a numpy strided copy and releases the GIL,
        # which keeps background decoding from stalling inference.
        return cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(array)


def _pil_to_bgr(img: PILImage.Image, name: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if mode == "I" and arr.max(initial=0) <= 255:
            return to_bgr_uint8(arr.astype(np.uint8))
        return to_bgr_uint8(np.clip(arr, 0, 65535).astype(np.uint16))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        hi = float(arr.max(initial=0.0))
        return to_bgr_uint8(arr / hi if hi > 1.0 else arr)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        # Composite on black, as OpenCV does when it drops alpha.
        img = img.convert("RGBA")
        arr = np.asarray(img)
        return to_bgr_uint8(arr, assume="RGB")
    if mode == "L" or mode == "1":
        return to_bgr_uint8(np.asarray(img.convert("L")))
    if mode != "RGB":
        try:
            img = img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise ImageError(f"{name}: cannot convert image mode {mode!r} to RGB: {exc}") from exc
    return to_bgr_uint8(np.asarray(img), assume="RGB")


def _decode(data: Any, name: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # facelab applies its own limit below, before decoding
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(data)
            except UnidentifiedImageError as exc:
                raise ImageError(f"{name}: not an image file (format not recognised)") from exc
            except OSError as exc:
                raise ImageError(f"{name}: cannot read image: {exc}") from exc
            with img:
                width, height = img.size
                if width <= 0 or height <= 0:
                    raise ImageError(f"{name}: image has zero size ({width}x{height})")
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        f"{name}: image is {width}x{height} = {width * height / 1e6:.1f} MP, over the limit of "
                        f"{max_pixels / 1e6:.1f} MP (possible decompression bomb); raise it with max_pixels= "
                        "or FACELAB_MAX_PIXELS"
                    )
                try:
                    img.load()
                    img = ImageOps.exif_transpose(img) or img
                except (OSError, SyntaxError, ValueError) as exc:
                    raise ImageError(f"{name}: truncated or corrupt image data: {exc}") from exc
                return _pil_to_bgr(img, name)
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def load_image(source: ImageSource, *, max_pixels: int | None = None, color_order: str = "BGR") -> np.ndarray:
    """Load an image as ``(H, W, 3)`` ``uint8`` **BGR**.

    Args:
        source: a file path, encoded bytes, a numpy array, or a PIL image. Numpy arrays are taken
            to be in ``color_order`` (BGR by default, as OpenCV returns them) and are converted
            only when needed: ``(H, W)`` grayscale, 4-channel, ``uint16`` and float arrays are
            accepted too.
        max_pixels: refuse images larger than this many pixels, checked from the header before
            decoding (default :data:`DEFAULT_MAX_PIXELS`, or ``FACELAB_MAX_PIXELS``).
        color_order: channel order of a numpy array or PIL-less source: ``"BGR"`` or ``"RGB"``.

    Returns:
        ``(H, W, 3)`` ``uint8`` BGR, EXIF orientation applied for encoded sources.

    Raises:
        ImageError: the source is missing, empty, truncated, not an image, too large, or of an
            unsupported layout. The message names the file and the problem.

    Example:
        >>> import numpy as np
        >>> load_image(np.zeros((4, 6), np.uint8)).shape
        (4, 6, 3)
    """
    limit = _max_pixels(max_pixels)
    if color_order not in ("BGR", "RGB"):
        raise ImageError(f"color_order must be 'BGR' or 'RGB', not {color_order!r}")
    if isinstance(source, np.ndarray):
        if source.ndim >= 2 and source.shape[0] * source.shape[1] > limit:
            raise ImageTooLargeError(
                f"image array of {source.shape[1]}x{source.shape[0]} pixels is over the limit of {limit}"
            )
        return to_bgr_uint8(source, assume=color_order)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError("<bytes>: empty input (0 bytes)")
        return _decode(io.BytesIO(data), "<bytes>", limit)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise ImageError(f"{name}: no such file")
        if path.is_dir():
            raise ImageError(f"{name}: is a directory, not an image file")
        if path.stat().st_size == 0:
            raise ImageError(f"{name}: empty file (0 bytes)")
        return _decode(name, name, limit)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        Image = None
    if Image is not None and isinstance(source, Image.Image):
        width, height = source.size
        if width * height > limit:
            raise ImageTooLargeError(f"PIL image of {width}x{height} pixels is over the limit of {limit}")
        return _pil_to_bgr(source, "<PIL image>")
    raise ImageError(
        f"unsupported image source of type {type(source).__name__}; pass a path, bytes, numpy array or PIL image"
    )
