"""RetinaFace-MobileNet0.25 and the RFB / Slim "1 MB" face detectors in torch, with ONNX export.

The networks take the parameter names and shapes of the published state_dicts of
biubug6/Face-Detector-1MB-with-landmark (MIT): ``mobilenet0.25_Final.pth``, ``RBF_Final.pth``
and ``slim_Final.pth`` load with ``strict=True`` (a ``module.`` prefix left by
``DataParallel`` is removed first). All three:

* input: ``(N, 3, H, W)`` ``float32``, BGR, minus ``(104, 117, 123)``, no scaling; any H, W;
* outputs: ``loc (N, P, 4)`` box deltas, ``conf (N, P, 2)`` softmax over (background, face),
  ``landms (N, P, 10)`` landmark deltas, over SSD prior boxes ordered by level, row, column,
  size (:func:`facelab.detection._decode.prior_boxes`) with variances ``(0.1, 0.2)``.

Prior boxes of this repository (they differ from Pytorch_Retinaface's ``[[16, 32], [64, 128],
[256, 512]]``): MobileNet0.25 ``min_sizes [[10, 20], [32, 64], [128, 256]]``, steps
``[8, 16, 32]``; RFB and Slim ``[[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]]``, steps
``[8, 16, 32, 64]`` (:data:`facelab.detection.retinaface_graph.BIUBUG6_VARIANTS`, shared with the
torch-free converter :func:`facelab.detection.retinaface_graph.convert_retinaface`). Activations
are plain ReLU throughout (no leaky ReLU).

:func:`export_retinaface` writes an ONNX file (dynamic batch / height / width; input ``input``,
outputs ``loc``, ``conf``, ``landms``) and a :class:`~facelab.zoo.card.ModelCard` beside it, which
:func:`facelab.zoo.identify_model` and :func:`facelab.detection.create_detector` pick up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab.detection.retinaface_graph import BIUBUG6_VARIANTS, VARIANCES, retinaface_card
from facelab.errors import ConfigError, ModelError
from facelab.registry import Registry
from facelab.train._onnx_export import check_opset, compare_with_onnxruntime, torch_to_onnx
from facelab.zoo.card import ModelCard

__all__ = [
    "RETINAFACE_VARIANTS",
    "RetinaFaceMNet",
    "RetinaFaceSpec",
    "RFBDetector",
    "SlimDetector",
    "build_retinaface",
    "export_retinaface",
    "guess_variant",
    "load_retinaface",
]

_logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- building blocks
# Sequential index layouts follow the checkpoints' key names (e.g. ``stage1.1.3.weight`` is the
# point-wise convolution of a depth-wise separable block).


def _act(leaky: float) -> nn.Module:
    """ReLU, or LeakyReLU(``leaky``) (biubug6/Pytorch_Retinaface's MobileNet uses 0.1)."""
    return nn.LeakyReLU(leaky, inplace=True) if leaky else nn.ReLU(inplace=True)


def _conv3x3_bn(cin: int, cout: int, stride: int = 1, relu: bool = True, leaky: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(_act(leaky))
    return nn.Sequential(*layers)


def _conv1x1_bn(cin: int, cout: int, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), _act(leaky))


def _separable_bn(cin: int, cout: int, stride: int, leaky: float = 0.0) -> nn.Sequential:
    """Depth-wise 3x3 + BN + ReLU, point-wise 1x1 + BN + ReLU (keys 0, 1, 3, 4)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        _act(leaky),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
        _act(leaky),
    )


def _separable_head(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depth-wise 3x3 with bias + ReLU, point-wise 1x1 with bias (keys 0, 2); no BN."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1),
    )


def _flatten(x: torch.Tensor, cols: int) -> torch.Tensor:
    """``(N, A*cols, H, W)`` → ``(N, H*W*A, cols)`` (row, column, anchor order)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, cols)


def _outputs(
    locs: list[torch.Tensor], confs: list[torch.Tensor], landms: list[torch.Tensor], softmax: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenated ``(loc, conf, landms)``; ``conf`` softmaxed unless ``softmax`` is false (training logits)."""
    loc = torch.cat([_flatten(t, 4) for t in locs], dim=1)
    conf = torch.cat([_flatten(t, 2) for t in confs], dim=1)
    lm = torch.cat([_flatten(t, 10) for t in landms], dim=1)
    return loc, F.softmax(conf, dim=-1) if softmax else conf, lm


# ----------------------------------------------------------------------------- MobileNet0.25


class _MobileNetBody(nn.Module):
    """MobileNetV1 x0.25 trunk; returns the stride-8, 16 and 32 feature maps (64, 128, 256 ch)."""

    def __init__(self, leaky: float = 0.0) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv3x3_bn(3, 8, 2, leaky=leaky),
            _separable_bn(8, 16, 1, leaky),
            _separable_bn(16, 32, 2, leaky),
            _separable_bn(32, 32, 1, leaky),
            _separable_bn(32, 64, 2, leaky),
            _separable_bn(64, 64, 1, leaky),
        )
        self.stage2 = nn.Sequential(
            _separable_bn(64, 128, 2, leaky), *[_separable_bn(128, 128, 1, leaky) for _ in range(5)]
        )
        self.stage3 = nn.Sequential(_separable_bn(128, 256, 2, leaky), _separable_bn(256, 256, 1, leaky))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]


class _FPN(nn.Module):
    """Lateral 1x1 convs, top-down nearest upsampling + add, 3x3 merge on the two finer levels."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, leaky: float = 0.0) -> None:
        super().__init__()
        self.output1 = _conv1x1_bn(in_channels[0], out_channels, leaky)
        self.output2 = _conv1x1_bn(in_channels[1], out_channels, leaky)
        self.output3 = _conv1x1_bn(in_channels[2], out_channels, leaky)
        self.merge1 = _conv3x3_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = _conv3x3_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class _SSH(nn.Module):
    """SSH context module: 3x3 (C/2) ‖ 5x5 as two 3x3 (C/4) ‖ 7x7 as three 3x3 (C/4), then ReLU."""

    def __init__(self, channels: int, leaky: float = 0.0) -> None:
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.conv3X3 = _conv3x3_bn(channels, half, relu=False)
        self.conv5X5_1 = _conv3x3_bn(channels, quarter, leaky=leaky)
        self.conv5X5_2 = _conv3x3_bn(quarter, quarter, relu=False)
        self.conv7X7_2 = _conv3x3_bn(quarter, quarter, leaky=leaky)
        self.conv7x7_3 = _conv3x3_bn(quarter, quarter, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5_1 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(branch5_1), self.conv7x7_3(self.conv7X7_2(branch5_1))], 1)
        return F.relu(out)


class _Conv1x1Head(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x)


class _RetinaFaceNeckHeads(nn.Module):
    """RetinaFace after its body: FPN, one SSH per level and 1x1 class / box / landmark heads (biubug6 keys).

    A subclass sets ``self.body`` (stride-8/16/32 feature maps) and then calls :meth:`_add_neck_and_heads`.
    """

    body: nn.Module

    def _add_neck_and_heads(
        self, body_channels: tuple[int, int, int], channels: int, leaky: float, anchors: int
    ) -> None:
        self.fpn = _FPN(body_channels, channels, leaky)
        self.ssh1, self.ssh2, self.ssh3 = _SSH(channels, leaky), _SSH(channels, leaky), _SSH(channels, leaky)
        self.ClassHead = nn.ModuleList([_Conv1x1Head(channels, anchors * 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Conv1x1Head(channels, anchors * 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Conv1x1Head(channels, anchors * 10) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` normalised BGR → ``(loc, conf, landms)``."""
        p3, p4, p5 = self.fpn(self.body(x))
        feats = [self.ssh1(p3), self.ssh2(p4), self.ssh3(p5)]
        return _outputs(
            [h(f) for h, f in zip(self.BboxHead, feats)],
            [h(f) for h, f in zip(self.ClassHead, feats)],
            [h(f) for h, f in zip(self.LandmarkHead, feats)],
            softmax=not self.training,
        )


class RetinaFaceMNet(_RetinaFaceNeckHeads):
    """RetinaFace with a MobileNetV1-0.25 trunk, FPN (64 ch), SSH and 1x1 heads, 2 priors per cell.

    ``forward(x)`` takes ``(N, 3, H, W)`` normalised BGR and returns ``(loc (N, P, 4),
    conf (N, P, 2), landms (N, P, 10))``; ``conf`` is softmaxed in eval mode and raw logits in
    training mode (as biubug6's ``phase``).

    Args:
        anchors: priors per cell.
        channels: FPN / SSH width.
        leaky: negative slope of the activations (0 = ReLU, as Face-Detector-1MB-with-landmark;
            biubug6/Pytorch_Retinaface's MobileNet0.25 uses 0.1).
    """

    def __init__(self, anchors: int = 2, channels: int = 64, leaky: float = 0.0) -> None:
        super().__init__()
        self.body = _MobileNetBody(leaky)
        self._add_neck_and_heads((64, 128, 256), channels, leaky, anchors)


# ----------------------------------------------------------------------------- RFB / Slim


class _BasicConv(nn.Module):
    """Conv (no bias) + BN, ReLU optional (keys ``conv``, ``bn``)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1, relu: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class _BasicRFB(nn.Module):
    """Receptive-field block: three dilated branches (dilation 2, 3, 5), 1x1 fuse, 1x1 shortcut, ReLU."""

    def __init__(self, channels: int, reduce: int = 8, scale: float = 1.0) -> None:
        super().__init__()
        inter = channels // reduce
        self.scale = scale
        self.branch0 = nn.Sequential(
            _BasicConv(channels, inter, 1, relu=False),
            _BasicConv(inter, 2 * inter, 3, padding=1),
            _BasicConv(2 * inter, 2 * inter, 3, padding=2, dilation=2, relu=False),
        )
        self.branch1 = nn.Sequential(
            _BasicConv(channels, inter, 1, relu=False),
            _BasicConv(inter, 2 * inter, 3, padding=1),
            _BasicConv(2 * inter, 2 * inter, 3, padding=3, dilation=3, relu=False),
        )
        self.branch2 = nn.Sequential(
            _BasicConv(channels, inter, 1, relu=False),
            _BasicConv(inter, inter // 2 * 3, 3, padding=1),
            _BasicConv(inter // 2 * 3, 2 * inter, 3, padding=1),
            _BasicConv(2 * inter, 2 * inter, 3, padding=5, dilation=5, relu=False),
        )
        self.ConvLinear = _BasicConv(6 * inter, channels, 1, relu=False)
        self.shortcut = _BasicConv(channels, channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ConvLinear(torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1))
        return F.relu(out * self.scale + self.shortcut(x))


class SlimDetector(nn.Module):
    """The "Slim" 1 MB detector: separable trunk, 4 levels (strides 8..64), separable heads.

    Same input/outputs as :class:`RetinaFaceMNet`; 3, 2, 2, 3 priors per cell.
    """

    def __init__(self, rfb: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv3x3_bn(3, 16, 2)
        self.conv2 = _separable_bn(16, 32, 1)
        self.conv3 = _separable_bn(32, 32, 2)
        self.conv4 = _separable_bn(32, 32, 1)
        self.conv5 = _separable_bn(32, 64, 2)
        self.conv6 = _separable_bn(64, 64, 1)
        self.conv7 = _separable_bn(64, 64, 1)
        self.conv8: nn.Module = _BasicRFB(64) if rfb else _separable_bn(64, 64, 1)
        self.conv9 = _separable_bn(64, 128, 2)
        self.conv10 = _separable_bn(128, 128, 1)
        self.conv11 = _separable_bn(128, 128, 1)
        self.conv12 = _separable_bn(128, 256, 2)
        self.conv13 = _separable_bn(256, 256, 1)
        self.conv14 = nn.Sequential(
            nn.Conv2d(256, 64, 1), nn.ReLU(inplace=True), _separable_head(64, 256, stride=2), nn.ReLU(inplace=True)
        )
        levels = ((64, 3), (128, 2), (256, 2))
        self.loc = nn.Sequential(*[_separable_head(c, a * 4) for c, a in levels], nn.Conv2d(256, 12, 3, padding=1))
        self.conf = nn.Sequential(*[_separable_head(c, a * 2) for c, a in levels], nn.Conv2d(256, 6, 3, padding=1))
        self.landm = nn.Sequential(*[_separable_head(c, a * 10) for c, a in levels], nn.Conv2d(256, 30, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` normalised BGR → ``(loc, conf, landms)``."""
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "conv7", "conv8"):
            x = getattr(self, name)(x)
        f8 = x
        f16 = self.conv11(self.conv10(self.conv9(f8)))
        f32 = self.conv13(self.conv12(f16))
        f64 = self.conv14(f32)
        feats = [f8, f16, f32, f64]
        return _outputs(
            [m(f) for m, f in zip(self.loc, feats)],
            [m(f) for m, f in zip(self.conf, feats)],
            [m(f) for m, f in zip(self.landm, feats)],
            softmax=not self.training,
        )


class RFBDetector(SlimDetector):
    """The "RFB" 1 MB detector: :class:`SlimDetector` with a receptive-field block at stride 8."""

    def __init__(self) -> None:
        super().__init__(rfb=True)


# ----------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class RetinaFaceSpec:
    """One published variant: its torch class, prior configuration and card name."""

    build: Callable[[], nn.Module]
    min_sizes: tuple[tuple[int, ...], ...]
    steps: tuple[int, ...]
    card_name: str
    marker: str  #: a state_dict key only this variant has
    metrics: dict[str, Any]


RETINAFACE_VARIANTS: Registry[RetinaFaceSpec] = Registry("RetinaFace variant")
for _name, _build in (("mobilenet0.25", RetinaFaceMNet), ("RFB", RFBDetector), ("slim", SlimDetector)):
    _priors = BIUBUG6_VARIANTS.get(_name)
    RETINAFACE_VARIANTS.register(_name)(
        RetinaFaceSpec(_build, _priors.min_sizes, _priors.steps, _priors.card_name, _priors.marker, _priors.metrics)
    )


def _clean_state_dict(state: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ModelError(f"{source}: not a state_dict (got {type(state).__name__})")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def guess_variant(state: dict[str, Any]) -> str:
    """The variant name (``"mobilenet0.25"``, ``"RFB"`` or ``"slim"``) of a cleaned state_dict.

    Raises:
        ModelError: no variant's marker key is present.
    """
    for name in RETINAFACE_VARIANTS.names():
        if RETINAFACE_VARIANTS.get(name).marker in state:
            return name
    raise ModelError(f"not a known RetinaFace state_dict; first keys {list(state)[:3]}")


def build_retinaface(variant: str = "mobilenet0.25") -> nn.Module:
    """An untrained network of a variant (``"mobilenet0.25"``, ``"RFB"``, ``"slim"``), eval mode.

    Raises:
        ConfigError: unknown variant.
    """
    if variant not in RETINAFACE_VARIANTS:
        raise ConfigError(f"unknown RetinaFace variant {variant!r}; known: {RETINAFACE_VARIANTS.names()}")
    return RETINAFACE_VARIANTS.get(variant).build().eval()


def load_retinaface(pth: str | Path, variant: str | None = None) -> tuple[nn.Module, str]:
    """Load a biubug6 checkpoint into our network with ``strict=True``.

    Args:
        pth: a ``.pth`` state_dict (optionally with ``module.`` prefixes or under ``"state_dict"``).
        variant: the variant; recognised from the keys when ``None``.

    Returns:
        ``(network in eval mode on CPU, variant name)``.

    Raises:
        ModelError: missing file, not a state_dict, or keys/shapes that do not match.
    """
    path = Path(pth)
    if not path.is_file():
        raise ModelError(f"RetinaFace checkpoint {path} not found")
    state = _clean_state_dict(torch.load(path, map_location="cpu", weights_only=True), str(path))
    variant = variant or guess_variant(state)
    model = build_retinaface(variant)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: does not load as RetinaFace {variant!r}: {exc}") from exc
    return model.eval(), variant


def _write_prior_metadata(path: Path, spec: RetinaFaceSpec) -> None:
    """Store the prior configuration in the ONNX ``metadata_props`` (JSON values).

    :class:`facelab.detection.RetinaFace` reads it when the file is opened without its card.
    """
    import onnx

    model = onnx.load(str(path))
    values = {
        "min_sizes": json.dumps([list(level) for level in spec.min_sizes]),
        "steps": json.dumps(list(spec.steps)),
        "variances": json.dumps(list(VARIANCES)),
    }
    onnx.helper.set_model_props(model, values)
    onnx.save(model, str(path))


def export_retinaface(
    pth: str | Path,
    out_onnx: str | Path,
    *,
    variant: str | None = None,
    name: str | None = None,
    opset: int = 17,
    atol: float = 1e-4,
) -> ModelCard:
    """Export a biubug6 RetinaFace / RFB / Slim checkpoint to ONNX plus a model card.

    The ONNX graph has one input ``input`` ``(N, 3, H, W)`` ``float32`` (BGR minus
    ``(104, 117, 123)``) with dynamic N, H, W and outputs ``loc (N, P, 4)``, ``conf (N, P, 2)``
    (softmaxed) and ``landms (N, P, 10)``. It is checked against torch with ONNX Runtime at two
    input sizes and batch sizes. The prior configuration is also stored in the ONNX
    ``metadata_props`` (``min_sizes``, ``steps``, ``variances`` as JSON), so the file works without
    its card. The card (``<out_onnx stem>.json``: arch ``"retinaface"``, task
    ``"detection"``, layout ``"priorbox"`` and this variant's ``min_sizes`` / ``steps`` /
    ``variances`` in ``extra``, the file's SHA-256 and size) is what
    :func:`facelab.zoo.identify_model` reads.

    Args:
        pth: the ``.pth`` state_dict.
        out_onnx: the ``.onnx`` file to write (its folder is created).
        variant: ``"mobilenet0.25"``, ``"RFB"`` or ``"slim"``; recognised when ``None``.
        name: card name (default per variant, e.g. ``"retinaface_mnet025.biubug6"``).
        opset: ONNX opset (>= 13).
        atol: largest accepted |torch − ONNX Runtime| difference over the three outputs.

    Returns:
        The :class:`~facelab.zoo.card.ModelCard` written beside the model.

    Raises:
        ModelError: unusable checkpoint, or the exported model fails the check.
    """
    check_opset(opset)
    model, variant = load_retinaface(pth, variant)
    spec = RETINAFACE_VARIANTS.get(variant)
    out = Path(out_onnx)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = ["loc", "conf", "landms"]
    dynamic = {"input": {0: "batch", 2: "height", 3: "width"}}
    dynamic.update({n: {0: "batch", 1: "priors"} for n in names})
    torch_to_onnx(
        model,
        torch.zeros(1, 3, 320, 320),
        out,
        input_names=["input"],
        output_names=names,
        opset=opset,
        dynamic_axes=dynamic,
    )
    _write_prior_metadata(out, spec)

    def check_shapes(x: np.ndarray, ref: list[np.ndarray], got: list[np.ndarray]) -> None:
        for n, r, g in zip(names, ref, got):
            if r.shape != g.shape:
                raise ModelError(f"{out}: {n} has shape {g.shape} in ONNX Runtime, {r.shape} in torch")

    rng = np.random.default_rng(0)
    samples = [rng.uniform(-120, 130, shape).astype(np.float32) for shape in ((1, 3, 240, 320), (2, 3, 200, 136))]
    worst = compare_with_onnxruntime(
        out, model, samples, input_name="input", atol=atol, check_shapes=check_shapes, output_names=names
    )
    card = retinaface_card(
        out,
        variant,
        name,
        f"biubug6 {variant} exported by facelab.train.detectors.retinaface_mnet from {Path(pth).name}; "
        f"opset {opset}; max |torch-ORT| {worst:.2e}",
    )
    card.save(out.with_suffix(".json"))
    _logger.info("exported %s (%s) to %s; max |torch-ORT| %.2e", pth, variant, out, worst)
    return card
