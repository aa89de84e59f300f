"""Export a trained landmark model with the signature of InsightFace's ``2d106det`` and a model card.

The ONNX file has one input ``data`` ``(N, 3, S, S)`` (raw RGB ``0..255``, dynamic batch; the
graph normalises with ``(x − 127.5) / 128``, its first nodes named ``Sub…`` / ``Mul…`` as
InsightFace's ``Landmark`` class looks for) and one output ``fc1`` ``(N, 2K)`` of coordinates in
``[−1, 1]``. The card (task ``landmark_2d_<K>``, mean 0, std 1, ``crop_scale``) makes
:class:`facelab.alignment.landmarks.LandmarkRunner` — and ``FaceAnalyzer(folder)`` for 106, 68 and
98 points — use it. Acceptance checks as the recognition export: one 4-D input of the card's
size, one output of ``2K`` values, ONNX Runtime within ``atol`` of torch at batch 1 and 3.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelab.errors import ModelError
from facelab.train._onnx_export import (
    check_licence,
    check_opset,
    compare_with_onnxruntime,
    exported_file,
    graph_inputs,
    is_one_4d_input,
    torch_to_onnx,
)
from facelab.train.landmarks.engine import LandmarkExportForm, _load_model_pt, landmark_card
from facelab.train.landmarks.models import build_landmark_model
from facelab.zoo.card import ModelCard

__all__ = ["load_landmark_model", "export_landmarks"]

_logger = logging.getLogger(__name__)


def load_landmark_model(checkpoint: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(network in eval mode on CPU, checkpoint dict)`` from a landmark run's ``model.pt`` (or its folder)."""
    try:
        state = _load_model_pt(checkpoint)
    except Exception as exc:  # ConfigError for missing / foreign files
        raise ModelError(str(exc)) from exc
    net = build_landmark_model(state["model_name"], int(state["num_points"]), **state.get("model_kwargs", {}))
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ModelError(f"{checkpoint}: weights do not fit {state['model_name']}: {exc}") from exc
    return net.eval(), state


def _rename_normalisation_nodes(path: Path, width: int) -> None:
    """Name the leading Sub / Mul nodes ``Sub_normalize`` / ``Mul_normalize`` (InsightFace's test); fix fc1's width."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node[:8]:
        if node.op_type in ("Sub", "Mul") and not node.name.startswith(node.op_type):
            node.name = f"{node.op_type}_normalize"
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[1].ClearField("dim_param")
    dims[1].dim_value = int(width)  # InsightFace's Landmark reads the point count from it
    onnx.save(model, str(path))


def export_landmarks(
    checkpoint: str | Path,
    out: str | Path,
    *,
    license: str,
    name: str | None = None,
    train_data: str | None = None,
    opset: int = 17,
    atol: float = 1e-4,
) -> ModelCard:
    """Export, check and describe a landmark model trained by :func:`facelab.train.landmarks.engine.train_landmarks`.

    Args:
        checkpoint: the run's ``model.pt`` or its folder.
        out: the ``.onnx`` file to write; the card goes beside it with suffix ``.json``.
        license: licence of the weights (mandatory).
        name: card name (default ``"<model>_<K>.<file stem>"``).
        train_data: training data name (default: the config's ``train_data_name``).
        opset: ONNX opset (>= 13).
        atol: largest accepted |torch − ONNX Runtime| difference of the coordinates.

    Raises:
        ModelError: unusable checkpoint or a failed check.
    """
    check_opset(opset)
    check_licence(license)
    net, state = load_landmark_model(checkpoint)
    k, size = int(state["num_points"]), int(state.get("input_size", 192))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    form = LandmarkExportForm(net).eval()
    torch_to_onnx(
        form,
        torch.zeros(1, 3, size, size),
        out,
        input_names=["data"],
        output_names=["fc1"],
        opset=opset,
        dynamic_axes={"data": {0: "batch"}, "fc1": {0: "batch"}},
    )
    _rename_normalisation_nodes(out, 2 * k)
    graph, inputs = graph_inputs(out)
    if not is_one_4d_input(inputs) or len(graph.output) != 1:
        raise ModelError(f"{out}: expected one 4-D input and one output")

    def check_shapes(x: np.ndarray, ref: list[np.ndarray], got: list[np.ndarray]) -> None:
        if got[0].shape != (len(x), 2 * k):
            raise ModelError(f"{out}: output shape {got[0].shape}, expected {(len(x), 2 * k)}")

    rng = np.random.default_rng(0)
    samples = [rng.uniform(0, 255, (batch, 3, size, size)).astype(np.float32) for batch in (1, 3)]
    worst = compare_with_onnxruntime(out, form, samples, input_name="data", atol=atol, check_shapes=check_shapes)
    cfg = state.get("config", {})
    card = landmark_card(
        out,
        k,
        size,
        float(state.get("crop_scale", 1.5)),
        name=name or f"{state['model_name']}_{k}.{out.stem}",
        files=(exported_file(out),),
        license=license,
        source_url="",
        train_data=train_data if train_data is not None else str(cfg.get("train_data_name", "")),
        paper="InsightFace alignment/coordinate_reg (SimpleRegression)"
        if state["model_name"] == "coordreg"
        else "Stacked hourglass + soft-argmax",
        notes=(
            f"trained with facelab train landmarks ({state['model_name']}, {k} points) for "
            f"{state.get('step', '?')} steps; opset {opset}; max |torch-ORT| {worst:.2e}"
        ),
        metrics={key: dict(v) for key, v in state.get("metrics", {}).items()},
    )
    card.save(out.with_suffix(".json"))
    _logger.info("exported %s (%d points) with card %s; max |torch-ORT| %.2e", out, k, out.with_suffix(".json"), worst)
    return card
