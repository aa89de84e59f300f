"""What one service process holds: settings, the shared analyser and gallery, keys, pool, metrics.

Routes reach it through :func:`get_state`. The image helpers here enforce the upload limits
before decoding: size per image, media type from the file's first bytes (JPEG, PNG, WebP, BMP,
TIFF), then the decoded-pixel limit of :func:`facelab.io.load_image`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import Request, UploadFile

from facelab.io import load_image
from facelab.serve.auth import KeyStore
from facelab.serve.cursors import CursorSigner
from facelab.serve.errors import ApiError
from facelab.serve.metrics import ServiceMetrics
from facelab.serve.pool import InferencePool
from facelab.serve.settings import ServeSettings

__all__ = ["ServiceState", "get_state", "sniff_media_type", "read_upload", "decode_upload"]

_logger = logging.getLogger("facelab.serve")

_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def sniff_media_type(data: bytes) -> str | None:
    r"""The image type of ``data`` from its first bytes, or ``None``.

    Example:
        >>> sniff_media_type(b"\x89PNG\r\n\x1a\n...."), sniff_media_type(b"hello")
        ('image/png', None)
    """
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return None


@dataclass
class ServiceState:
    """The shared parts of the service."""

    settings: ServeSettings
    keys: KeyStore
    cursors: CursorSigner
    pool: InferencePool
    metrics: ServiceMetrics
    analyzer: Any = None
    gallery: Any = None
    swapper: Any = None
    liveness_check: Any = None
    jobs: Any = None
    ready: bool = False
    started_at: float = field(default_factory=time.time)
    load_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def require_ready(self) -> None:
        """503 ``not_ready`` until the models are loaded."""
        if not self.ready:
            raise ApiError(503, "not_ready", "the service is still loading its models", {"error": self.load_error})


def get_state(request: Request) -> ServiceState:
    """The state of the app serving ``request``."""
    state: ServiceState = request.app.state.facelab
    return state


async def read_upload(state: ServiceState, upload: UploadFile | None, field_name: str) -> bytes:
    """The bytes of one uploaded image, checked for presence, size and media type (not decoded)."""
    if upload is None:
        raise ApiError(422, "validation_error", f"the form field {field_name!r} must hold an image file")
    limit = state.settings.max_image_bytes
    if upload.size is not None and upload.size > limit:
        raise ApiError(
            413, "image_too_large", f"{field_name}: {upload.size} bytes is over the limit of {limit}", {"limit": limit}
        )
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "image_too_large", f"{field_name}: over the limit of {limit} bytes", {"limit": limit})
    if not data:
        raise ApiError(400, "invalid_image", f"{field_name}: empty file (0 bytes)")
    if sniff_media_type(data) is None:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"{field_name}: not a JPEG, PNG, WebP, BMP or TIFF image",
            {"field": field_name, "declared": upload.content_type},
        )
    return data


def decode_upload(state: ServiceState, data: bytes, field_name: str) -> np.ndarray:
    """Decode checked bytes (on a worker thread): ``(H, W, 3)`` ``uint8`` BGR, EXIF applied."""
    with state.metrics.time_stage("decode"):
        try:
            return load_image(data, max_pixels=state.settings.max_pixels)
        except Exception as exc:
            # name the field; the error handlers map ImageTooLargeError to 413 and ImageError to 400
            exc.args = (f"{field_name}: {exc}",)
            raise
