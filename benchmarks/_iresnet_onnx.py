"""Build an IResNet-50 recogniser graph (112x112 RGB -> 512) with random weights, as ONNX.

It has the layer shapes of InsightFace's ``w600k_r50.onnx`` (IResNet-50: stem conv 64, stages of
3/4/14/3 improved basic blocks with 64/128/256/512 channels, BN-Dropout-FC-BN head), so timings
measured with it stand for that model's compute. The weights are random: embeddings are
meaningless, speed is real. Built with onnx.helper only, no torch.
"""

from __future__ import annotations

import numpy as np


def build_iresnet50(path: str, embedding_size: int = 512, seed: int = 0) -> None:
    """Write the graph to ``path`` with a dynamic batch axis."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list = []
    inits: list = []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(array: np.ndarray, prefix: str) -> str:
        n = name(prefix)
        inits.append(numpy_helper.from_array(array.astype(np.float32), n))
        return n

    def conv(x: str, cin: int, cout: int, k: int, stride: int) -> str:
        w = const(rng.normal(0, (2.0 / (cin * k * k)) ** 0.5, (cout, cin, k, k)), "w")
        out = name("conv")
        pad = k // 2
        nodes.append(
            helper.make_node("Conv", [x, w], [out], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        )
        return out

    def bn(x: str, c: int) -> str:
        args = [
            const(rng.uniform(0.5, 1.5, c), "g"),
            const(rng.normal(0, 0.1, c), "b"),
            const(rng.normal(0, 0.1, c), "m"),
            const(rng.uniform(0.5, 1.5, c), "v"),
        ]
        out = name("bn")
        nodes.append(helper.make_node("BatchNormalization", [x, *args], [out], epsilon=1e-5))
        return out

    def prelu(x: str, c: int) -> str:
        slope = const(np.full((c, 1, 1), 0.25), "slope")
        out = name("prelu")
        nodes.append(helper.make_node("PRelu", [x, slope], [out]))
        return out

    x = "input.1"
    x = prelu(bn(conv(x, 3, 64, 3, 1), 64), 64)
    cin = 64
    for cout, blocks in zip((64, 128, 256, 512), (3, 4, 14, 3)):
        for i in range(blocks):
            stride = 2 if i == 0 else 1
            y = bn(x, cin)
            y = conv(y, cin, cout, 3, 1)
            y = prelu(bn(y, cout), cout)
            y = bn(conv(y, cout, cout, 3, stride), cout)
            shortcut = x if (stride == 1 and cin == cout) else bn(conv(x, cin, cout, 1, stride), cout)
            out = name("add")
            nodes.append(helper.make_node("Add", [y, shortcut], [out]))
            x, cin = out, cout
    x = bn(x, 512)
    flat = name("flat")
    nodes.append(helper.make_node("Flatten", [x], [flat], axis=1))
    w = const(rng.normal(0, (1.0 / (512 * 49)) ** 0.5, (embedding_size, 512 * 49)), "fc")
    b = const(np.zeros(embedding_size), "fcb")
    fc = name("fc")
    nodes.append(helper.make_node("Gemm", [flat, w, b], [fc], transB=1))
    scale = const(rng.uniform(0.5, 1.5, embedding_size), "fs")
    shift = const(rng.normal(0, 0.1, embedding_size), "fb")
    mul = name("mul")
    nodes.append(helper.make_node("Mul", [fc, scale], [mul]))
    nodes.append(helper.make_node("Add", [mul, shift], ["683"]))
    graph = helper.make_graph(
        nodes,
        "iresnet50_random",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", embedding_size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
