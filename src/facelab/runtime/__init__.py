"""ONNX Runtime access, in one place: every inference session facelab makes comes from here."""

from facelab.runtime.session import OrtSession as OrtSession
from facelab.runtime.session import RuntimeOptions as RuntimeOptions
from facelab.runtime.session import TensorInfo as TensorInfo
from facelab.runtime.session import available_providers as available_providers
from facelab.runtime.session import create_session as create_session
from facelab.runtime.session import resolve_providers as resolve_providers

__all__ = ["OrtSession", "RuntimeOptions", "TensorInfo", "available_providers", "create_session", "resolve_providers"]
