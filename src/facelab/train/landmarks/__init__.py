"""facelab.train.landmarks: train 2D landmark models (coordinate regression, stacked hourglass) and export them.

* :mod:`~facelab.train.landmarks.data` — iBUG ``.pts``, 300-W and WFLW readers; cropped, jittered samples;
* :mod:`~facelab.train.landmarks.models` — SimpleRegression (MobileNet / ResNet) and a stacked
  hourglass with soft-argmax decoding;
* :mod:`~facelab.train.landmarks.engine` — :class:`LandmarkConfig` and :func:`train_landmarks`
  (NME through :mod:`facelab.eval.landmarks`);
* :mod:`~facelab.train.landmarks.export` — :func:`export_landmarks` (``2d106det`` signature + card).

The names below are loaded on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "LANDMARK_MODELS",
    "LandmarkConfig",
    "LandmarkRecord",
    "build_landmark_model",
    "evaluate_landmarks",
    "export_landmarks",
    "load_landmark_model",
    "load_landmark_records",
    "train_landmarks",
]

_WHERE = {
    "LANDMARK_MODELS": "models",
    "build_landmark_model": "models",
    "LandmarkConfig": "engine",
    "train_landmarks": "engine",
    "evaluate_landmarks": "engine",
    "LandmarkRecord": "data",
    "load_landmark_records": "data",
    "export_landmarks": "export",
    "load_landmark_model": "export",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
