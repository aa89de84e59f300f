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
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelab.errors import ModelError
from facelab.train.landmarks.engine import LandmarkExportForm, _load_model_pt, landmark_card
from facelab.train.landmarks.models import build_landmark_model
from facelab.zoo._hub import sha256_file
from facelab.zoo.card import FileSpec, ModelCard

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
    import onnx
    import onnxruntime as ort

    if opset < 13:
        raise ModelError(f"opset {opset} is below 13")
    if not license:
        raise ModelError("a licence for the exported weights is required")
    net, state = load_landmark_model(checkpoint)
    k, size = int(state["num_points"]), int(state.get("input_size", 192))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    form = LandmarkExportForm(net).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            form,
            (torch.zeros(1, 3, size, size),),
            str(out),
            input_names=["data"],
            output_names=["fc1"],
            opset_version=opset,
            dynamic_axes={"data": {0: "batch"}, "fc1": {0: "batch"}},
            dynamo=False,
        )
    _rename_normalisation_nodes(out, 2 * k)
    graph = onnx.load(str(out)).graph
    weights = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4 or len(graph.output) != 1:
        raise ModelError(f"{out}: expected one 4-D input and one output")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch in (1, 3):
        x = rng.uniform(0, 255, (batch, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            ref = form(torch.from_numpy(x)).numpy()
        got = session.run(None, {"data": x})[0]
        if got.shape != (batch, 2 * k):
            raise ModelError(f"{out}: output shape {got.shape}, expected {(batch, 2 * k)}")
        worst = max(worst, float(np.abs(got - ref).max()))
    if worst > atol:
        raise ModelError(f"{out}: ONNX Runtime differs from torch by {worst:.3g} > {atol}")
    cfg = state.get("config", {})
    card = landmark_card(
        out,
        k,
        size,
        float(state.get("crop_scale", 1.5)),
        name=name or f"{state['model_name']}_{k}.{out.stem}",
        files=(FileSpec(out.name, sha256_file(out), out.stat().st_size),),
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
