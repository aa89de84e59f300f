"""One ONNX graph builder for every weight converter (dlib, MTCNN, PyTorch checkpoints).

:class:`GraphBuilder` accumulates nodes and initialisers under unique names and serialises a
checked model; converters describe their network layer by layer with :meth:`GraphBuilder.node`
and :meth:`GraphBuilder.const` (or the small layer helpers below) and call
:meth:`GraphBuilder.finish`. ``onnx`` is imported lazily: it belongs to the ``convert`` extra (and
to ``open``), and a missing install is a :class:`~facelab.errors.ModelError` naming the extra.

Conventions: tensors are ``float32`` and ``NCHW``; weights are numpy arrays given in ONNX's
layouts (``Conv``: ``(out, in / group, kh, kw)``; ``Gemm`` with ``transB=0``: ``(in, out)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facelab.errors import ModelError

__all__ = ["GraphBuilder", "OPSET", "IR_VERSION", "import_onnx"]

#: ONNX opset of every converted model.
OPSET = 17
#: IR version written into converted models (readable by onnxruntime >= 1.15).
IR_VERSION = 8


def import_onnx(what: str) -> Any:
    """Import ``onnx`` or raise a :class:`ModelError` that says which extra installs it.

    Args:
        what: what needs it, for the message (e.g. ``"converting dlib models"``).
    """
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError(f"{what} needs the 'onnx' package: pip install 'facelab[convert]'") from exc
    return onnx


class GraphBuilder:
    """Accumulates ONNX nodes and initialisers with unique names.

    Args:
        what: what is being converted, for the error message when ``onnx`` is missing.

    Example:
        >>> g = GraphBuilder("a doctest")
        >>> y = g.node("Relu", ["input"], "relu")
        >>> model = g.finish("input", ["batch", 3], [(g.rename(y, "output"), ["batch", 3])], "tiny", "doctest", "1")
        >>> isinstance(model, bytes)
        True
    """

    def __init__(self, what: str = "converting a model") -> None:
        onnx = import_onnx(what)
        from onnx import helper, numpy_helper

        self.onnx = onnx
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.counter = 0

    def name(self, prefix: str) -> str:
        """A new unique tensor name starting with ``prefix``."""
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        """Add ``array`` as an initialiser (its dtype kept) and return its name."""
        name = self.name(prefix)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: Sequence[str], prefix: str, **attrs: Any) -> str:
        """Add one single-output node and return its output's name."""
        out = self.name(prefix)
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=out + "_node", **attrs))
        return out

    # Layer helpers shared by the converters -------------------------------------------------

    def conv(
        self,
        x: str,
        weight: np.ndarray,
        bias: np.ndarray | None = None,
        stride: int | tuple[int, int] = 1,
        pads: int | tuple[int, int] = 0,
        group: int = 1,
        prefix: str = "conv",
        dilation: int = 1,
    ) -> str:
        """``Conv`` with ``weight`` ``(out, in / group, kh, kw)``, symmetric padding ``pads`` (y, x), ``dilation``."""
        sy, sx = (stride, stride) if isinstance(stride, int) else stride
        py, px = (pads, pads) if isinstance(pads, int) else pads
        inputs = [x, self.const(prefix + "_W", np.asarray(weight, np.float32))]
        if bias is not None:
            inputs.append(self.const(prefix + "_B", np.asarray(bias, np.float32)))
        attrs = {} if dilation == 1 else {"dilations": [dilation, dilation]}
        return self.node(
            "Conv",
            inputs,
            prefix,
            kernel_shape=list(np.asarray(weight).shape[2:]),
            strides=[sy, sx],
            pads=[py, px, py, px],
            group=group,
            **attrs,
        )

    def gemm(self, x: str, weight_in_out: np.ndarray, bias: np.ndarray | None = None, prefix: str = "fc") -> str:
        """``x @ W + b`` for a 2-D ``x``; ``weight_in_out`` is ``(in, out)``."""
        inputs = [x, self.const(prefix + "_W", np.asarray(weight_in_out, np.float32))]
        if bias is not None:
            inputs.append(self.const(prefix + "_B", np.asarray(bias, np.float32)))
        return self.node("Gemm", inputs, prefix)

    def prelu(self, x: str, slope: np.ndarray, rank: int = 4, prefix: str = "prelu", *, form: str = "auto") -> str:
        """PReLU with one slope per channel (axis 1) of a rank-``rank`` tensor.

        Args:
            x: input tensor name.
            slope: ``(C,)`` slopes.
            rank: rank of ``x``.
            prefix: name prefix.
            form: how it is written; every form gives the same values bit for bit:

                * ``"auto"``: ``Max(x, x * slope)`` when every slope is ``<= 1`` (``Min`` when every
                  slope is ``>= 1``), else one ``PRelu`` node. About five times faster than ONNX
                  Runtime's ``PRelu`` CPU kernel, whose per-channel broadcast is slow;
                * ``"prelu"``: one ``PRelu`` node;
                * ``"relu_min"``: ``Relu(x) + slope * Min(x, 0)`` (one of the two terms is 0).
        """
        shape = (-1,) + (1,) * (rank - 2)
        slope = np.asarray(slope, np.float32).reshape(shape)
        a = self.const(prefix + "_slope", slope)
        if form == "auto":
            if np.all(slope <= 1) or np.all(slope >= 1):
                scaled = self.node("Mul", [x, a], prefix + "_scaled")
                return self.node("Max" if np.all(slope <= 1) else "Min", [x, scaled], prefix)
            return self.node("PRelu", [x, a], prefix)
        if form == "prelu":
            return self.node("PRelu", [x, a], prefix)
        if form != "relu_min":
            raise ModelError(f"unknown PReLU form {form!r}; expected 'auto', 'prelu' or 'relu_min'")
        negative = self.node("Min", [x, self.const(prefix + "_zero", np.zeros((), np.float32))], prefix + "_min")
        return self.node(
            "Add", [self.node("Relu", [x], prefix + "_relu"), self.node("Mul", [negative, a], prefix + "_neg")], prefix
        )

    def finish(
        self,
        input_name: str,
        input_dims: Sequence[Any],
        outputs: Sequence[tuple[str, Sequence[Any]]],
        graph_name: str,
        producer: str,
        producer_version: str,
        metadata: dict[str, str] | None = None,
    ) -> bytes:
        """Check and serialise the model.

        Args:
            input_name: the graph input (``float32``).
            input_dims: its dims; strings are symbolic (``"batch"``).
            outputs: ``(tensor, dims)`` pairs, exposed as graph outputs under the tensors' names
                (use :meth:`rename` first for a chosen output name).
            graph_name: the graph's name.
            producer: ``producer_name`` (the converter module).
            producer_version: the converter's version.
            metadata: ``metadata_props`` key/value strings.

        Returns:
            The serialised ONNX model (opset :data:`OPSET`).
        """
        helper = self.helper
        float_type = self.onnx.TensorProto.FLOAT
        outs = []
        for tensor, dims in outputs:
            outs.append(helper.make_tensor_value_info(tensor, float_type, list(dims)))
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info(input_name, float_type, list(input_dims))],
            outs,
            self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name=producer,
            producer_version=producer_version,
        )
        model.ir_version = IR_VERSION
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)
        self.onnx.checker.check_model(model)
        return model.SerializeToString()

    def rename(self, tensor: str, name: str) -> str:
        """Expose ``tensor`` under ``name`` (an ``Identity`` node); returns ``name``."""
        self.nodes.append(self.helper.make_node("Identity", [tensor], [name], name=name + "_node"))
        return name
