"""MTCNN (Zhang et al. 2016) from the PyPI package ``mtcnn==1.0.0`` (ipazc/mtcnn, MIT), on ONNX Runtime.

* :mod:`facelab.mtcnn.convert` — the package's P/R/O-Net weights (lz4 joblib pickles) to ONNX,
  cached under ``$FACELAB_HOME/converted/``;
* :mod:`facelab.mtcnn.processing` — the cascade's numpy steps (pyramid, NMS, crops, calibration);
* :mod:`facelab.mtcnn.detector` — :class:`MTCNN`, a :class:`~facelab.detection.base.Detector`
  (arch ``"mtcnn"``) with five keypoints, batched across images;
* :mod:`facelab.mtcnn.fused` — MTCNN and dlib's MMOD under one NMS (arch ``"mtcnn_mmod"``), the
  open pack's default detector.

``create_mtcnn()`` converts (once) and loads the detector; TensorFlow is never needed and the
``mtcnn`` package is never imported (only its weight files are read).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__all__ = ["create_mtcnn"]

if TYPE_CHECKING:
    from facelab.mtcnn.detector import MTCNN
    from facelab.runtime.session import RuntimeOptions


def create_mtcnn(
    runtime: RuntimeOptions | None = None, *, home: str | os.PathLike | None = None, **kwargs: Any
) -> MTCNN:
    """The MTCNN detector from the installed ``mtcnn`` package's weights (converted once, cached).

    Args:
        runtime: ONNX Runtime providers and threads.
        home: facelab home for the converted files.
        **kwargs: :class:`~facelab.mtcnn.detector.MTCNN` options (``min_face``, ``det_thresh``, ...).

    Raises:
        ModelNotFoundError: ``mtcnn==1.0.0`` is not installed (``pip install 'facelab[open]'``).
    """
    from facelab.mtcnn.convert import convert_cached
    from facelab.mtcnn.detector import MTCNN

    files = convert_cached(home)
    return MTCNN.from_path(files.pnet, runtime, rnet_path=files.rnet, onet_path=files.onet, **kwargs)
