"""MiniFASNet (Silent-Face-Anti-Spoofing, minivision-ai, Apache-2.0) as our own ONNX graphs, built without torch.

The published checkpoints ``2.7_80x80_MiniFASNetV2.pth`` and ``4_0_0_80x80_MiniFASNetV1SE.pth``
are PyTorch ``state_dict`` s (legacy format, names prefixed ``module.``), read with
:func:`facelab.convert.torch_reader.load_state_dict`. The network, as the original defines it:

* ``conv1``: 3x3 stride-2 convolution + BN + PReLU; ``conv2_dw``: depth-wise 3x3 + BN + PReLU;
* ``conv_23``, ``conv_34``, ``conv_45``: a "depth-wise" block with stride 2 (1x1 conv + BN +
  PReLU, depth-wise 3x3 + BN + PReLU, 1x1 projection + BN), between residual stages
  ``conv_3`` (4 blocks), ``conv_4`` (6) and ``conv_5`` (2) of the same block with stride 1 and an
  identity shortcut; in the SE variants the *last* block of each stage scales its projection by a
  squeeze-and-excitation gate (global average, 1x1 conv + BN + ReLU, 1x1 conv + BN, sigmoid)
  before the shortcut is added;
* ``conv_6_sep`` (1x1 + BN + PReLU to 512), ``conv_6_dw`` (depth-wise ``k x k`` + BN, ``k = 5``
  for 80x80 inputs, giving 1x1), flatten, ``linear`` 512 → 128 (no bias; skipped by the original
  when the embedding is 512 wide), BatchNorm1d, dropout (identity at inference), ``prob`` 128 → 3
  (no bias).

Channel widths and groups are read from the tensors' shapes; every BatchNorm is folded into the
layer before it; the inner widths of the depth-wise blocks are padded with zero channels to a
multiple of 8 (exactly the same outputs, faster blocked convolutions in ONNX Runtime) and PReLU is
written as ``Max(x, x * slope)`` (:meth:`GraphBuilder.prelu`). Every tensor of the checkpoint must
be used, or the conversion fails.

The graph: input ``input`` ``(N, 3, S, S)`` ``float32`` (BGR, raw 0..255 values, no mean or
scaling: the original's ``ToTensor`` has its ``/ 255`` removed), outputs ``logits`` ``(N, 3)``
and ``prob`` ``(N, 3)`` (softmax over the three classes; class 1 is a real face).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from facelab.convert.cache import cached_conversion
from facelab.convert.graph import GraphBuilder
from facelab.convert.torch_reader import StateDict
from facelab.errors import ConfigError, ModelError

__all__ = ["MINIFASNET_ARCHS", "CONVERTER_VERSION", "build_minifasnet_onnx", "convert_minifasnet"]

_logger = logging.getLogger(__name__)

#: Architectures this converter builds, and whether their residual stages end in an SE block.
MINIFASNET_ARCHS: dict[str, bool] = {
    "minifasnet_v1": False,
    "minifasnet_v2": False,
    "minifasnet_v1se": True,
    "minifasnet_v2se": True,
}

#: Version of the graph definition; a change rebuilds cached conversions.
CONVERTER_VERSION = "1"

_BN_EPS = 1e-5

#: Inner widths of the depth-wise blocks are padded with zero channels to a multiple of this
#: (ONNX Runtime's blocked convolution layout uses blocks of 8 or 16 channels on x86; 8 measured
#: as fast as 16 here, with less padding).
_CHANNEL_BLOCK = 8


def _pad_axis(array: np.ndarray, axis: int, extra: int) -> np.ndarray:
    """``array`` with ``extra`` zero entries appended along ``axis``."""
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, extra)
    return np.pad(array, widths)


class _Net:
    """Emits MiniFASNet layers into a :class:`GraphBuilder` from a :class:`StateDict`."""

    def __init__(self, graph: GraphBuilder, state: StateDict) -> None:
        self.g = graph
        self.sd = state

    def folded(self, prefix: str, prelu: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(weight, bias, slope)`` of a conv + BN (+ PReLU) block, the BN folded into the conv."""
        weight, bias = self.sd.conv_bn(f"{prefix}.conv", f"{prefix}.bn", _BN_EPS)
        return weight, bias, self.sd[f"{prefix}.prelu.weight"] if prelu else None

    def emit(
        self, x: str, layer: tuple[np.ndarray, np.ndarray, np.ndarray | None], prefix: str, stride: int = 1
    ) -> str:
        """One folded layer: convolution (padding 1 for 3x3 kernels, else 0), then PReLU if it has slopes."""
        weight, bias, slope = layer
        # groups: input channels / weight's input channels (depth-wise layers have 1 per group)
        groups = self._channels[x] // weight.shape[1]
        pad = 1 if weight.shape[2] == 3 else 0
        name = prefix.replace(".", "_")
        y = self.g.conv(x, weight, bias, stride=stride, pads=pad, group=groups, prefix=name)
        if slope is not None:
            y = self.g.prelu(y, slope, prefix=name + "_prelu")
        self._channels[y] = weight.shape[0]
        return y

    def conv_bn(self, x: str, prefix: str, stride: int = 1, prelu: bool = True) -> str:
        """``Conv_block`` (conv + BN + PReLU) or, with ``prelu=False``, ``Linear_block`` (conv + BN)."""
        return self.emit(x, self.folded(prefix, prelu), prefix, stride)

    def se(self, x: str, prefix: str) -> str:
        """Squeeze-and-excitation gate applied to ``x``."""
        channels = self._channels[x]
        pooled = self.g.node("GlobalAveragePool", [x], "se_pool")
        w1, b1 = self.sd.conv_bn(f"{prefix}.fc1", f"{prefix}.bn1", _BN_EPS)
        h = self.g.node("Relu", [self.g.conv(pooled, w1, b1, prefix="se_fc1")], "se_relu")
        w2, b2 = self.sd.conv_bn(f"{prefix}.fc2", f"{prefix}.bn2", _BN_EPS)
        gate = self.g.node("Sigmoid", [self.g.conv(h, w2, b2, prefix="se_fc2")], "se_gate")
        if w1.shape[1] != channels or w2.shape[0] != channels:
            raise ModelError(f"{self.sd.source}: {prefix} does not match its block's {channels} channels")
        out = self.g.node("Mul", [x, gate], "se_scale")
        self._channels[out] = channels
        return out

    def depth_wise(self, x: str, prefix: str, stride: int, residual: bool) -> str:
        """The original's ``Depth_Wise`` / ``Depth_Wise_SE`` block.

        Its inner width (e.g. 103 or 13 channels) is padded with zero channels to a multiple of
        :data:`_CHANNEL_BLOCK`: they stay exactly 0 through the expansion, the depth-wise layer and
        PReLU and add exactly 0 in the projection, so the outputs are unchanged, while ONNX
        Runtime's blocked (NCHWc) convolutions apply to every layer of the block.
        """
        expand = self.folded(f"{prefix}.conv")
        dw = self.folded(f"{prefix}.conv_dw")
        project = self.folded(f"{prefix}.project", prelu=False)
        mid = expand[0].shape[0]
        if dw[0].shape[:2] != (mid, 1) or project[0].shape[1] != mid:
            raise ModelError(f"{self.sd.source}: {prefix} is not a depth-wise block of {mid} channels")
        extra = (-mid) % _CHANNEL_BLOCK
        if extra:
            expand = tuple(None if a is None else _pad_axis(a, 0, extra) for a in expand)  # type: ignore[assignment]
            dw = tuple(None if a is None else _pad_axis(a, 0, extra) for a in dw)  # type: ignore[assignment]
            project = (_pad_axis(project[0], 1, extra), project[1], None)
        y = self.emit(x, expand, f"{prefix}.conv")
        y = self.emit(y, dw, f"{prefix}.conv_dw", stride)
        y = self.emit(y, project, f"{prefix}.project")
        if not residual:
            return y
        if f"{prefix}.se_module.fc1.weight" in self.sd:
            y = self.se(y, f"{prefix}.se_module")
        if self._channels[y] != self._channels[x]:
            raise ModelError(f"{self.sd.source}: residual block {prefix} changes the channel count")
        out = self.g.node("Add", [x, y], "residual")
        self._channels[out] = self._channels[x]
        return out

    def stage(self, x: str, prefix: str) -> str:
        count = 0
        while f"{prefix}.model.{count}.conv.conv.weight" in self.sd:
            count += 1
        if count == 0:
            raise ModelError(f"{self.sd.source}: the checkpoint has no blocks under {prefix}")
        for i in range(count):
            x = self.depth_wise(x, f"{prefix}.model.{i}", 1, residual=True)
        return x

    def build(self, x: str, channels: int) -> str:
        self._channels: dict[str, int] = {x: channels}
        x = self.conv_bn(x, "conv1", stride=2)
        x = self.conv_bn(x, "conv2_dw")
        x = self.depth_wise(x, "conv_23", 2, residual=False)
        x = self.stage(x, "conv_3")
        x = self.depth_wise(x, "conv_34", 2, residual=False)
        x = self.stage(x, "conv_4")
        x = self.depth_wise(x, "conv_45", 2, residual=False)
        x = self.stage(x, "conv_5")
        x = self.conv_bn(x, "conv_6_sep")
        x = self.conv_bn(x, "conv_6_dw", prelu=False)
        flat = self.g.node("Flatten", [x], "flatten", axis=1)
        linear = self.sd["linear.weight"]  # (embedding, 512)
        scale, shift = self.sd.batchnorm("bn", _BN_EPS)
        if linear.shape[0] != 512:  # the original skips `linear` for a 512-wide embedding
            weight = linear.T.astype(np.float64) * scale[None, :]
            emb = self.g.gemm(flat, weight.astype(np.float32), shift.astype(np.float32), prefix="linear_bn")
        else:
            emb = self.g.node(
                "Add",
                [
                    self.g.node("Mul", [flat, self.g.const("bn_scale", scale.astype(np.float32))], "bn_mul"),
                    self.g.const("bn_shift", shift.astype(np.float32)),
                ],
                "bn",
            )
        return self.g.gemm(emb, self.sd["prob.weight"].T, None, prefix="prob")


def build_minifasnet_onnx(state: StateDict, arch: str, input_size: int = 80, name: str = "minifasnet") -> bytes:
    """Build the ONNX graph of a MiniFASNet checkpoint.

    Args:
        state: the checkpoint's tensors (``module.`` prefix already removed).
        arch: one of :data:`MINIFASNET_ARCHS`; its SE flag must match the checkpoint.
        input_size: side ``S`` of the square input (80 for the published models; the last
            depth-wise kernel must equal ``ceil(S / 16)``).
        name: graph name.

    Returns:
        The serialised ONNX model (input ``input`` ``(N, 3, S, S)``, outputs ``logits`` and ``prob``).

    Raises:
        ConfigError: unknown ``arch``.
        ModelError: the checkpoint does not match the architecture (missing, unused or misshaped tensors).
    """
    if arch not in MINIFASNET_ARCHS:
        raise ConfigError(f"unknown MiniFASNet architecture {arch!r}; known: {sorted(MINIFASNET_ARCHS)}")
    has_se = any(k.endswith("se_module.fc1.weight") for k in state.tensors)
    if has_se != MINIFASNET_ARCHS[arch]:
        raise ModelError(
            f"{state.source}: {'has' if has_se else 'has no'} squeeze-and-excitation blocks, so it is not {arch}"
        )
    kernel = state.tensors.get("conv_6_dw.conv.weight")
    if kernel is None or kernel.shape[2] != (input_size + 15) // 16:
        got = None if kernel is None else kernel.shape[2:]
        raise ModelError(f"{state.source}: last depth-wise kernel {got} does not fit a {input_size}x{input_size} input")
    g = GraphBuilder("converting MiniFASNet liveness models")
    first = state.tensors.get("conv1.conv.weight")
    if first is None:
        raise ModelError(f"{state.source}: not a MiniFASNet checkpoint (no conv1.conv.weight)")
    logits = _Net(g, state).build("input", int(first.shape[1]))
    state.check_all_used(arch)
    num_classes = int(state.tensors["prob.weight"].shape[0])
    prob = g.node("Softmax", [logits], "softmax", axis=1)
    return g.finish(
        "input",
        ["batch", int(first.shape[1]), input_size, input_size],
        [(g.rename(logits, "logits"), ["batch", num_classes]), (g.rename(prob, "prob"), ["batch", num_classes])],
        name,
        "facelab.liveness.minifasnet",
        CONVERTER_VERSION,
        {"arch": arch, "live_class": "1"},
    )


def convert_minifasnet(
    pth: str | os.PathLike, card: Any, home: str | os.PathLike | None = None
) -> tuple[Path, dict[str, Any]]:
    """Convert a MiniFASNet checkpoint to ONNX, cached under ``$FACELAB_HOME/converted/``.

    Args:
        pth: the ``.pth`` file.
        card: its :class:`~facelab.zoo.card.ModelCard` (arch, input size, licence, preprocessing).
        home: facelab home (default ``$FACELAB_HOME`` or ``~/.facelab``).

    Returns:
        ``(onnx_path, card_dict)``: the converted file and its card (the source card with the
        ONNX file, and ``extra`` recording the source SHA-256 and converter version).

    Raises:
        ModelError: unreadable or mismatching checkpoint (see :func:`build_minifasnet_onnx`).
    """
    from facelab.zoo._hub import cached_sha256, facelab_home

    pth = Path(pth)
    if not pth.is_file():
        raise ModelError(f"MiniFASNet checkpoint not found: {pth}")
    source_sha = cached_sha256(pth, home)
    size = int((card.input_size or (80, 80))[0])

    def build(filename: str) -> tuple[bytes, dict[str, Any]]:
        data = build_minifasnet_onnx(StateDict.load(pth), card.arch, size, card.name)
        info = card.to_dict()
        info["files"] = [{"filename": filename, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}]
        info["urls"] = []
        info["extra"] = {
            **info.get("extra", {}),
            "source_file": pth.name,
            "source_sha256": source_sha,
            "converter_version": CONVERTER_VERSION,
        }
        _logger.info("converted %s (%s) to ONNX without torch", pth.name, card.arch)
        return data, info

    return cached_conversion(facelab_home(home) / "converted", card.name, source_sha, CONVERTER_VERSION, build)
