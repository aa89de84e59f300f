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
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelab.alignment.templates import ARCFACE_112
from facelab.errors import ModelError
from facelab.ops.normalize import INSIGHTFACE_ARCFACE
from facelab.train.backbones import create_backbone
from facelab.zoo._hub import sha256_file
from facelab.zoo.card import FileSpec, ModelCard

__all__ = ["export_onnx", "load_backbone"]

_logger = logging.getLogger(__name__)


def load_backbone(checkpoint: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(backbone in eval mode on CPU, checkpoint dict)`` from a ``model.pt`` / rank checkpoint."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ModelError(f"checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "backbone" not in state or "config" not in state:
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
    import onnx
    import onnxruntime as ort

    if opset < 13:
        raise ModelError(f"opset {opset} is below 13")
    if not license:
        raise ModelError("a licence for the exported weights is required")
    model, state = load_backbone(checkpoint)
    cfg = state["config"]
    size = int(cfg.get("input_size", 112))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its deprecation
        torch.onnx.export(
            model,
            (dummy,),
            str(out),
            input_names=["input.1"],
            output_names=["embedding"],
            opset_version=opset,
            dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}},
            dynamo=False,
        )
    graph = onnx.load(str(out)).graph
    inputs = [i for i in graph.input if i.name not in {init.name for init in graph.initializer}]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise ModelError(f"{out}: expected one 4-D input, got {[i.name for i in inputs]}")
    if len(graph.output) != 1:
        raise ModelError(f"{out}: expected one output, got {len(graph.output)}")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch in (1, 3):
        x = rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {inputs[0].name: x})[0]
        if got.shape != ref.shape:
            raise ModelError(f"{out}: batch {batch} gives shape {got.shape}, torch {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    if worst > atol:
        raise ModelError(f"{out}: ONNX Runtime differs from torch by {worst:.3g} > {atol}")
    verification = state.get("verification", {})
    card = ModelCard(
        name=name or f"{cfg['network']}.{out.stem}",
        task="recognition",
        arch=cfg["network"],
        files=(FileSpec(out.name, sha256_file(out), out.stat().st_size),),
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
