"""facelab.train.detection: train SCRFD and RetinaFace face detectors and export them into facelab's zoo.

Modules (torch only where training needs it):

* :mod:`~facelab.train.detection.annotations` — RetinaFace ``label.txt``, SCRFD ``labelv2.txt``,
  WIDER FACE ``wider_face_*_bbx_gt.txt``, COCO JSON and dlib XML readers (numpy only);
* :mod:`~facelab.train.detection.augment` — SCRFD's and RetinaFace's augmentation pipelines and
  :func:`~facelab.train.detection.augment.draw_augmented_samples` (OpenCV only);
* :mod:`~facelab.train.detection.scrfd_net`, :mod:`~facelab.train.detection.retinaface_net` — the networks;
* :mod:`~facelab.train.detection.variants` — the published variants (:data:`DETECTOR_VARIANTS`);
* :mod:`~facelab.train.detection.losses` — anchors, ATSS, prior matching, QFL / DIoU / OHEM losses;
* :mod:`~facelab.train.detection.engine` — :class:`DetectConfig` and :func:`train_detector`;
* :mod:`~facelab.train.detection.export` — :func:`export_detector` (InsightFace signatures + card).

The names below are loaded on first access, so ``import facelab.train.detection`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DETECTOR_VARIANTS",
    "DetectConfig",
    "DetectorModel",
    "ImageAnnotation",
    "build_augmentation",
    "build_detector",
    "draw_augmented_samples",
    "evaluate_detector",
    "export_detector",
    "load_annotations",
    "load_detector",
    "train_detector",
]

_WHERE = {
    "DETECTOR_VARIANTS": "variants",
    "DetectorModel": "variants",
    "build_detector": "variants",
    "DetectConfig": "engine",
    "train_detector": "engine",
    "evaluate_detector": "engine",
    "ImageAnnotation": "annotations",
    "load_annotations": "annotations",
    "build_augmentation": "augment",
    "draw_augmented_samples": "augment",
    "export_detector": "export",
    "load_detector": "export",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
