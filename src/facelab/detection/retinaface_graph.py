"""biubug6's RetinaFace-MobileNet0.25, RFB and Slim detectors converted to ONNX without torch.

The checkpoints of biubug6/Face-Detector-1MB-with-landmark (MIT: ``mobilenet0.25_Final.pth``,
``RBF_Final.pth``, ``slim_Final.pth``) are read with
:func:`facelab.convert.torch_reader.load_state_dict` and described layer by layer with
:class:`~facelab.convert.GraphBuilder`; only the ``convert`` extra (``onnx``) is needed. The graphs
compute what :mod:`facelab.train.detectors.retinaface_mnet` (the torch networks behind ``facelab
train export-retinaface``) computes, with every BatchNorm folded into its convolution:

* input ``input`` ``(N, 3, H, W)`` ``float32``, BGR minus ``(104, 117, 123)``, any ``H``, ``W``;
* outputs ``loc (N, P, 4)``, ``conf (N, P, 2)`` (softmax over background, face) and
  ``landms (N, P, 10)`` over the SSD priors of :data:`BIUBUG6_VARIANTS`;
* the prior configuration in the ONNX ``metadata_props`` (``min_sizes``, ``steps``,
  ``variances`` as JSON), which :class:`facelab.detection.RetinaFace` reads.

Layer facts (plain ReLU everywhere, as in that repository): MobileNet0.25 — a 3x3 stride-2 stem
and depth-wise separable blocks (keys ``.0``/``.1`` depth-wise conv + BN, ``.3``/``.4`` point-wise
conv + BN), an FPN (1x1 laterals, nearest upsampling to the finer map's size, 3x3 merges), SSH
context modules (3x3 at C/2 ‖ two 3x3 at C/4 ‖ three 3x3 at C/4, ReLU after the concatenation)
and 1x1 heads. Slim / RFB — a separable trunk to strides 8, 16, 32 plus an extra stride-64 level
(1x1 with bias, ReLU, separable head with stride 2, ReLU); RFB replaces the 8th block by a
receptive-field block (three dilated branches, dilations 2, 3, 5; 1x1 fuse plus 1x1 shortcut,
ReLU); heads are separable (depth-wise 3x3 with bias, ReLU, 1x1 with bias) on the first three
levels and a 3x3 convolution on the last.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.convert.graph import GraphBuilder
from facelab.convert.torch_reader import StateDict
from facelab.errors import ConfigError, ModelError
from facelab.registry import Registry

__all__ = [
    "BIUBUG6_VARIANTS",
    "Biubug6Variant",
    "CONVERTER_VERSION",
    "LICENSE",
    "SOURCE_URL",
    "VARIANCES",
    "build_retinaface_onnx",
    "convert_retinaface",
    "guess_variant",
    "retinaface_card",
]

_logger = logging.getLogger(__name__)

SOURCE_URL = "https://github.com/biubug6/Face-Detector-1MB-with-landmark"
LICENSE = "MIT (biubug6/Face-Detector-1MB-with-landmark)"
#: Prior-box variances of every variant.
VARIANCES = (0.1, 0.2)
#: Version of the graph definitions; recorded in the card.
CONVERTER_VERSION = "1"


@dataclass(frozen=True)
class Biubug6Variant:
    """One published variant's prior configuration and card name (the torch and the torch-free paths share these).

    Attributes:
        min_sizes: prior sizes per level, in input pixels.
        steps: stride of each level.
        card_name: default model card name.
        marker: a ``state_dict`` key only this variant has.
        metrics: published results.
    """

    min_sizes: tuple[tuple[int, ...], ...]
    steps: tuple[int, ...]
    card_name: str
    marker: str
    metrics: dict[str, Any] = field(default_factory=dict)


BIUBUG6_VARIANTS: Registry[Biubug6Variant] = Registry("RetinaFace variant")
_FOUR_LEVELS = ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256))
BIUBUG6_VARIANTS.register("mobilenet0.25")(
    Biubug6Variant(
        ((10, 20), (32, 64), (128, 256)),
        (8, 16, 32),
        "retinaface_mnet025.biubug6",
        "body.stage1.0.0.weight",
        {"WIDER_val_published": {"easy": 0.873, "medium": 0.836, "hard": 0.638, "long_side": 640}},
    )
)
BIUBUG6_VARIANTS.register("RFB")(
    Biubug6Variant(_FOUR_LEVELS, (8, 16, 32, 64), "retinaface_rfb.biubug6", "conv8.branch0.0.conv.weight")
)
BIUBUG6_VARIANTS.register("slim")(
    Biubug6Variant(_FOUR_LEVELS, (8, 16, 32, 64), "retinaface_slim.biubug6", "conv8.0.weight")
)


def guess_variant(keys: Any) -> str:
    """The variant name (``"mobilenet0.25"``, ``"RFB"`` or ``"slim"``) of a state_dict's keys.

    Raises:
        ModelError: no variant's marker key is present.
    """
    keys = set(keys)
    for name in BIUBUG6_VARIANTS.names():
        if BIUBUG6_VARIANTS.get(name).marker in keys:
            return name
    raise ModelError(f"not a known RetinaFace state_dict; first keys {sorted(keys)[:3]}")


class _Net:
    """Emits layers into a graph, tracking channel counts (for the groups of depth-wise convolutions)."""

    def __init__(self, graph: GraphBuilder, state: StateDict) -> None:
        self.g = graph
        self.sd = state
        self.channels: dict[str, int] = {}

    def conv(
        self,
        x: str,
        conv: str,
        bn: str | None = None,
        *,
        stride: int = 1,
        pad: int | None = None,
        dilation: int = 1,
        relu: bool = True,
    ) -> str:
        """Conv (``conv.weight``, optional ``conv.bias``), optional folded BN at ``bn``, optional ReLU."""
        if bn is None:
            weight = self.sd[f"{conv}.weight"]
            bias = self.sd[f"{conv}.bias"] if f"{conv}.bias" in self.sd else None
        else:
            weight, bias = self.sd.conv_bn(conv, bn)
        kernel = weight.shape[2]
        pad = (kernel // 2) * dilation if pad is None else pad
        groups = self.channels[x] // weight.shape[1]
        y = self.g.conv(x, weight, bias, stride=stride, pads=pad, group=groups, dilation=dilation)
        self.channels[y] = weight.shape[0]
        return self.relu(y) if relu else y

    def relu(self, x: str) -> str:
        y = self.g.node("Relu", [x], "relu")
        self.channels[y] = self.channels[x]
        return y

    def add(self, a: str, b: str) -> str:
        y = self.g.node("Add", [a, b], "add")
        self.channels[y] = self.channels[a]
        return y

    def concat(self, parts: list[str]) -> str:
        y = self.g.node("Concat", parts, "concat", axis=1)
        self.channels[y] = sum(self.channels[p] for p in parts)
        return y

    def conv_bn(self, x: str, prefix: str, stride: int = 1, relu: bool = True) -> str:
        """``Sequential(conv, BN[, ReLU])`` with keys ``prefix.0`` and ``prefix.1``."""
        return self.conv(x, f"{prefix}.0", f"{prefix}.1", stride=stride, relu=relu)

    def separable_bn(self, x: str, prefix: str, stride: int) -> str:
        """Depth-wise 3x3 + BN + ReLU (keys .0, .1), point-wise 1x1 + BN + ReLU (keys .3, .4)."""
        x = self.conv(x, f"{prefix}.0", f"{prefix}.1", stride=stride)
        return self.conv(x, f"{prefix}.3", f"{prefix}.4")

    def separable_head(self, x: str, prefix: str, stride: int = 1) -> str:
        """Depth-wise 3x3 with bias + ReLU (key .0), point-wise 1x1 with bias (key .2)."""
        return self.conv(self.conv(x, f"{prefix}.0", stride=stride), f"{prefix}.2", relu=False)

    def upsample_to(self, x: str, like: str) -> str:
        """Nearest-neighbour resize of ``x`` to the spatial size of ``like`` (torch's ``interpolate(size=...)``)."""
        g = self.g

        def dims(t: str, start: int, end: int, prefix: str) -> str:  # Shape(t)[start:end]
            bounds = [g.const(f"s{i}", np.array([i], np.int64)) for i in (start, end)]
            return g.node("Slice", [g.node("Shape", [t], "shape"), *bounds], prefix)

        head, tail = dims(x, 0, 2, "nc"), dims(like, 2, 4, "hw")
        sizes = g.node("Concat", [head, tail], "sizes", axis=0)
        y = g.node(
            "Resize",
            [x, "", "", sizes],
            "upsample",
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
        self.channels[y] = self.channels[x]
        return y

    def flatten(self, x: str, cols: int) -> str:
        """``(N, A*cols, H, W)`` → ``(N, H*W*A, cols)`` (row, column, anchor order)."""
        y = self.g.node("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])
        return self.g.node("Reshape", [y, self.g.const("shape", np.array([0, -1, cols], np.int64))], "rows")


def _mobilenet(net: _Net, x: str) -> tuple[list[str], list[str], list[str]]:
    strides1 = (2, 1, 2, 1, 2, 1)
    x = net.conv_bn(x, "body.stage1.0", stride=strides1[0])
    for i, s in enumerate(strides1[1:], start=1):
        x = net.separable_bn(x, f"body.stage1.{i}", s)
    c3 = x
    for i in range(6):
        x = net.separable_bn(x, f"body.stage2.{i}", 2 if i == 0 else 1)
    c4 = x
    for i in range(2):
        x = net.separable_bn(x, f"body.stage3.{i}", 2 if i == 0 else 1)
    c5 = x
    p3, p4, p5 = (net.conv_bn(c, f"fpn.output{i}") for i, c in zip((1, 2, 3), (c3, c4, c5)))
    p4 = net.conv_bn(net.add(p4, net.upsample_to(p5, p4)), "fpn.merge2")
    p3 = net.conv_bn(net.add(p3, net.upsample_to(p4, p3)), "fpn.merge1")
    feats = []
    for i, p in enumerate((p3, p4, p5), start=1):
        ssh = f"ssh{i}"
        a = net.conv_bn(p, f"{ssh}.conv3X3", relu=False)
        b1 = net.conv_bn(p, f"{ssh}.conv5X5_1")
        b = net.conv_bn(b1, f"{ssh}.conv5X5_2", relu=False)
        c = net.conv_bn(net.conv_bn(b1, f"{ssh}.conv7X7_2"), f"{ssh}.conv7x7_3", relu=False)
        feats.append(net.relu(net.concat([a, b, c])))

    def heads(name: str) -> list[str]:
        return [net.conv(f, f"{name}.{i}.conv1x1", relu=False) for i, f in enumerate(feats)]

    return heads("BboxHead"), heads("ClassHead"), heads("LandmarkHead")


def _basic(net: _Net, x: str, prefix: str, pad: int = 0, dilation: int = 1, relu: bool = True) -> str:
    """RFB's ``BasicConv``: conv (keys ``.conv``) + BN (``.bn``), optional ReLU."""
    return net.conv(x, f"{prefix}.conv", f"{prefix}.bn", pad=pad, dilation=dilation, relu=relu)


def _rfb(net: _Net, x: str, prefix: str) -> str:
    b0 = _basic(net, x, f"{prefix}.branch0.0", relu=False)
    b0 = _basic(net, b0, f"{prefix}.branch0.1", pad=1)
    b0 = _basic(net, b0, f"{prefix}.branch0.2", pad=2, dilation=2, relu=False)
    b1 = _basic(net, x, f"{prefix}.branch1.0", relu=False)
    b1 = _basic(net, b1, f"{prefix}.branch1.1", pad=1)
    b1 = _basic(net, b1, f"{prefix}.branch1.2", pad=3, dilation=3, relu=False)
    b2 = _basic(net, x, f"{prefix}.branch2.0", relu=False)
    b2 = _basic(net, b2, f"{prefix}.branch2.1", pad=1)
    b2 = _basic(net, b2, f"{prefix}.branch2.2", pad=1)
    b2 = _basic(net, b2, f"{prefix}.branch2.3", pad=5, dilation=5, relu=False)
    fused = _basic(net, net.concat([b0, b1, b2]), f"{prefix}.ConvLinear", relu=False)
    # the block's scale is 1.0 in these checkpoints: relu(fused * 1.0 + shortcut)
    return net.relu(net.add(fused, _basic(net, x, f"{prefix}.shortcut", relu=False)))


def _slim(net: _Net, x: str, rfb: bool) -> tuple[list[str], list[str], list[str]]:
    x = net.conv_bn(x, "conv1", stride=2)
    strides = {2: 1, 3: 2, 4: 1, 5: 2, 6: 1, 7: 1, 9: 2, 10: 1, 11: 1, 12: 2, 13: 1}
    feats = []
    for i in range(2, 14):
        if i == 8:
            x = _rfb(net, x, "conv8") if rfb else net.separable_bn(x, "conv8", 1)
            feats.append(x)
            continue
        x = net.separable_bn(x, f"conv{i}", strides[i])
        if i in (11, 13):
            feats.append(x)
    y = net.conv(x, "conv14.0")
    y = net.relu(net.separable_head(y, "conv14.2", stride=2))
    feats.append(y)

    def heads(name: str) -> list[str]:
        out = [net.separable_head(f, f"{name}.{i}") for i, f in enumerate(feats[:3])]
        return out + [net.conv(feats[3], f"{name}.3", pad=1, relu=False)]

    return heads("loc"), heads("conf"), heads("landm")


def build_retinaface_onnx(state: StateDict, variant: str | None = None, name: str = "retinaface") -> bytes:
    """Build the ONNX graph of a biubug6 checkpoint (see the module docstring for the graph).

    Args:
        state: the checkpoint's tensors (``module.`` prefix removed).
        variant: ``"mobilenet0.25"``, ``"RFB"`` or ``"slim"``; recognised from the keys when ``None``.
        name: graph name.

    Raises:
        ConfigError: unknown variant.
        ModelError: the checkpoint does not fit the variant (missing or unused tensors).
    """
    variant = variant or guess_variant(state.tensors)
    if variant not in BIUBUG6_VARIANTS:
        raise ConfigError(f"unknown RetinaFace variant {variant!r}; known: {BIUBUG6_VARIANTS.names()}")
    spec = BIUBUG6_VARIANTS.get(variant)
    g = GraphBuilder("converting RetinaFace checkpoints")
    net = _Net(g, state)
    net.channels["input"] = 3
    if variant == "mobilenet0.25":
        locs, confs, landms = _mobilenet(net, "input")
    else:
        locs, confs, landms = _slim(net, "input", rfb=variant == "RFB")
    state.check_all_used(f"RetinaFace {variant}")
    loc = g.node("Concat", [net.flatten(t, 4) for t in locs], "loc_cat", axis=1)
    conf = g.node("Softmax", [g.node("Concat", [net.flatten(t, 2) for t in confs], "conf_cat", axis=1)], "sm", axis=2)
    lm = g.node("Concat", [net.flatten(t, 10) for t in landms], "landms_cat", axis=1)
    metadata = {
        "min_sizes": json.dumps([list(level) for level in spec.min_sizes]),
        "steps": json.dumps(list(spec.steps)),
        "variances": json.dumps(list(VARIANCES)),
    }
    return g.finish(
        "input",
        ["batch", 3, "height", "width"],
        [
            (g.rename(loc, "loc"), ["batch", "priors", 4]),
            (g.rename(conf, "conf"), ["batch", "priors", 2]),
            (g.rename(lm, "landms"), ["batch", "priors", 10]),
        ],
        name,
        "facelab.detection.retinaface_graph",
        CONVERTER_VERSION,
        metadata,
    )


def retinaface_card(out: Path, variant: str, name: str | None, notes: str) -> Any:
    """The model card of an ONNX RetinaFace written to ``out`` (its SHA-256 and size are read from the file).

    Arch ``"retinaface"``, task ``"detection"``, layout ``"priorbox"``, this variant's priors in ``extra``.
    """
    from facelab.detection.retinaface import RETINAFACE_PYTORCH_NORMALIZATION
    from facelab.zoo._hub import sha256_file
    from facelab.zoo.card import FileSpec, ModelCard

    spec = BIUBUG6_VARIANTS.get(variant)
    norm = RETINAFACE_PYTORCH_NORMALIZATION
    return ModelCard(
        name=name or spec.card_name,
        task="detection",
        arch="retinaface",
        files=(FileSpec(out.name, sha256_file(out), out.stat().st_size),),
        license=LICENSE,
        input_size=None,
        color_order=norm.color_order,
        mean=tuple(norm.mean),
        std=tuple(norm.std),
        source_url=SOURCE_URL,
        paper="RetinaFace: Single-stage Dense Face Localisation in the Wild (arXiv:1905.00641)",
        train_data="WIDER FACE",
        notes=notes,
        metrics={k: dict(v) for k, v in spec.metrics.items()},
        extra={
            "layout": "priorbox",
            "variant": variant,
            "min_sizes": [list(level) for level in spec.min_sizes],
            "steps": list(spec.steps),
            "variances": list(VARIANCES),
        },
    )


def convert_retinaface(
    pth: str | os.PathLike, out_onnx: str | os.PathLike, *, variant: str | None = None, name: str | None = None
) -> Any:
    """Convert a biubug6 RetinaFace / RFB / Slim checkpoint to ONNX plus a model card, without torch.

    Args:
        pth: the ``.pth`` state_dict (legacy or zip format; ``module.`` prefixes removed).
        out_onnx: the ``.onnx`` file to write (its folder is created); the card goes beside it
            as ``<stem>.json``, where :func:`facelab.zoo.identify_model` finds it.
        variant: ``"mobilenet0.25"``, ``"RFB"`` or ``"slim"``; recognised from the keys when ``None``.
        name: card name (default per variant, e.g. ``"retinaface_mnet025.biubug6"``).

    Returns:
        The :class:`~facelab.zoo.card.ModelCard` written beside the model.

    Raises:
        ModelError: unreadable checkpoint, or one that does not fit the variant.
    """
    from facelab.convert.cache import atomic_write

    state = StateDict.load(pth)
    variant = variant or guess_variant(state.tensors)
    data = build_retinaface_onnx(state, variant, name or BIUBUG6_VARIANTS.get(variant).card_name)
    out = Path(out_onnx)
    atomic_write(out, data)
    card = retinaface_card(
        out,
        variant,
        name,
        f"biubug6 {variant} converted without torch by facelab.detection.retinaface_graph "
        f"(converter {CONVERTER_VERSION}) from {Path(pth).name}",
    )
    card.save(out.with_suffix(".json"))
    _logger.info("converted %s (%s) to %s", pth, variant, out)
    return card
