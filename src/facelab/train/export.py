"""Export a trained backbone to ONNX with a model card, after acceptance checks.

``export_onnx(checkpoint, out)`` reads ``model.pt`` (or a rank checkpoint) written by the engine,
exports the backbone with a dynamic batch axis (legacy TorchScript exporter, ``dynamo=False``, so
no onnxscript dependency), checks it with ONNX Runtime (one 4-D input, one output, batch 1 and a
larger batch, max abs difference to torch) and writes ``<out>.json`` — a
:class:`~facelab.zoo.card.ModelCard` whose preprocessing comes from
:data:`~facelab.ops.normalize.INSIGHTFACE_ARCFACE` and :data:`~facelab.alignment.templates.ARCFACE_112`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelab.alignment.templates import ARCFACE_112
from facelab.errors import ModelError
from facelab.ops.normalize import INSIGHTFACE_ARCFACE
from facelab.train._onnx_export import (
    check_licence,
    check_opset,
    compare_with_onnxruntime,
    exported_file,
    graph_inputs,
    is_one_4d_input,
    torch_to_onnx,
)
from facelab.train.backbones import create_backbone
from facelab.train.loop import read_model_pt
from facelab.zoo.card import ModelCard

__all__ = ["export_onnx", "load_backbone"]

_logger = logging.getLogger(__name__)


def load_backbone(checkpoint: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(backbone in eval mode on CPU, checkpoint dict)`` from a ``model.pt`` / rank checkpoint."""
    path, state = read_model_pt(checkpoint)
    if not isinstance(state, dict) or "backbone" not in state or "config" not in state:
        raise ModelError(f"{path} is not a facelab training checkpoint (no 'backbone'/'config')")
    cfg = state["config"]
    kwargs = dict(cfg.get("network_kwargs", {}))
    kwargs.setdefault("input_size", int(cfg.get("input_size", 112)))
    model = create_backbone(cfg["network"], num_features=cfg["embedding_size"], **kwargs)
    model.load_state_dict(state["backbone"])
    return model.eval(), state


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    license: str,
    name: str | None = None,
    train_data: str | None = None,
    opset: int = 17,
    atol: float = 1e-4,
) -> ModelCard:
    """Export, check and describe a trained backbone.

    Args:
        checkpoint: ``model.pt`` (or the run folder) written by :func:`facelab.train.engine.train`.
        out: the ``.onnx`` file to write; the card goes to the same path with suffix ``.json``.
        license: licence of the weights (mandatory in the card).
        name: card name (default ``"<network>.<file stem>"``).
        train_data: training data name (default: the config's ``train_data_name``).
        opset: ONNX opset (>= 13).
        atol: largest accepted |torch − ONNX Runtime| difference of the embeddings.

    Returns:
        The :class:`~facelab.zoo.card.ModelCard` written beside the model.

    Raises:
        ModelError: the checkpoint is unusable or the exported model fails a check.
    """
    check_opset(opset)
    check_licence(license)
    model, state = load_backbone(checkpoint)
    cfg = state["config"]
    size = int(cfg.get("input_size", 112))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch_to_onnx(
        model,
        torch.zeros(1, 3, size, size),
        out,
        input_names=["input.1"],
        output_names=["embedding"],
        opset=opset,
        dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}},
        ignore=DeprecationWarning,  # the legacy exporter announces its deprecation
    )
    graph, inputs = graph_inputs(out)
    if not is_one_4d_input(inputs):
        raise ModelError(f"{out}: expected one 4-D input, got {[i.name for i in inputs]}")
    if len(graph.output) != 1:
        raise ModelError(f"{out}: expected one output, got {len(graph.output)}")

    def check_shapes(x: np.ndarray, ref: list[np.ndarray], got: list[np.ndarray]) -> None:
        if got[0].shape != ref[0].shape:
            raise ModelError(f"{out}: batch {len(x)} gives shape {got[0].shape}, torch {ref[0].shape}")

    rng = np.random.default_rng(0)
    samples = [rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32) for batch in (1, 3)]
    worst = compare_with_onnxruntime(
        out, model, samples, input_name=inputs[0].name, atol=atol, check_shapes=check_shapes
    )
    verification = state.get("verification", {})
    card = ModelCard(
        name=name or f"{cfg['network']}.{out.stem}",
        task="recognition",
        arch=cfg["network"],
        files=(exported_file(out),),
        license=license,
        input_size=(size, size),
        color_order=INSIGHTFACE_ARCFACE.color_order,
        mean=INSIGHTFACE_ARCFACE.mean,
        std=INSIGHTFACE_ARCFACE.std,
        align_template=ARCFACE_112.name,
        embedding_dim=int(cfg["embedding_size"]),
        train_data=train_data if train_data is not None else cfg.get("train_data_name", ""),
        notes=(
            f"exported by facelab train export at step {state.get('step', '?')}; opset {opset}; "
            f"max |torch-ORT| {worst:.2e}"
        ),
        metrics={k: dict(v) for k, v in verification.items()},
    )
    card.save(out.with_suffix(".json"))
    _logger.info("exported %s (max diff %.2e) with card %s", out, worst, out.with_suffix(".json"))
    return card
