"""facelab.train.detectors: torch face detectors that load published weights and export to ONNX.

:mod:`~facelab.train.detectors.retinaface_mnet` — biubug6's RetinaFace-MobileNet0.25 and the
RFB / Slim detectors of Face-Detector-1MB-with-landmark, with :func:`export_retinaface`.

This ``__init__`` imports nothing heavy; the sub-module imports torch.
"""

from __future__ import annotations

__all__: list[str] = []
