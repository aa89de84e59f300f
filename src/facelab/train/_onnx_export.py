"""Steps every facelab training export shares: argument checks, the legacy exporter, the torch-vs-ONNX Runtime check.

Used by :func:`facelab.train.export.export_onnx` (recognition),
:func:`facelab.train.detection.export.export_detector`,
:func:`facelab.train.landmarks.export.export_landmarks` and
:func:`facelab.train.detectors.retinaface_mnet.export_retinaface`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelab.errors import ModelError
from facelab.zoo._hub import sha256_file
from facelab.zoo.card import FileSpec

MIN_OPSET = 13
"""Lowest ONNX opset the exports accept."""


def check_opset(opset: int) -> None:
    """Raise :class:`~facelab.errors.ModelError` for an opset below :data:`MIN_OPSET`."""
    if opset < MIN_OPSET:
        raise ModelError(f"opset {opset} is below {MIN_OPSET}")


def check_licence(license: str) -> None:
    """Raise :class:`~facelab.errors.ModelError` when no licence is given for the exported weights."""
    if not license:
        raise ModelError("a licence for the exported weights is required")


def torch_to_onnx(
    model: torch.nn.Module,
    dummy: torch.Tensor,
    out: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    opset: int,
    dynamic_axes: dict[str, dict[int, str]],
    ignore: type[Warning] = Warning,
) -> None:
    """Trace ``model`` on ``dummy`` with the legacy TorchScript exporter (``dynamo=False``: no onnxscript needed).

    Args:
        model: module in eval mode.
        dummy: ``(N, 3, H, W)`` ``float32`` example input.
        out: the ``.onnx`` file to write.
        input_names: graph input names.
        output_names: graph output names.
        opset: ONNX opset (``opset_version`` of :func:`torch.onnx.export`).
        dynamic_axes: dynamic axis names per input / output, as :func:`torch.onnx.export`.
        ignore: warning category silenced while exporting (the legacy exporter announces its deprecation;
            the tracer warns about shape-dependent control flow).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ignore)
        torch.onnx.export(
            model,
            (dummy,),
            str(out),
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )


def graph_inputs(out: Path) -> tuple[Any, list[Any]]:
    """``(graph, inputs that are not initializers)`` of the ONNX file ``out``."""
    import onnx

    graph = onnx.load(str(out)).graph
    weights = {init.name for init in graph.initializer}
    return graph, [i for i in graph.input if i.name not in weights]


def is_one_4d_input(inputs: Sequence[Any]) -> bool:
    """Whether ``inputs`` (from :func:`graph_inputs`) is a single 4-D tensor."""
    return len(inputs) == 1 and len(inputs[0].type.tensor_type.shape.dim) == 4


def compare_with_onnxruntime(
    out: Path,
    forward: Callable[[torch.Tensor], Any],
    samples: Iterable[np.ndarray],
    *,
    input_name: str,
    atol: float,
    check_shapes: Callable[[np.ndarray, list[np.ndarray], list[np.ndarray]], None],
    session: Any = None,
    output_names: list[str] | None = None,
) -> float:
    """Largest |torch − ONNX Runtime| difference of the outputs over ``samples``; raise when above ``atol``.

    Args:
        out: the exported ``.onnx`` file.
        forward: the torch module (eval mode); a tensor or a list / tuple of tensors comes out.
        samples: ``float32`` network inputs, each run through torch (no grad) and ONNX Runtime.
        input_name: the graph's input name.
        atol: largest accepted difference.
        check_shapes: ``check_shapes(x, torch_outputs, ort_outputs)`` raises a
            :class:`~facelab.errors.ModelError` when the shapes are wrong; it runs before the differences.
        session: an ``onnxruntime.InferenceSession`` of ``out`` (a CPU one is made with
            :func:`facelab.runtime.session.create_session` when ``None``).
        output_names: outputs to fetch (all when ``None``); outputs are compared pairwise in order.

    Returns:
        The largest absolute difference.

    Raises:
        ModelError: wrong shapes (from ``check_shapes``) or a difference above ``atol``.
    """
    if session is None:
        from facelab.runtime.session import RuntimeOptions, create_session

        session = create_session(out, RuntimeOptions(providers="cpu")).session
    worst = 0.0
    for x in samples:
        with torch.no_grad():
            ref = forward(torch.from_numpy(x))
        ref = [t.numpy() for t in (ref if isinstance(ref, (list, tuple)) else [ref])]
        got = session.run(output_names, {input_name: x})
        check_shapes(x, ref, got)
        for r, g in zip(ref, got):
            worst = max(worst, float(np.abs(g - r).max()))
    if worst > atol:
        raise ModelError(f"{out}: ONNX Runtime differs from torch by {worst:.3g} > {atol}")
    return worst


def exported_file(out: Path) -> FileSpec:
    """The card's :class:`~facelab.zoo.card.FileSpec` of the exported file (name, SHA-256, size)."""
    return FileSpec(out.name, sha256_file(out), out.stat().st_size)
