"""Face detection: SCRFD (InsightFace), RetinaFace and YuNet behind one interface.

Every detector is a :class:`~facelab.detection.base.Detector`::

    from facelab.detection import create_detector
    det = create_detector("det_10g.onnx")          # architecture recognised from the outputs
    faces = det.detect("photo.jpg", max_num=0)     # -> facelab.Detections
    many = det.detect_batch(["a.jpg", "b.jpg"])    # -> list[Detections]

Importing this package registers the architectures in :data:`DETECTORS` and the ``"detection"``
runner in :data:`facelab.registry.RUNNERS`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab.detection.base import DETECTORS as DETECTORS
from facelab.detection.base import DetectionRunner as DetectionRunner
from facelab.detection.base import Detector as Detector
from facelab.detection.base import register_detector as register_detector
from facelab.detection.retinaface import (
    RETINAFACE_MXNET_NORMALIZATION,
    RETINAFACE_PYTORCH_NORMALIZATION,
    retinaface_layout,
)
from facelab.detection.retinaface import RetinaFace as RetinaFace
from facelab.detection.scrfd import SCRFD as SCRFD
from facelab.detection.scrfd import SCRFD_LAYOUTS
from facelab.detection.yunet import YUNET_NORMALIZATION, YUNET_OUTPUTS
from facelab.detection.yunet import YuNet as YuNet
from facelab.errors import ConfigError, ModelError
from facelab.ops.normalize import INSIGHTFACE_DETECTOR, Normalization

if TYPE_CHECKING:
    from collections.abc import Sequence

    from facelab.runtime.session import OrtSession, RuntimeOptions, TensorInfo
    from facelab.zoo.card import ModelCard

__all__ = [
    "DETECTORS",
    "DetectionRunner",
    "Detector",
    "RetinaFace",
    "SCRFD",
    "YuNet",
    "classify_detector",
    "create_detector",
    "detect_arch",
    "register_detector",
]


def classify_detector(outputs: Sequence[TensorInfo]) -> tuple[str, Normalization] | None:
    """Recognise a detector's architecture and input normalisation from its ONNX outputs.

    The one place that maps an output signature to a detector class: :func:`detect_arch` and the
    zoo's folder classification both use it. Rules, in order: outputs named ``cls_*``,
    ``obj_*``, ``bbox_*``, ``kps_*`` for strides 8/16/32 → ``"yunet"``; outputs
    ``loc``/``conf``/``landms`` (or three outputs with last axes 4, 2, 10), or 6/9
    four-dimensional maps (InsightFace's MXNet RetinaFace) → ``"retinaface"``; 6, 9, 10 or 15
    outputs of rank 2 or 3 (InsightFace's SCRFD exports) → ``"scrfd"``.

    Args:
        outputs: the graph outputs (:class:`~facelab.runtime.session.TensorInfo`), in order.

    Returns:
        ``(arch, normalization)`` with ``arch`` registered in :data:`DETECTORS`, or ``None``.
    """
    names = [o.name for o in outputs]
    if all(n in names for n in YUNET_OUTPUTS):
        return "yunet", YUNET_NORMALIZATION
    layout = retinaface_layout(outputs)
    if layout is not None:
        return (
            "retinaface",
            RETINAFACE_PYTORCH_NORMALIZATION if layout == "priorbox" else RETINAFACE_MXNET_NORMALIZATION,
        )
    if len(names) in SCRFD_LAYOUTS and all(len(o.shape) in (2, 3) for o in outputs):
        return "scrfd", INSIGHTFACE_DETECTOR
    return None


def detect_arch(session: OrtSession) -> str:
    """Recognise a detector's architecture from its ONNX outputs (rules: :func:`classify_detector`).

    Args:
        session: an open :class:`~facelab.runtime.session.OrtSession`.

    Returns:
        The ``arch`` name registered in :data:`DETECTORS`.

    Raises:
        ModelError: the signature matches none of them.
    """
    found = classify_detector(session.outputs)
    if found is not None:
        return found[0]
    label = session.path or "<bytes>"
    shown = ", ".join(f"{o.name}{list(o.shape)}" for o in session.outputs)
    raise ModelError(
        f"{label}: not a recognised face detector ({len(session.outputs)} outputs: {shown}). Expected SCRFD "
        "(6/9/10/15 score/box/keypoint outputs, as InsightFace's det_*.onnx), YuNet (outputs cls_8..kps_32) "
        "or RetinaFace (outputs loc/conf/landms)"
    )


def create_detector(
    path_or_card: str | os.PathLike | ModelCard,
    runtime: RuntimeOptions | None = None,
    *,
    path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Detector:
    """Create a face detector from an ``.onnx`` file or a model card.

    Args:
        path_or_card: a path to an ``.onnx`` file (the architecture is recognised from its
            outputs, see :func:`detect_arch`) or a :class:`~facelab.zoo.card.ModelCard` (its
            ``arch`` picks the class; pass the file as ``path``).
        runtime: ONNX Runtime providers and threads.
        path: the model file when ``path_or_card`` is a card.
        **kwargs: detector options (``det_size``, ``det_thresh``, ``nms_thresh``, ``max_batch``, ...).

    Returns:
        A :class:`Detector` (:class:`SCRFD`, :class:`RetinaFace` or :class:`YuNet`).

    Raises:
        ModelError: missing or unloadable file, or an unrecognised output signature.
        ConfigError: a card without ``path``.

    Example:
        >>> det = create_detector("det_500m.onnx", det_size=(640, 640))  # doctest: +SKIP
        >>> len(det.detect("t1.jpg"))  # doctest: +SKIP
        6
    """
    from facelab.runtime.session import create_session
    from facelab.zoo.card import ModelCard

    if isinstance(path_or_card, ModelCard):
        if path is None:
            raise ConfigError(f"create_detector: model card {path_or_card.name!r} given without path= to its file")
        return DetectionRunner.from_card(path_or_card, Path(path), runtime, **kwargs)
    if not isinstance(path_or_card, (str, os.PathLike)):
        raise ConfigError(f"create_detector takes a path or a ModelCard, not {type(path_or_card).__name__}")
    session = create_session(path_or_card, runtime)
    arch = detect_arch(session)
    return DETECTORS.get(arch)(session, **kwargs)
