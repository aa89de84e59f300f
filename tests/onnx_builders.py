"""Tiny ONNX models with InsightFace's input/output signatures, for tests.

The real InsightFace recognition, landmark, gender/age and swap weights are not available to
the test suite, so tests build small seeded models with the same signatures (input names,
shapes, dynamic batch axis, output sizes, and for the swapper a 512 x 512 last initializer) and
compare facelab's runners with InsightFace's classes on the *same* file. Every model is a
strided convolution + ReLU, an average pool to 4 x 4, and one or two matrix products, so each
output depends on every region and channel of the input (colour order and alignment matter).

Also here: realistic face geometry for ``shared/data/images/t1.jpg`` (boxes and five-point
keypoints of its six faces, as InsightFace's SCRFD-500M finds them), for tests that need real
faces without running a detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "T1_BOXES",
    "T1_KPS",
    "build_recognizer",
    "build_landmark_2d106",
    "build_landmark_3d68",
    "build_genderage",
    "build_swapper",
]

#: ``(6, 4)`` boxes ``[x1, y1, x2, y2]`` of the six faces of t1.jpg (1280 x 886). Source: the insightface
#: 2.1 package's own SCRFD (``model_zoo.get_model("det_500m.onnx")``, det_size 640x640, det_thresh 0.5,
#: nms 0.4), rounded to 0.1 px (re-checked: within 0.05 px of it, boxes and keypoints); not facelab output.
T1_BOXES = np.array(
    [
        [745.3, 342.2, 847.3, 480.1],
        [463.5, 266.5, 572.7, 415.4],
        [55.6, 260.8, 168.6, 397.9],
        [906.0, 59.5, 1011.1, 206.3],
        [1130.3, 272.8, 1227.3, 400.6],
        [270.0, 144.9, 371.9, 270.3],
    ],
    dtype=np.float32,
)

#: ``(6, 5, 2)`` five-point keypoints of the same faces (left eye, right eye, nose, mouth corners).
T1_KPS = np.array(
    [
        [[761.1, 400.1], [803.8, 399.8], [774.6, 429.0], [767.2, 444.4], [805.0, 443.5]],
        [[495.6, 321.6], [545.6, 335.6], [513.6, 361.8], [484.5, 368.0], [530.7, 380.2]],
        [[82.8, 328.1], [124.4, 302.6], [117.9, 335.1], [114.3, 369.7], [148.9, 347.7]],
        [[916.7, 118.8], [948.1, 115.6], [920.3, 150.9], [935.2, 169.9], [961.6, 166.1]],
        [[1149.3, 324.8], [1194.5, 319.8], [1170.6, 344.2], [1156.5, 366.9], [1197.2, 362.7]],
        [[285.4, 206.1], [318.3, 190.0], [302.7, 223.9], [311.3, 244.7], [339.7, 230.5]],
    ],
    dtype=np.float32,
)

_CONV_CHANNELS = 4


def _tensor(name: str, array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)


def _image_head(
    rng: np.random.Generator,
    input_name: str,
    size: int,
    out_dim: int,
    *,
    in_graph_norm: bool,
    hidden: int | None,
    activation: str | None,
    output_name: str,
) -> tuple[list, list]:
    """Nodes and initializers mapping an ``(N, 3, size, size)`` input to ``(N, out_dim)``."""
    from onnx import helper

    nodes, inits = [], []
    x = input_name
    if in_graph_norm:
        # Named like MXNet exports so InsightFace detects an in-graph normalisation (mean 0, std 1).
        inits += [_tensor("norm_mean", np.array([127.5])), _tensor("norm_scale", np.array([1 / 128.0]))]
        nodes += [
            helper.make_node("Sub", [x, "norm_mean"], ["sub_out"], name="Sub_0"),
            helper.make_node("Mul", ["sub_out", "norm_scale"], ["mul_out"], name="Mul_1"),
        ]
        x = "mul_out"
    inits.append(_tensor("conv_w", rng.normal(0, 0.3, (_CONV_CHANNELS, 3, 3, 3))))
    inits.append(_tensor("conv_b", rng.normal(0, 0.1, (_CONV_CHANNELS,))))
    pool = size // 8
    features = _CONV_CHANNELS * 16
    nodes += [
        helper.make_node(
            "Conv",
            [x, "conv_w", "conv_b"],
            ["conv_out"],
            name="conv0",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu0"),
        helper.make_node(
            "AveragePool", ["relu_out"], ["pool_out"], name="pool0", kernel_shape=[pool, pool], strides=[pool, pool]
        ),
        helper.make_node("Flatten", ["pool_out"], ["flat"], name="flatten0", axis=1),
    ]
    last = "flat"
    if hidden:
        inits.append(_tensor("fc_hidden", rng.normal(0, 1 / np.sqrt(features), (features, hidden))))
        nodes += [
            helper.make_node("MatMul", [last, "fc_hidden"], ["hid"], name="fc_hidden"),
            helper.make_node("Relu", ["hid"], ["hid_relu"], name="relu1"),
        ]
        last, features = "hid_relu", hidden
    inits.append(_tensor("fc_out", rng.normal(0, 2 / np.sqrt(features), (features, out_dim))))
    pre = output_name if activation is None else "fc_pre"
    nodes.append(helper.make_node("MatMul", [last, "fc_out"], [pre], name="fc_out"))
    if activation is not None:
        nodes.append(helper.make_node(activation, [pre], [output_name], name="act_out"))
    return nodes, inits


def _save(nodes: list, inits: list, inputs: list, outputs: list, path: Path, name: str) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="facelab-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def _single_input_model(
    path: Path,
    *,
    size: int,
    out_dim: int,
    batch: int | None,
    seed: int,
    in_graph_norm: bool,
    hidden: int | None,
    activation: str | None,
    input_name: str,
    output_name: str,
) -> Path:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    batch_dim = batch if batch else "None"
    nodes, inits = _image_head(
        rng,
        input_name,
        size,
        out_dim,
        in_graph_norm=in_graph_norm,
        hidden=hidden,
        activation=activation,
        output_name=output_name,
    )
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch_dim, 3, size, size])
    out = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch_dim, out_dim])
    return _save(nodes, inits, [inp], [out], path, "tiny")


def build_recognizer(
    path: str | Path, *, size: int = 112, dim: int = 512, batch: int | None = None, seed: int = 0
) -> Path:
    """Recogniser like ``w600k_r50.onnx``: ``input.1 [None, 3, 112, 112]`` → ``683 [None, 512]``.

    ``batch`` fixes the batch axis (``None`` = dynamic). No in-graph normalisation, so
    InsightFace feeds it RGB ``(x - 127.5) / 127.5``.
    """
    return _single_input_model(
        Path(path),
        size=size,
        out_dim=dim,
        batch=batch,
        seed=seed,
        in_graph_norm=False,
        hidden=None,
        activation=None,
        input_name="input.1",
        output_name="683",
    )


def build_landmark_2d106(
    path: str | Path, *, in_graph_norm: bool = True, batch: int | None = None, seed: int = 1
) -> Path:
    """Landmark model like ``2d106det.onnx``: ``data [None, 3, 192, 192]`` → ``fc1 [None, 212]`` in ``[-1, 1]``."""
    return _single_input_model(
        Path(path),
        size=192,
        out_dim=212,
        batch=batch,
        seed=seed,
        in_graph_norm=in_graph_norm,
        hidden=None,
        activation="Tanh",
        input_name="data",
        output_name="fc1",
    )


def build_landmark_3d68(
    path: str | Path, *, in_graph_norm: bool = True, batch: int | None = None, seed: int = 2
) -> Path:
    """Landmark model like ``1k3d68.onnx``: ``data [None, 3, 192, 192]`` → ``fc1 [None, 3309]`` (1103 x 3)."""
    return _single_input_model(
        Path(path),
        size=192,
        out_dim=3309,
        batch=batch,
        seed=seed,
        in_graph_norm=in_graph_norm,
        hidden=16,
        activation="Tanh",
        input_name="data",
        output_name="fc1",
    )


def build_genderage(
    path: str | Path, *, out_dim: int = 3, in_graph_norm: bool = True, batch: int | None = None, seed: int = 3
) -> Path:
    """Attribute model like ``genderage.onnx``: ``data [None, 3, 96, 96]`` → ``fc1 [None, 3]`` (sigmoid)."""
    return _single_input_model(
        Path(path),
        size=96,
        out_dim=out_dim,
        batch=batch,
        seed=seed,
        in_graph_norm=in_graph_norm,
        hidden=None,
        activation="Sigmoid",
        input_name="data",
        output_name="fc1",
    )


def build_swapper(path: str | Path, *, seed: int = 4, dim: int = 512) -> Path:
    """Swapper like ``inswapper_128.onnx``.

    Inputs ``target [1, 3, 128, 128]`` and ``source [1, 512]``, output ``output [1, 3, 128, 128]``.

    The output is ``sigmoid(1.5 * conv3x3(target) + source @ W)`` per channel, in ``[0, 1]``. The
    last initializer is a seeded ``(dim, dim)`` ``emap`` matrix (unused by the graph, as in the real
    model where it is read by the caller).
    """
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    inits = [
        _tensor("swap_conv_w", rng.normal(0, 0.5, (3, 3, 3, 3))),
        _tensor("swap_gain", np.array([1.5])),
        _tensor("swap_src_w", rng.normal(0, 3.0, (dim, 3))),
        helper.make_tensor("swap_shape", TensorProto.INT64, [4], [1, 3, 1, 1]),
        _tensor("emap", rng.normal(0, 1 / np.sqrt(dim), (dim, dim))),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["target", "swap_conv_w"], ["c"], name="conv0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Mul", ["c", "swap_gain"], ["c_gain"], name="gain0"),
        helper.make_node("MatMul", ["source", "swap_src_w"], ["s"], name="src_fc"),
        helper.make_node("Reshape", ["s", "swap_shape"], ["s4"], name="src_reshape"),
        helper.make_node("Add", ["c_gain", "s4"], ["pre"], name="add0"),
        helper.make_node("Sigmoid", ["pre"], ["output"], name="sigmoid0"),
    ]
    inputs = [
        helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
        helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, dim]),
    ]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])]
    return _save(nodes, inits, inputs, outputs, Path(path), "tiny_swapper")
