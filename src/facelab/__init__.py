"""facelab: face detection, alignment, recognition, landmarks and attributes on ONNX Runtime.

Importing facelab is cheap: it imports numpy and nothing heavy (no torch, no web framework,
no onnxruntime until a model is loaded). Public names are resolved lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from facelab.errors import ChecksumError as ChecksumError
from facelab.errors import ConfigError as ConfigError
from facelab.errors import DownloadError as DownloadError
from facelab.errors import FacelabError as FacelabError
from facelab.errors import ImageError as ImageError
from facelab.errors import ModelError as ModelError
from facelab.errors import ModelNotFoundError as ModelNotFoundError
from facelab.errors import ProviderError as ProviderError
from facelab.structures import Detections as Detections
from facelab.structures import Face as Face
from facelab.structures import FaceKeypoint as FaceKeypoint
from facelab.version import __version__ as __version__

_LAZY = {
    "load_image": "facelab.io.image",
    "FaceAnalyzer": "facelab.pipeline",
    "compare": "facelab.recognition.compare",
    "RuntimeOptions": "facelab.runtime.session",
    "ModelCard": "facelab.zoo.card",
    "list_models": "facelab.zoo",
    "get_card": "facelab.zoo",
    "list_packs": "facelab.zoo",
    "create_detector": "facelab.detection",
    "create_recognizer": "facelab.recognition",
    "norm_crop": "facelab.alignment.transform",
    "draw": "facelab.viz",
}

__all__ = sorted(
    [
        "ChecksumError",
        "ConfigError",
        "Detections",
        "DownloadError",
        "Face",
        "FaceKeypoint",
        "FacelabError",
        "ImageError",
        "ModelError",
        "ModelNotFoundError",
        "ProviderError",
        "__version__",
        *_LAZY,
    ]
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'facelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
