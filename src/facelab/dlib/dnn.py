"""Reading dlib DNN files (``dlib::net_type`` serialised with ``dlib::serialize``) into typed layers.

A dlib network is a C++ type such as ``loss_metric<fc_no_bias<128, ... input_rgb_image_sized<150>>>``:
every layer wraps the sub-network below it. Serialisation (``dlib/dnn/core.h``) writes:

* the loss wrapper: integer version ``1``, the loss details (a version string such as
  ``"loss_mmod_"`` then its fields), then the sub-network;
* a computational layer (``add_layer``): integer version ``2``, **the whole sub-network**, then
  its own details (a version string such as ``"con_6"`` then the fields), three bools and the
  cached tensors ``x_grad``, ``cached_output`` and ``params_grad``;
* the innermost ``add_layer``, which holds the input layer: version ``3`` (or ``2``), the input
  layer (a version string starting ``"input"``), the layer's details, three bools, ``x_grad``,
  ``cached_output``, ``grad_final`` and (version 3) the ``sample_expansion_factor``;
* ``add_tag_layer`` / ``add_skip_layer``: version ``1`` and the sub-network, nothing else.

So the file starts with the wrappers' version numbers from the outermost inwards, then the
input layer, then the layers' details from the input outwards. Tag and skip wrappers write no
identity of their own (their IDs live in the C++ type only); :func:`parse_dnn` resolves them by
matching the network against the known topologies in :data:`TOPOLOGIES` (dlib's ResNet of
``dnn_face_recognition_ex.cpp``). Networks without tags and skips need no topology.

Layers come out in input-to-output order (:attr:`DlibNetwork.layers`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.convert.dlib_reader import DlibReader, read_model_bytes
from facelab.errors import ModelError
from facelab.registry import Registry

__all__ = [
    "InputLayer",
    "ConLayer",
    "Affine",
    "Relu",
    "FC",
    "AddPrev",
    "Tag",
    "Skip",
    "AvgPool",
    "MaxPool",
    "DetectorWindow",
    "BoxOverlap",
    "MMODOptions",
    "LossMetric",
    "LossMMOD",
    "DlibNetwork",
    "Layer",
    "LAYER_READERS",
    "TOPOLOGIES",
    "load_dnn",
    "parse_dnn",
    "output_shapes",
    "output_to_input_point",
    "output_to_input_rect",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Layer types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputLayer:
    """The input layer: how images become the network's input tensor.

    dlib fills the tensor with ``(pixel - avg) / 256`` per channel, channels in **RGB** order
    (``dlib/dnn/input.h``).

    Attributes:
        kind: dlib's version string: ``"input_rgb_image_sized"``, ``"input_rgb_image"``,
            ``"input_rgb_image_pyramid2"`` (or ``"input_rgb_image_pyramid"``).
        avg_rgb: ``(avg_red, avg_green, avg_blue)`` subtracted from the 0..255 pixels.
        nr / nc: fixed input rows / columns (``input_rgb_image_sized``); ``None`` otherwise.
        pyramid_padding / pyramid_outer_padding: pixels between / around the tiled pyramid
            levels (pyramid inputs only; ``None`` otherwise).
        pyramid_rate: the ``N`` of ``pyramid_down<N>`` (each level is ``(N-1)/N`` of the one above).
            It is a C++ template argument, not stored in the file: dlib's MMOD face detector uses
            ``6``.
    """

    kind: str
    avg_rgb: tuple[float, float, float]
    nr: int | None = None
    nc: int | None = None
    pyramid_padding: int | None = None
    pyramid_outer_padding: int | None = None
    pyramid_rate: int | None = None

    @property
    def is_pyramid(self) -> bool:
        """``True`` for the tiled image-pyramid input of the MMOD detector."""
        return self.kind.startswith("input_rgb_image_pyramid")


@dataclass(frozen=True)
class ConLayer:
    """A 2-D convolution (``con_``); cross-correlation like ONNX ``Conv``.

    Output size per axis: ``1 + (in + 2*pad - kernel) // stride``.

    Attributes:
        num_filters: output channels.
        nr / nc: kernel rows / columns.
        stride_y / stride_x: strides.
        pad_y / pad_x: zero padding on both sides (dlib's default: ``kernel // 2`` when the
            stride is 1, else 0).
        weights: ``(num_filters, in_channels, nr, nc)`` float32.
        bias: ``(num_filters,)`` float32, or ``None`` when the layer has no bias.
        fused_relu: ``True`` when dlib applies a ReLU inside the layer (``use_relu``).
    """

    num_filters: int
    nr: int
    nc: int
    stride_y: int
    stride_x: int
    pad_y: int
    pad_x: int
    weights: np.ndarray = field(repr=False)
    bias: np.ndarray | None = field(default=None, repr=False)
    fused_relu: bool = False


@dataclass(frozen=True)
class Affine:
    """A per-channel (conv mode) or per-element (fc mode) affine map ``y = gamma * x + beta``.

    A batch-norm layer (``bn_con``/``bn_fc``) stored in the file is converted to this inference
    form as dlib does: ``gamma / sqrt(running_var + eps)`` and ``beta - gamma' * running_mean``.

    Attributes:
        gamma: float32; ``(C,)`` in conv mode, ``(C, H, W)`` in fc mode.
        beta: same shape as ``gamma``.
        mode: ``"conv"`` or ``"fc"``.
        disabled: ``True`` when dlib skips the layer (identity).
    """

    gamma: np.ndarray = field(repr=False)
    beta: np.ndarray = field(repr=False)
    mode: str = "conv"
    disabled: bool = False


@dataclass(frozen=True)
class Relu:
    """``max(x, 0)``; ``disabled`` makes it the identity."""

    disabled: bool = False


@dataclass(frozen=True)
class FC:
    """A fully connected layer on the flattened ``(C*H*W)`` input (row-major ``C, H, W``).

    Attributes:
        num_outputs / num_inputs: sizes.
        weights: ``(num_inputs, num_outputs)`` float32 (``y = x @ weights + bias``).
        bias: ``(num_outputs,)`` float32, or ``None`` (``fc_no_bias`` or ``use_bias == False``).
    """

    num_outputs: int
    num_inputs: int
    weights: np.ndarray = field(repr=False)
    bias: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AddPrev:
    """Adds the output of the layer tagged ``tag`` to its input.

    When the two tensors differ in size, dlib zero-pads both to the element-wise maximum shape at
    the end of each axis (``tt::add``), e.g. ``3x3 + 4x4 -> 4x4``.
    """

    tag: int


@dataclass(frozen=True)
class Tag:
    """Marks its input as ``tag<id>`` for a later :class:`Skip` or :class:`AddPrev` (identity)."""

    id: int


@dataclass(frozen=True)
class Skip:
    """Replaces the current tensor by the output of the layer tagged ``tag``."""

    tag: int


@dataclass(frozen=True)
class AvgPool:
    """Average pooling, padding excluded from the mean.

    ``nr == nc == 0`` pools over the whole input (``avg_pool_everything``).
    Output size per axis: ``1 + (in + 2*pad - window) // stride``.
    """

    nr: int
    nc: int
    stride_y: int
    stride_x: int
    pad_y: int
    pad_x: int


@dataclass(frozen=True)
class MaxPool:
    """Max pooling, padding ignored; fields as :class:`AvgPool`."""

    nr: int
    nc: int
    stride_y: int
    stride_x: int
    pad_y: int
    pad_x: int


@dataclass(frozen=True)
class DetectorWindow:
    """One MMOD detector window: a ``width x height`` box (in input-tensor pixels) and its label."""

    width: int
    height: int
    label: str = ""


@dataclass(frozen=True)
class BoxOverlap:
    """The settings of dlib's ``test_box_overlap``.

    Two boxes overlap when their IoU exceeds ``iou_thresh`` or either covers more than
    ``percent_covered_thresh`` of the other.
    """

    iou_thresh: float
    percent_covered_thresh: float


@dataclass(frozen=True)
class MMODOptions:
    """``dlib::mmod_options`` as stored in the file.

    Attributes:
        detector_windows: one per output channel of the network.
        loss_per_false_alarm / loss_per_missed_target / truth_match_iou_threshold: training settings.
        overlaps_nms: the overlap test of non-max suppression at detection time.
        overlaps_ignore: the overlap test for ignore boxes (training).
        assume_image_pyramid: ``True`` when the input is a tiled pyramid.
        use_bounding_box_regression / bbr_lambda: bounding-box regression (off for the face model).
    """

    detector_windows: tuple[DetectorWindow, ...]
    loss_per_false_alarm: float
    loss_per_missed_target: float
    truth_match_iou_threshold: float
    overlaps_nms: BoxOverlap
    overlaps_ignore: BoxOverlap
    assume_image_pyramid: bool = True
    use_bounding_box_regression: bool = False
    bbr_lambda: float = 100.0


@dataclass(frozen=True)
class LossMetric:
    """``loss_metric_``: metric learning; the network output is the embedding.

    ``dist_thresh`` is the training distance threshold (0.6 for dlib's face model).
    """

    margin: float
    dist_thresh: float


@dataclass(frozen=True)
class LossMMOD:
    """``loss_mmod_``: max-margin object detection; the output maps are window scores."""

    options: MMODOptions


Layer = ConLayer | Affine | Relu | FC | AddPrev | Tag | Skip | AvgPool | MaxPool


@dataclass(frozen=True)
class DlibNetwork:
    """A parsed dlib network.

    Attributes:
        input: the input layer.
        layers: the layers from the input to the output (tags and skips included).
        loss: :class:`LossMetric` or :class:`LossMMOD`.
        source: the file it came from.
        topology: name of the :data:`TOPOLOGIES` entry used to resolve tags/skips, or ``""``.
    """

    input: InputLayer
    layers: tuple[Layer, ...]
    loss: LossMetric | LossMMOD
    source: str = ""
    topology: str = ""

    @property
    def num_outputs(self) -> int:
        """Channels of the last layer with outputs (embedding size, or number of detector windows)."""
        for layer in reversed(self.layers):
            if isinstance(layer, ConLayer):
                return layer.num_filters
            if isinstance(layer, FC):
                return layer.num_outputs
        raise ModelError(f"{self.source}: network has no con or fc layer")


# ---------------------------------------------------------------------------------------------
# Reading layer details
# ---------------------------------------------------------------------------------------------

#: Readers of layer details, by dlib's version string. Each is called after the string is read.
LAYER_READERS: Registry[Callable[[DlibReader, str], Layer]] = Registry("dlib layer reader")


def _params_slice(reader: DlibReader, params: np.ndarray, start: int, count: int, what: str) -> np.ndarray:
    flat = params.reshape(-1)
    if start + count > flat.size:
        raise reader.error(f"{what}: parameter tensor holds {flat.size} values, needs {start + count}")
    return flat[start : start + count].copy()


def _skip_multipliers(reader: DlibReader, prefix: str) -> None:
    """Read past a layer's four training-only doubles (learning-rate and weight-decay multipliers)."""
    for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        reader.read_double(f"{prefix} {name}_multiplier")


def _size(dims: Sequence[int]) -> int:
    return int(np.prod(dims)) if dims else 0


def _read_con(reader: DlibReader, version: str) -> ConLayer:
    params = reader.read_tensor("con_ params")
    num_filters = reader.read_int64("con_ num_filters")
    nr = reader.read_int64("con_ nr")
    nc = reader.read_int64("con_ nc")
    stride_y = reader.read_int32("con_ stride_y")
    stride_x = reader.read_int32("con_ stride_x")
    pad_y = reader.read_int32("con_ padding_y")
    pad_x = reader.read_int32("con_ padding_x")
    filters = reader.read_alias_tensor("con_ filters")
    biases = reader.read_alias_tensor("con_ biases")
    _skip_multipliers(reader, "con_")
    use_bias = reader.read_bool("con_ use_bias") if version in ("con_5", "con_6") else True
    use_relu = reader.read_bool("con_ use_relu") if version == "con_6" else False
    if filters[0] != num_filters or filters[2] != nr or filters[3] != nc:
        raise reader.error(f"con_ filter shape {filters} disagrees with {num_filters} filters of {nr}x{nc}")
    weights = _params_slice(reader, params, 0, _size(filters), "con_").reshape(filters)
    bias = None
    if use_bias and _size(biases):
        bias = _params_slice(reader, params, _size(filters), num_filters, "con_ bias")
    return ConLayer(num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x, weights, bias, use_relu)


def _read_fc(reader: DlibReader, version: str) -> FC:
    num_outputs = reader.read_ulong("fc_ num_outputs")
    num_inputs = reader.read_ulong("fc_ num_inputs")
    params = reader.read_tensor("fc_ params")
    weights_dims = reader.read_alias_tensor("fc_ weights")
    biases_dims = reader.read_alias_tensor("fc_ biases")
    bias_mode = reader.read_int32("fc_ bias_mode")
    _skip_multipliers(reader, "fc_")
    use_bias = reader.read_bool("fc_ use_bias") if version == "fc_3" else True
    if bias_mode not in (0, 1):
        raise reader.error(f"fc_ bias_mode {bias_mode} is neither 0 (bias) nor 1 (no bias)")
    count = num_inputs * num_outputs
    if _size(weights_dims) != count:
        raise reader.error(f"fc_ weights shape {weights_dims} disagrees with {num_inputs}x{num_outputs}")
    weights = _params_slice(reader, params, 0, count, "fc_").reshape(num_inputs, num_outputs)
    bias = None
    if bias_mode == 0 and use_bias and _size(biases_dims):
        bias = _params_slice(reader, params, count, num_outputs, "fc_ bias")
    return FC(num_outputs, num_inputs, weights, bias)


def _affine_shape(dims: Sequence[int], mode: str) -> tuple[int, ...]:
    return (int(dims[1]),) if mode == "conv" else tuple(int(d) for d in dims[1:])


def _read_affine(reader: DlibReader, version: str) -> Affine:
    params = reader.read_tensor("affine_ params")
    gamma_dims = reader.read_alias_tensor("affine_ gamma")
    beta_dims = reader.read_alias_tensor("affine_ beta")
    mode_value = reader.read_int32("affine_ mode")
    disabled = reader.read_bool("affine_ disabled") if version == "affine_2" else False
    if mode_value not in (0, 1):
        raise reader.error(f"affine_ mode {mode_value} is neither 0 (conv) nor 1 (fc)")
    mode = "conv" if mode_value == 0 else "fc"
    if disabled:
        return Affine(np.ones(0, np.float32), np.zeros(0, np.float32), mode, True)
    n = _size(gamma_dims)
    gamma = _params_slice(reader, params, 0, n, "affine_ gamma").reshape(_affine_shape(gamma_dims, mode))
    beta = _params_slice(reader, params, n, _size(beta_dims), "affine_ beta").reshape(_affine_shape(beta_dims, mode))
    return Affine(gamma, beta, mode, False)


def _read_bn(reader: DlibReader, version: str) -> Affine:
    mode = "conv" if version == "bn_con2" else "fc"
    params = reader.read_tensor("bn_ params")
    gamma_dims = reader.read_alias_tensor("bn_ gamma")
    reader.read_alias_tensor("bn_ beta")
    for name in ("means", "invstds"):
        reader.read_tensor(f"bn_ {name}")
    running_means = reader.read_tensor("bn_ running_means").reshape(-1).astype(np.float64)
    running_vars = reader.read_tensor("bn_ running_variances").reshape(-1).astype(np.float64)
    reader.read_ulong("bn_ num_updates")
    reader.read_ulong("bn_ running_stats_window_size")
    _skip_multipliers(reader, "bn_")
    eps = reader.read_double("bn_ eps")
    n = _size(gamma_dims)
    gamma = _params_slice(reader, params, 0, n, "bn_ gamma").astype(np.float64)
    beta = _params_slice(reader, params, n, n, "bn_ beta").astype(np.float64)
    if running_means.size != n or running_vars.size != n:
        raise reader.error(f"bn_ running statistics have {running_means.size} values for {n} channels")
    scale = gamma / np.sqrt(running_vars + eps)
    shift = beta - scale * running_means
    shape = _affine_shape(gamma_dims, mode)
    return Affine(scale.astype(np.float32).reshape(shape), shift.astype(np.float32).reshape(shape), mode, False)


def _read_relu(reader: DlibReader, version: str) -> Relu:
    return Relu(reader.read_bool("relu_ disabled") if version == "relu_2" else False)


def _read_pool(reader: DlibReader, version: str) -> AvgPool | MaxPool:
    values = [
        reader.read_int64("pool nr"),
        reader.read_int64("pool nc"),
        reader.read_int32("pool stride_y"),
        reader.read_int32("pool stride_x"),
        reader.read_int32("pool padding_y"),
        reader.read_int32("pool padding_x"),
    ]
    return (AvgPool if version.startswith("avg") else MaxPool)(*values)


def _read_add_prev(reader: DlibReader, version: str) -> AddPrev:
    return AddPrev(0)  # the tag id is not stored; resolved from the topology


for _names, _fn in (
    (("con_4", "con_5", "con_6"), _read_con),
    (("fc_2", "fc_3"), _read_fc),
    (("affine_", "affine_2"), _read_affine),
    (("bn_con2", "bn_fc2"), _read_bn),
    (("relu_", "relu_2"), _read_relu),
    (("avg_pool_2", "max_pool_2"), _read_pool),
    (("add_prev_",), _read_add_prev),
):
    for _name in _names:
        LAYER_READERS.register(_name)(_fn)


def _read_layer_details(reader: DlibReader) -> Layer:
    start = reader.offset
    name = reader.read_string("a layer version string", max_length=256)
    if name not in LAYER_READERS:
        raise reader.error(
            f"unsupported or unexpected dlib layer {name!r} (supported: {', '.join(LAYER_READERS.names())})", start
        )
    return LAYER_READERS.get(name)(reader, name)


def _read_input(reader: DlibReader) -> InputLayer:
    start = reader.offset
    kind = reader.read_string("the input layer version string", max_length=256)
    if kind in ("input_rgb_image", "input_rgb_image_sized", "input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        avg = (reader.read_float("avg_red"), reader.read_float("avg_green"), reader.read_float("avg_blue"))
        if kind == "input_rgb_image_sized":
            return InputLayer(kind, avg, nr=reader.read_ulong("input rows"), nc=reader.read_ulong("input columns"))
        if kind == "input_rgb_image":
            return InputLayer(kind, avg)
        if kind == "input_rgb_image_pyramid2":
            padding = reader.read_ulong("pyramid_padding")
            outer = reader.read_ulong("pyramid_outer_padding")
        else:
            padding, outer = 10, 11
        return InputLayer(kind, avg, pyramid_padding=padding, pyramid_outer_padding=outer, pyramid_rate=6)
    raise reader.error(f"unsupported dlib input layer {kind!r}", start)


def _read_mmod_options(reader: DlibReader) -> MMODOptions:
    version = reader.expect_int((1, 2, 3, 4), "mmod_options version")
    if version == 1:
        windows = [DetectorWindow(reader.read_ulong("window width"), reader.read_ulong("window height"))]
    else:

        def window() -> DetectorWindow:
            v = reader.expect_int((1, 2), "detector_window_details version")
            width = reader.read_ulong("detector window width")
            height = reader.read_ulong("detector window height")
            label = reader.read_string("detector window label", max_length=4096) if v == 2 else ""
            return DetectorWindow(width, height, label)

        windows = reader.read_vector(window, "detector_windows", max_items=10000)
    false_alarm = reader.read_double("loss_per_false_alarm")
    missed = reader.read_double("loss_per_missed_target")
    match_iou = reader.read_double("truth_match_iou_threshold")
    nms = BoxOverlap(reader.read_double("overlaps_nms iou"), reader.read_double("overlaps_nms covered"))
    ignore = BoxOverlap(reader.read_double("overlaps_ignore iou"), reader.read_double("overlaps_ignore covered"))
    pyramid = bool(reader.read_uchar("assume_image_pyramid")) if version >= 3 else True
    bbr, bbr_lambda = False, 100.0
    if version >= 4:
        bbr = reader.read_bool("use_bounding_box_regression")
        bbr_lambda = reader.read_double("bbr_lambda")
    return MMODOptions(tuple(windows), false_alarm, missed, match_iou, nms, ignore, pyramid, bbr, bbr_lambda)


def _read_loss(reader: DlibReader) -> LossMetric | LossMMOD:
    start = reader.offset
    name = reader.peek_string(256)
    if name is None:
        raise reader.error("expected a loss layer version string: this is not a dlib DNN file", start)
    reader.read_string()
    if name == "loss_mmod_":
        return LossMMOD(_read_mmod_options(reader))
    if name == "loss_metric_":
        return LossMetric(0.1, 0.75)
    if name == "loss_metric_2":
        return LossMetric(reader.read_float("loss_metric margin"), reader.read_float("loss_metric dist_thresh"))
    raise reader.error(f"unsupported dlib loss layer {name!r} (supported: loss_mmod_, loss_metric_)", start)


def _read_layer_tail(reader: DlibReader, trailing_tensors: int) -> None:
    for what in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        reader.read_bool(what)
    for i in range(trailing_tensors):
        reader.read_tensor(f"cached tensor {i + 1} of a layer")


# ---------------------------------------------------------------------------------------------
# Topologies: which version-1 wrappers are tags and which are skips
# ---------------------------------------------------------------------------------------------

#: Known topologies, by name: each returns the input-to-output layer sequence as kind names
#: ("con", "affine", "relu", "fc", "avg_pool", "max_pool", "add_prev<N>", "tag<N>", "skip<N>").
TOPOLOGIES: Registry[Callable[[], list[str]]] = Registry("dlib network topology")


@TOPOLOGIES.register("dlib_face_recognition_resnet_model_v1")
def _resnet_face_v1() -> list[str]:
    """Dlib's face-recognition ResNet (``dnn_face_recognition_ex.cpp``), input to output."""
    seq = ["con", "affine", "relu", "max_pool"]

    def block() -> list[str]:
        return ["con", "affine", "relu", "con", "affine"]

    def ares() -> list[str]:
        return ["tag1", *block(), "add_prev1", "relu"]

    def ares_down() -> list[str]:
        return ["tag1", *block(), "tag2", "skip1", "avg_pool", "add_prev2", "relu"]

    for downs, plain in ((0, 3), (1, 3), (1, 2), (1, 2), (1, 0)):  # alevel4 .. alevel0
        seq += ares_down() * downs + ares() * plain
    return [*seq, "avg_pool", "fc"]


def _kind(layer: Layer | None) -> str:
    if layer is None:
        return "marker"
    return {
        ConLayer: "con",
        Affine: "affine",
        Relu: "relu",
        FC: "fc",
        AvgPool: "avg_pool",
        MaxPool: "max_pool",
        AddPrev: "add_prev",
    }[type(layer)]


def _strip(token: str) -> str:
    if token.startswith(("tag", "skip")):
        return "marker"
    return token.rstrip("0123456789")


def _resolve_markers(entries: list[Layer | None], source: str) -> tuple[tuple[Layer, ...], str]:
    if all(entry is not None for entry in entries):
        return tuple(entries), ""  # type: ignore[arg-type]
    kinds = [_kind(e) for e in entries]
    for name in TOPOLOGIES:
        tokens = TOPOLOGIES.get(name)()
        if [_strip(t) for t in tokens] != kinds:
            continue
        layers: list[Layer] = []
        for token, entry in zip(tokens, entries):
            number = int(token.lstrip("abcdefghijklmnopqrstuvwxyz_") or 0)
            if token.startswith("tag"):
                layers.append(Tag(number))
            elif token.startswith("skip"):
                layers.append(Skip(number))
            elif token.startswith("add_prev"):
                layers.append(AddPrev(number))
            else:
                layers.append(entry)  # type: ignore[arg-type]
        return tuple(layers), name
    raise ModelError(
        f"{source}: the network has tag/skip layers but matches none of the known topologies "
        f"({', '.join(TOPOLOGIES.names())}); dlib files do not record tag ids, so it cannot be converted"
    )


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


def parse_dnn(data: bytes, source: str = "<memory>") -> DlibNetwork:
    """Parse the bytes of a dlib DNN file.

    Args:
        data: the file contents.
        source: name for error messages.

    Returns:
        The :class:`DlibNetwork`.

    Raises:
        ModelError: not a dlib DNN of a supported kind, truncated, or corrupt; the message names
            the file and the byte offset.
    """
    reader = DlibReader(data, source)
    if reader.peek_byte() != 0x01 or len(data) < 3 or data[1] != 0x01:
        raise reader.error("not a dlib DNN file (it does not start with the loss layer's version 1)")
    reader.expect_int(1, "add_loss_layer version")
    loss = _read_loss(reader)
    wrappers: list[int] = []
    while True:
        start = reader.offset
        version = reader.read_int32("a layer wrapper version")
        name = reader.peek_string(256)
        if name is not None and name.startswith("input"):
            break
        if version not in (1, 2):
            raise reader.error(f"unexpected layer wrapper version {version}", start)
        wrappers.append(version)
        if len(wrappers) > 100000:
            raise reader.error("implausibly deep network")
    input_layer = _read_input(reader)
    after_input = reader.peek_string(256)
    entries: list[Layer | None] = []
    # After the input, an add_layer continues with its details (a layer name); a tag on the input
    # with a tensor (integer version 2, which would read as a 2-byte unprintable "string").
    if after_input is not None and len(after_input) >= 3 and after_input.isprintable():
        if version not in (2, 3):
            raise reader.error(f"unexpected version {version} of the input add_layer")
        entries.append(_read_layer_details(reader))
        _read_layer_tail(reader, 3)
        if version == 3:
            reader.read_ulong("sample_expansion_factor")
    else:  # a tag directly on the input layer
        if version not in (1, 2):
            raise reader.error(f"unexpected version {version} of the input add_tag_layer")
        reader.read_tensor("cached_output")
        reader.read_tensor("grad_final")
        reader.read_bool("gradient_input_is_stale")
        if version == 2:
            reader.read_ulong("sample_expansion_factor")
        entries.append(None)
    for version in reversed(wrappers):
        if version == 1:
            entries.append(None)  # tag or skip: resolved below
        else:
            entries.append(_read_layer_details(reader))
            _read_layer_tail(reader, 3)
    if not reader.at_end():
        raise reader.error(f"{reader.remaining} unexpected trailing byte(s) after the network")
    layers, topology = _resolve_markers(entries, source)
    network = DlibNetwork(input_layer, layers, loss, source, topology)
    if isinstance(loss, LossMMOD) and network.num_outputs != len(loss.options.detector_windows):
        raise ModelError(
            f"{source}: the network has {network.num_outputs} output channels for "
            f"{len(loss.options.detector_windows)} detector windows"
        )
    return network


def load_dnn(path: str | Path) -> DlibNetwork:
    """Read a dlib DNN ``.dat`` file (e.g. ``mmod_human_face_detector.dat``).

    Args:
        path: the file.

    Returns:
        The parsed :class:`DlibNetwork`.

    Raises:
        ModelNotFoundError: the file does not exist.
        ModelError: the file is not a supported dlib DNN, or is truncated or corrupt.
    """
    data, source = read_model_bytes(path)
    network = parse_dnn(data, source)
    logger.debug(
        "loaded dlib network %s: %s, %d layers, %s",
        source,
        network.input.kind,
        len(network.layers),
        type(network.loss).__name__,
    )
    return network


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def output_shapes(network: DlibNetwork, height: int, width: int) -> list[tuple[int, int, int]]:
    """Infer each layer's output shape ``(channels, rows, cols)`` for an input of ``height x width``.

    Args:
        network: the network.
        height: input tensor rows.
        width: input tensor columns.

    Returns:
        One ``(C, H, W)`` per entry of ``network.layers`` (for an :class:`FC`, ``(outputs, 1, 1)``).

    Raises:
        ModelError: a layer cannot be applied (input too small, unknown tag).
    """
    current = (3, int(height), int(width))
    tagged: dict[int, tuple[int, int, int]] = {}
    shapes: list[tuple[int, int, int]] = []
    for layer in network.layers:
        c, h, w = current
        if isinstance(layer, (ConLayer, AvgPool, MaxPool)):
            kh = layer.nr or h
            kw = layer.nc or w
            if h + 2 * layer.pad_y < kh or w + 2 * layer.pad_x < kw:
                raise ModelError(f"{network.source}: a {kh}x{kw} window does not fit a {h}x{w} input")
            h = 1 + (h + 2 * layer.pad_y - kh) // layer.stride_y
            w = 1 + (w + 2 * layer.pad_x - kw) // layer.stride_x
            if isinstance(layer, ConLayer):
                c = layer.num_filters
        elif isinstance(layer, FC):
            c, h, w = layer.num_outputs, 1, 1
        elif isinstance(layer, Tag):
            tagged[layer.id] = current
        elif isinstance(layer, (Skip, AddPrev)):
            if layer.tag not in tagged:
                raise ModelError(f"{network.source}: reference to tag{layer.tag} before it is set")
            other = tagged[layer.tag]
            c, h, w = other if isinstance(layer, Skip) else tuple(max(a, b) for a, b in zip(current, other))
        current = (c, h, w)
        shapes.append(current)
    return shapes


def output_to_input_point(
    network: DlibNetwork, x: np.ndarray | float, y: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Map output-tensor coordinates to input-tensor coordinates, as dlib's ``output_tensor_to_input_tensor``.

    Going from the output back to the input, each con/pool layer maps ``p -> p*stride - pad +
    kernel//2`` per axis; every other layer is the identity (tags/skips follow the layer they
    jump to). For dlib's MMOD face detector this gives ``p_in = 8*p_out + 14`` (computed from
    its layers, not hard-coded).

    Args:
        network: the network.
        x: output column coordinate(s) (scalar or array, any shape).
        y: output row coordinate(s), same shape as ``x``.

    Returns:
        ``(x_in, y_in)`` float64 arrays: positions in the input tensor (for a pyramid input, in the
        tiled pyramid image; map to the original image with the pyramid's own rectangles).
    """
    px = np.asarray(x, dtype=np.float64)
    py = np.asarray(y, dtype=np.float64)
    # Follow dlib's visitor: from the output layer downwards; a skip continues below its tag.
    layers = network.layers
    index = len(layers) - 1
    while index >= 0:
        layer = layers[index]
        if isinstance(layer, (ConLayer, AvgPool, MaxPool)):
            px = px * layer.stride_x - layer.pad_x + layer.nc // 2
            py = py * layer.stride_y - layer.pad_y + layer.nr // 2
        elif isinstance(layer, Skip):  # continue below the nearest tag<id> under the skip
            target = layer.tag
            index -= 1
            while index >= 0 and not (isinstance(layers[index], Tag) and layers[index].id == target):
                index -= 1
        index -= 1
    return px, py


def output_to_input_rect(
    network: DlibNetwork, x: np.ndarray | float, y: np.ndarray | float, window: int | DetectorWindow = 0
) -> np.ndarray:
    """The detector-window rectangle of output location(s) ``(x, y)`` in input-tensor coordinates.

    As dlib's ``loss_mmod_``: the output point is mapped with :func:`output_to_input_point` and
    a ``width x height`` window is centred on it with ``centered_drect`` (which spans
    ``(width - 1)`` and ``(height - 1)``).

    Args:
        network: the network (its loss must be :class:`LossMMOD` when ``window`` is an index).
        x: output column(s) (scalar or array).
        y: output row(s), same shape as ``x``.
        window: index into the detector windows, or a :class:`DetectorWindow`.

    Returns:
        ``(..., 4)`` float64 ``(left, top, right, bottom)`` in input-tensor pixels (dlib
        ``drectangle`` convention: right/bottom inclusive).
    """
    if isinstance(window, int):
        if not isinstance(network.loss, LossMMOD):
            raise ModelError(f"{network.source}: not an MMOD network, it has no detector windows")
        window = network.loss.options.detector_windows[window]
    px, py = output_to_input_point(network, x, y)
    half_w = (window.width - 1) / 2.0
    half_h = (window.height - 1) / 2.0
    return np.stack([px - half_w, py - half_h, px + half_w, py + half_h], axis=-1)
