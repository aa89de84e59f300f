"""Convert dlib DNNs (:class:`~facelab.dlib.dnn.DlibNetwork`) to ONNX, and cache the results.

The ONNX graph computes exactly what dlib's layers compute (``dlib/dnn/layers.h``,
``dlib/cuda/cpu_dlib.cpp``):

* ``con_`` -> ``Conv`` (cross-correlation, symmetric zero padding ``pad_y``/``pad_x``, floor
  output size); a following conv-mode ``affine_`` is folded into the convolution's weights and
  bias (``W*gamma``, ``b*gamma + beta``);
* ``affine_`` (not folded) -> ``Mul`` + ``Add``; ``relu_`` -> ``Relu``;
* ``max_pool_`` -> ``MaxPool`` (padding never wins the max); ``avg_pool_`` -> ``AveragePool``
  with ``count_include_pad=0`` (dlib averages over the part of the window inside the image);
  window size 0 -> ``GlobalAveragePool`` / ``GlobalMaxPool``;
* ``fc_`` -> ``Flatten`` + ``Gemm`` (``x @ W + b``);
* ``add_prev_`` -> ``Add``; when the two tensors differ in size (dlib's ResNet adds a 3x3 and a
  4x4 map), the smaller is zero-padded at the end of each axis first, as ``tt::add`` does;
* tags and skips only route tensors.

Graph input ``"input"``: ``(N, 3, H, W)`` float32, channels **RGB**, values ``(pixel - avg) / 256``
with the per-channel ``avg`` of the network's input layer (dlib's ``input_rgb_image*::to_tensor``);
:func:`input_normalization` returns the matching :class:`~facelab.ops.normalize.Normalization`
for :func:`facelab.ops.normalize.to_tensor`. The batch is dynamic; ``H``/``W`` are fixed for
``input_rgb_image_sized`` networks (150x150 for the face ResNet) and dynamic otherwise (the MMOD
detector; the caller builds the tiled pyramid). Graph output ``"output"``: ``(N, D)`` for a
network ending in ``fc`` (the 128-d face descriptor), ``(N, windows, h, w)`` score maps for MMOD.

``onnx`` is imported lazily (it belongs to the ``open`` extra).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from facelab.convert.cache import cached_conversion
from facelab.convert.dlib_reader import read_model_bytes
from facelab.convert.graph import GraphBuilder
from facelab.dlib.dnn import (
    FC,
    AddPrev,
    Affine,
    AvgPool,
    ConLayer,
    DetectorWindow,
    DlibNetwork,
    LossMMOD,
    MaxPool,
    Relu,
    Skip,
    Tag,
    output_shapes,
    output_to_input_point,
    output_to_input_rect,
    parse_dnn,
)
from facelab.errors import ModelError
from facelab.ops.normalize import Normalization
from facelab.zoo._hub import facelab_home  # re-exported: callers import it from here too
from facelab.zoo.card import FileSpec, ModelCard

__all__ = [
    "CONVERTER_VERSION",
    "dnn_to_onnx",
    "input_normalization",
    "detector_windows",
    "output_to_input_point",
    "output_to_input_rect",
    "convert_cached",
    "facelab_home",
]

logger = logging.getLogger(__name__)

#: Bumped whenever the converter's output changes; cached conversions of another version are rebuilt.
CONVERTER_VERSION = "1"


def input_normalization(network: DlibNetwork) -> Normalization:
    """The normalisation that produces the network's input tensor from BGR ``uint8`` images.

    dlib's input layers compute ``(pixel - avg) / 256`` per channel in RGB order.

    Args:
        network: a parsed network.

    Returns:
        ``Normalization("RGB", mean=avg_rgb, std=(256, 256, 256))``.
    """
    return Normalization("RGB", tuple(network.input.avg_rgb), (256.0, 256.0, 256.0))


def detector_windows(network: DlibNetwork) -> tuple[DetectorWindow, ...]:
    """The MMOD detector windows, one per output channel (in input-tensor pixels).

    Raises:
        ModelError: the network is not an MMOD detector.
    """
    if not isinstance(network.loss, LossMMOD):
        raise ModelError(f"{network.source}: not an MMOD detector network")
    return network.loss.options.detector_windows


def _fold_affine(conv: ConLayer, affine: Affine) -> tuple[np.ndarray, np.ndarray]:
    gamma = affine.gamma.astype(np.float64)
    beta = affine.beta.astype(np.float64)
    weights = conv.weights.astype(np.float64) * gamma[:, None, None, None]
    bias = beta if conv.bias is None else conv.bias.astype(np.float64) * gamma + beta
    return weights.astype(np.float32), bias.astype(np.float32)


def dnn_to_onnx(network: DlibNetwork, fold_affine: bool = True) -> bytes:
    """Build an ONNX model computing ``network`` (see the module docstring for the contract).

    Args:
        network: a parsed dlib network.
        fold_affine: fold each conv-mode affine layer that directly follows a convolution
            (without a fused ReLU) into it.

    Returns:
        The serialised ONNX model (opset 17).

    Raises:
        ModelError: a layer cannot be expressed (e.g. ``add_prev`` of unequal sizes in a network
            whose input size is not fixed).
    """
    g = GraphBuilder("converting dlib models")
    sized = network.input.nr is not None and network.input.nc is not None
    shapes = output_shapes(network, network.input.nr, network.input.nc) if sized else None
    current = "input"
    rank = 4
    tagged: dict[int, tuple[str, int, int]] = {}  # id -> (tensor, rank, layer index)
    layers = network.layers
    index = 0
    last_index = -1  # index of the layer whose output ``current`` is (-1 = input)
    while index < len(layers):
        layer = layers[index]
        if isinstance(layer, ConLayer):
            weights, bias = layer.weights, layer.bias
            nxt = layers[index + 1] if index + 1 < len(layers) else None
            if (
                fold_affine
                and not layer.fused_relu
                and isinstance(nxt, Affine)
                and nxt.mode == "conv"
                and not nxt.disabled
            ):
                weights, bias = _fold_affine(layer, nxt)
                index += 1
            inputs = [current, g.const("W", weights)]
            if bias is not None:
                inputs.append(g.const("B", bias))
            current = g.node(
                "Conv",
                inputs,
                "conv",
                kernel_shape=[layer.nr, layer.nc],
                strides=[layer.stride_y, layer.stride_x],
                pads=[layer.pad_y, layer.pad_x, layer.pad_y, layer.pad_x],
            )
            if layer.fused_relu:
                current = g.node("Relu", [current], "relu")
        elif isinstance(layer, Affine):
            if not layer.disabled:
                if layer.mode == "conv":
                    shape = (1, -1, 1, 1) if rank == 4 else (1, -1)
                    gamma, beta = layer.gamma.reshape(shape), layer.beta.reshape(shape)
                else:
                    gamma = layer.gamma.reshape((1, *layer.gamma.shape)) if rank == 4 else layer.gamma.reshape(1, -1)
                    beta = layer.beta.reshape(gamma.shape)
                current = g.node("Mul", [current, g.const("gamma", gamma.astype(np.float32))], "affine_mul")
                current = g.node("Add", [current, g.const("beta", beta.astype(np.float32))], "affine_add")
        elif isinstance(layer, Relu):
            if not layer.disabled:
                current = g.node("Relu", [current], "relu")
        elif isinstance(layer, (AvgPool, MaxPool)):
            is_avg = isinstance(layer, AvgPool)
            if layer.nr == 0 and layer.nc == 0:
                current = g.node("GlobalAveragePool" if is_avg else "GlobalMaxPool", [current], "gpool")
            else:
                if layer.nr == 0 or layer.nc == 0:
                    raise ModelError(f"{network.source}: pooling over a whole axis only is not supported")
                attrs: dict[str, Any] = {
                    "kernel_shape": [layer.nr, layer.nc],
                    "strides": [layer.stride_y, layer.stride_x],
                    "pads": [layer.pad_y, layer.pad_x, layer.pad_y, layer.pad_x],
                }
                if is_avg:
                    attrs["count_include_pad"] = 0
                current = g.node("AveragePool" if is_avg else "MaxPool", [current], "pool", **attrs)
        elif isinstance(layer, FC):
            flat = g.node("Flatten", [current], "flatten", axis=1) if rank == 4 else current
            inputs = [flat, g.const("fcW", layer.weights.astype(np.float32))]
            if layer.bias is not None:
                inputs.append(g.const("fcB", layer.bias.astype(np.float32)))
            current = g.node("Gemm", inputs, "fc")
            rank = 2
        elif isinstance(layer, Tag):
            tagged[layer.id] = (current, rank, last_index)
        elif isinstance(layer, Skip):
            if layer.tag not in tagged:
                raise ModelError(f"{network.source}: skip to tag{layer.tag} before it is set")
            current, rank, _ = tagged[layer.tag]
        elif isinstance(layer, AddPrev):
            if layer.tag not in tagged:
                raise ModelError(f"{network.source}: add_prev of tag{layer.tag} before it is set")
            other, other_rank, other_index = tagged[layer.tag]
            if other_rank != rank:
                raise ModelError(f"{network.source}: add_prev of tensors of different rank")
            if rank == 4:
                if shapes is None:
                    raise ModelError(
                        f"{network.source}: add_prev in a network without a fixed input size is not supported"
                    )
                mine = shapes[last_index] if last_index >= 0 else (3, network.input.nr, network.input.nc)
                theirs = shapes[other_index] if other_index >= 0 else (3, network.input.nr, network.input.nc)
                target = tuple(max(a, b) for a, b in zip(mine, theirs))
                current = _pad_to(g, current, mine, target)
                other = _pad_to(g, other, theirs, target)
            current = g.node("Add", [current, other], "add_prev")
        else:  # pragma: no cover - the reader produces nothing else
            raise ModelError(f"{network.source}: cannot convert layer {layer!r}")
        last_index = index
        index += 1
    g.rename(current, "output")
    if sized:
        in_dims: list[Any] = ["batch", 3, network.input.nr, network.input.nc]
    else:
        in_dims = ["batch", 3, "height", "width"]
    if rank == 2:
        out_dims: list[Any] = ["batch", network.num_outputs]
    elif shapes is not None:
        out_dims = ["batch", *shapes[-1]]
    else:
        out_dims = ["batch", network.num_outputs, "out_height", "out_width"]
    return g.finish(
        "input",
        in_dims,
        [("output", out_dims)],
        "dlib_" + Path(network.source).stem if network.source else "dlib_network",
        "facelab.dlib.convert",
        CONVERTER_VERSION,
    )


def _pad_to(g: GraphBuilder, tensor: str, shape: tuple[int, ...], target: tuple[int, ...]) -> str:
    if tuple(shape) == tuple(target):
        return tensor
    pads = np.array([0, 0, 0, 0, 0, *(t - s for s, t in zip(shape, target))], dtype=np.int64)
    return g.node("Pad", [tensor, g.const("pads", pads)], "zero_pad", mode="constant")


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _card_for(network: DlibNetwork, dat_name: str, source_sha: str, onnx_name: str, onnx_bytes: bytes) -> ModelCard:
    stem = Path(dat_name).stem
    common: dict[str, Any] = {
        "files": (FileSpec(onnx_name, _sha256(onnx_bytes), len(onnx_bytes)),),
        "license": "CC0-1.0",
        "color_order": "RGB",
        "mean": tuple(network.input.avg_rgb),
        "std": (256.0, 256.0, 256.0),
        "layout": "NCHW",
        "source_url": "https://pypi.org/project/face-recognition-models/0.3.0/ (dlib, davisking/dlib-models)",
        "notes": (
            f"Converted by facelab.dlib.convert {CONVERTER_VERSION} from {dat_name} of the PyPI package "
            "face-recognition-models 0.3.0 (dlib models, CC0). Input: (pixel - mean) / 256, RGB."
        ),
    }
    extra: dict[str, Any] = {
        "source_file": dat_name,
        "source_sha256": source_sha,
        "source_package": "face-recognition-models==0.3.0",
        "converter_version": CONVERTER_VERSION,
        "dlib_input": network.input.kind,
    }
    if isinstance(network.loss, LossMMOD):
        options = network.loss.options
        extra.update(
            detector_windows=[[w.width, w.height, w.label] for w in options.detector_windows],
            pyramid_rate=network.input.pyramid_rate,
            pyramid_padding=network.input.pyramid_padding,
            pyramid_outer_padding=network.input.pyramid_outer_padding,
            overlaps_nms=[options.overlaps_nms.iou_thresh, options.overlaps_nms.percent_covered_thresh],
        )
        # Output x maps to input x as x_in = scale * x_out + offset (same for y).
        x0, _ = output_to_input_point(network, 0.0, 0.0)
        x1, _ = output_to_input_point(network, 1.0, 0.0)
        extra["output_to_input"] = {"scale": float(x1 - x0), "offset": float(x0)}
        return ModelCard(
            name=f"{stem}.dlib", task="detection", arch="dlib_mmod", input_size=None, **common, extra=extra
        )
    extra["train_dist_thresh"] = float(network.loss.dist_thresh)
    return ModelCard(
        name=f"{stem}.dlib",
        task="recognition",
        arch="dlib_resnet",
        input_size=(int(network.input.nc or 0), int(network.input.nr or 0)),
        embedding_dim=network.num_outputs,
        metrics={"LFW": {"acc": 99.38, "source": "published by dlib"}},
        **common,
        extra=extra,
    )


def convert_cached(dat_path: str | Path, home: str | Path | None = None) -> tuple[Path, ModelCard]:
    """Convert a dlib DNN ``.dat`` file to ONNX once and reuse the result.

    Files live in ``<home>/converted/``: ``<stem>.onnx`` and its card ``<stem>.json``. The cached
    pair is reused while the card's ``extra.source_sha256`` equals the SHA-256 of ``dat_path`` and
    its ``extra.converter_version`` equals :data:`CONVERTER_VERSION` (and the ONNX file has the
    size the card records); otherwise it is rebuilt. Both files are written atomically, the card
    last.

    Args:
        dat_path: the dlib ``.dat`` file (e.g. from
            :func:`facelab.convert.dlib_reader.bundled_model_path`).
        home: the model home; default ``$FACELAB_HOME`` or ``~/.facelab``.

    Returns:
        ``(onnx_path, card)``.

    Raises:
        ModelNotFoundError: ``dat_path`` does not exist.
        ModelError: it is not a convertible dlib DNN.
    """
    data, source = read_model_bytes(dat_path)
    source_sha = _sha256(data)

    def build(onnx_name: str) -> tuple[bytes, dict[str, Any]]:
        logger.info("converting %s to ONNX", source)
        network = parse_dnn(data, source)
        onnx_bytes = dnn_to_onnx(network)
        return onnx_bytes, _card_for(network, Path(dat_path).name, source_sha, onnx_name, onnx_bytes).to_dict()

    folder = facelab_home(home) / "converted"
    onnx_path, card = cached_conversion(folder, Path(dat_path).stem, source_sha, CONVERTER_VERSION, build)
    return onnx_path, ModelCard.from_dict(card)
