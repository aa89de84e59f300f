"""Exceptions raised by facelab.

Every error a user can provoke with bad input derives from :class:`FacelabError`, so callers can
catch one type; each subclass names the kind of problem. Messages say what was wrong and, where
there is one, what to do about it.
"""

from __future__ import annotations

__all__ = [
    "FacelabError",
    "ImageError",
    "ModelError",
    "ModelNotFoundError",
    "DownloadError",
    "ChecksumError",
    "ProviderError",
    "ConfigError",
    "GalleryError",
    "ContractMismatchError",
]


class FacelabError(Exception):
    """Base class of every error facelab raises on purpose."""


class ImageError(FacelabError, ValueError):
    """An image could not be read: empty, truncated, not an image, too large, or of an unusable layout."""


class ModelError(FacelabError):
    """A model file is unusable: missing, corrupt, not ONNX, or of an unrecognised signature."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A named model or pack is not known, or its files are not on disk and may not be downloaded."""


class DownloadError(FacelabError):
    """A download failed after its retries (network error, HTTP error, offline mode)."""


class ChecksumError(DownloadError):
    """A file's SHA-256 or size does not match what its model card pins."""


class ProviderError(FacelabError):
    """An ONNX Runtime execution provider was requested but not granted (raised under ``strict=True``)."""


class ConfigError(FacelabError, ValueError):
    """A configuration value or argument is invalid."""


class GalleryError(FacelabError):
    """A face gallery cannot do what was asked.

    The file or server is not a facelab gallery, is corrupt, was written by a newer facelab, or
    the request conflicts with what it holds (an unknown person or collection, a duplicate name).
    """


class ContractMismatchError(GalleryError):
    """An embedding of one recogniser was offered to a collection that holds another's.

    Embeddings of different models (or of one model with different preprocessing) cannot be
    compared; the message names both models. ``facelab gallery reembed`` migrates a collection.
    """
