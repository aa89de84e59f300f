"""The one place that holds facelab's version."""

__version__ = "0.1.0"
