"""The one place that holds facelab's version."""

__all__ = ["__version__"]

__version__ = "0.1.0"
