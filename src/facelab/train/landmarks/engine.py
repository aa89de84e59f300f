"""``facelab train landmarks``: the landmark training config and run, and NME evaluation during training.

:class:`LandmarkConfig` extends the loop settings with the model (``coordreg`` or ``hourglass``),
the data (``pts``, ``300w`` or ``wflw``), the crop (192 pixels, 1.5 box sides, as InsightFace's
``Landmark``), its jitter and the loss. :func:`train_landmarks` runs
:func:`facelab.train.loop.run_loop`; evaluation runs facelab's own
:class:`~facelab.alignment.landmarks.LandmarkRunner` on the torch model (through
:class:`~facelab.train.torch_session.TorchSession`, so the crop and decoding are the runner's)
and scores it with :func:`facelab.eval.landmarks.nme` (inter-ocular for 68 points, outer eye
corners 60/72 for WFLW's 98, the box size otherwise).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab.errors import ConfigError
from facelab.ops.normalize import INSIGHTFACE_LANDMARK
from facelab.train.config import check_fields
from facelab.train.landmarks.data import (
    LandmarkAugment,
    LandmarkDataset,
    LandmarkRecord,
    assign_detector_boxes,
    load_landmark_records,
)
from facelab.train.landmarks.models import LANDMARK_MODELS, build_landmark_model
from facelab.train.loop import LoopConfig, LoopResult, read_model_pt, run_loop

__all__ = [
    "LandmarkConfig",
    "train_landmarks",
    "LandmarkExportForm",
    "landmark_card",
    "landmark_task",
    "evaluate_landmarks",
    "make_landmark_runner",
]

_logger = logging.getLogger(__name__)

#: NME normalisation per point count (``"auto"``): name and eye index groups.
_NME_NORMS: dict[int, tuple[str, tuple[tuple[int, ...], tuple[int, ...]] | None]] = {
    68: ("inter_ocular", None),
    98: ("inter_ocular", ((60,), (72,))),
}


@dataclass
class LandmarkConfig(LoopConfig):
    """Everything a landmark training run needs (defaults: SimpleRegression, MobileNet-0.5, 192 crops)."""

    model: str = "coordreg"  #: "coordreg" (SimpleRegression) or "hourglass"
    model_kwargs: dict[str, Any] = field(default_factory=lambda: {"backbone": "mobilenet", "width": 0.5})
    num_points: int = 0  #: 0 = from the data
    pretrained: str = ""  #: a facelab landmark model.pt to start from
    train_ann: str = ""  #: .pts file/folder, the 300-W root or a WFLW list file
    train_format: str = "auto"
    train_root: str = ""  #: image folder (WFLW)
    subsets: list[str] = field(default_factory=list)  #: 300-W sub-folders
    zero_based: bool = False  #: subtract 1 from .pts coordinates
    val_ann: str = ""
    val_format: str = "auto"
    val_root: str = ""
    input_size: int = 192
    crop_scale: float = 1.5  #: box sides per crop side (InsightFace's 1.5)
    #: an ONNX face detector (or a file facelab.detection.create_detector opens): train on its boxes, as
    #: the runner will crop at inference ("" = the annotation's box, else the points' bounding box)
    box_detector: str = ""
    box_detector_size: int = 640
    aug_scale: float = 0.0
    aug_rotation: float = 0.0
    aug_shift: float = 0.0
    flip_prob: float = 0.0
    photometric: bool = False
    flip_pairs: list[list[int]] = field(default_factory=list)  #: left/right pairs for layouts other than 68/98
    loss: str = "l1"  #: "l1", "smooth_l1" or "l2" on the [-1, 1] coordinates
    nme_norm: str = "auto"

    def validate(self) -> LandmarkConfig:
        """Check ranges; returns ``self``. Raises :class:`~facelab.errors.ConfigError`."""
        self.check_loop()
        checks = [
            (self.model in LANDMARK_MODELS, f"model must be one of {LANDMARK_MODELS.names()}"),
            (self.input_size >= 32 and self.input_size % 32 == 0, "input_size must be a multiple of 32 (192)"),
            (self.crop_scale > 0, "crop_scale must be > 0"),
            (self.loss in ("l1", "smooth_l1", "l2"), "loss must be l1, smooth_l1 or l2"),
            (0 <= self.flip_prob <= 1, "flip_prob must be in [0, 1]"),
            (self.num_points >= 0, "num_points must be >= 0"),
        ]
        check_fields(checks)
        return self


class LandmarkExportForm(nn.Module):
    """The exported form: raw RGB ``0..255`` crops ``(N, 3, S, S)`` → ``(x − 127.5) / 128`` in the graph → ``(N, 2K)``.

    InsightFace's ``2d106det`` also normalises inside the graph (its card has mean 0, std 1).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw RGB crops → coordinates in ``[−1, 1]``."""
        return self.net((x - 127.5) * (1.0 / 128.0))


def landmark_task(num_points: int) -> str:
    """The card task of a 2D model with ``num_points`` points (``landmark_2d_106`` for InsightFace's layout)."""
    return f"landmark_2d_{int(num_points)}"


def landmark_card(path: str | Path, num_points: int, size: int = 192, crop_scale: float = 1.5, **values: Any) -> Any:
    """The card of an exported landmark model (RGB, normalised in the graph, ``crop_scale`` box sides per crop)."""
    from facelab.zoo.card import ModelCard

    base = {
        "task": landmark_task(num_points),
        "arch": "insightface_landmark",
        "color_order": "RGB",
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "input_size": (size, size),
        "extra": {
            "num_points": int(num_points),
            "point_dim": 2,
            "output_dim": 2 * int(num_points),
            "crop_scale": float(crop_scale),
        },
    }
    return ModelCard.for_local_file(path, **{**base, **values})


def make_landmark_runner(
    net: nn.Module, num_points: int, size: int = 192, crop_scale: float = 1.5, device: Any = "cpu"
) -> Any:
    """A :class:`~facelab.alignment.landmarks.LandmarkRunner` running the torch model through a TorchSession."""
    from facelab.alignment.landmarks import LandmarkRunner
    from facelab.runtime.session import TensorInfo
    from facelab.train.torch_session import TorchSession

    session = TorchSession(
        LandmarkExportForm(net),
        [TensorInfo("data", (None, 3, size, size), "tensor(float)")],
        [TensorInfo("fc1", (None, 2 * num_points), "tensor(float)")],
        device,
    )
    card = landmark_card("torch-model.onnx", num_points, size, crop_scale, name=f"torch.{landmark_task(num_points)}")
    return LandmarkRunner(session, card)


def _nme_args(num_points: int, norm: str) -> tuple[str, Any]:
    if norm != "auto":
        return norm, None
    return _NME_NORMS.get(num_points, ("box", None))


def evaluate_landmarks(runner: Any, records: list[LandmarkRecord], norm: str = "auto") -> dict[str, float]:
    """Mean NME (and its max) of a landmark runner on records, each cropped on its face box."""
    from facelab.eval.landmarks import nme
    from facelab.io.image import load_image

    preds, gts = [], []
    for rec in records:
        pts = runner.predict(load_image(rec.path), rec.face_box()[None])[0]
        preds.append(pts[:, :2])
        gts.append(rec.points)
    name, eyes = _nme_args(len(records[0].points), norm)
    values = nme(np.stack(preds), np.stack(gts), name, eye_indices=eyes)
    return {"nme": float(values.mean()), "nme_max": float(values.max()), "n": float(len(values))}


def _loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="sum")
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, reduction="sum", beta=0.01)
    return F.mse_loss(pred, target, reduction="sum")


def train_landmarks(cfg: LandmarkConfig) -> LoopResult:
    """Train a landmark model with ``cfg`` (see the module doc); ``model.pt`` is what :func:`export_landmarks` reads.

    Raises:
        ConfigError: bad settings or data.
        TrainingError: the loss became NaN/inf.
    """
    from facelab.train.data import normalize_batch
    from facelab.train.detection.losses import global_sum

    cfg.validate()
    if not cfg.train_ann:
        raise ConfigError("config: train_ann (the landmark annotations) is required")
    records = load_landmark_records(
        cfg.train_ann, cfg.train_format, cfg.train_root or None, zero_based=cfg.zero_based, subsets=cfg.subsets
    )
    num_points = cfg.num_points or len(records[0].points)
    if num_points != len(records[0].points):
        raise ConfigError(f"config: num_points={cfg.num_points} but the data has {len(records[0].points)} points")
    val = (
        load_landmark_records(cfg.val_ann, cfg.val_format, cfg.val_root or None, zero_based=cfg.zero_based)
        if cfg.val_ann
        else []
    )
    if cfg.box_detector:
        from facelab.detection import create_detector

        detector = create_detector(cfg.box_detector, det_size=(cfg.box_detector_size, cfg.box_detector_size))
        assign_detector_boxes(records, detector)
        if val:
            assign_detector_boxes(val, detector)
    torch.manual_seed(cfg.seed)
    net = build_landmark_model(cfg.model, num_points, **cfg.model_kwargs)
    if cfg.pretrained:
        net.load_state_dict(_load_model_pt(cfg.pretrained)["model"])
    augment = LandmarkAugment(cfg.aug_scale, cfg.aug_rotation, 0.6, cfg.aug_shift, cfg.flip_prob, cfg.photometric)
    dataset = LandmarkDataset(records, cfg.input_size, cfg.crop_scale, augment, cfg.seed, cfg.flip_pairs or None)

    def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])

    def loss_fn(
        batch: tuple[torch.Tensor, torch.Tensor], device: torch.device
    ) -> tuple[torch.Tensor, dict[str, float]]:
        crops, target = batch
        x = normalize_batch(crops.to(device), INSIGHTFACE_LANDMARK)
        target = target.to(device).reshape(len(target), -1)
        outs = net.forward_all(x)  # type: ignore[operator]
        n = global_sum(torch.tensor(float(target.numel()), device=device))
        losses = [_loss(cfg.loss, o.float(), target) / n for o in outs]
        total = sum(losses) / len(losses)
        return total, {f"loss_stack{i}": float(v.detach()) for i, v in enumerate(losses)} if len(losses) > 1 else {}

    def evaluate(m: nn.Module) -> dict[str, dict[str, float]]:
        device = next(m.parameters()).device
        runner = make_landmark_runner(net, num_points, cfg.input_size, cfg.crop_scale, device)
        return {Path(cfg.val_ann).stem or "val": evaluate_landmarks(runner, val, cfg.nme_norm)}

    info = {
        "model_name": cfg.model,
        "model_kwargs": dict(cfg.model_kwargs),
        "num_points": num_points,
        "input_size": cfg.input_size,
        "crop_scale": cfg.crop_scale,
    }
    return run_loop(
        cfg, net, dataset, collate, loss_fn, evaluate=evaluate if val else None, model_info=info, kind="landmarks"
    )


def _load_model_pt(path: str | Path) -> dict[str, Any]:
    p, state = read_model_pt(path, ConfigError)
    if not isinstance(state, dict) or state.get("kind") != "landmarks":
        raise ConfigError(f"{p} is not a facelab landmark checkpoint (written by facelab train landmarks)")
    return state
