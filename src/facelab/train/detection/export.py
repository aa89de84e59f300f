"""Export a trained detector to ONNX with InsightFace's signatures and a model card, after acceptance checks.

* SCRFD → input ``input.1`` ``(1, 3, H, W)`` (dynamic H, W; batch fixed at 1 as InsightFace's
  files), outputs ``score_8, score_16, score_32, bbox_8, …, kps_8, …`` of shape ``(rows, C)``
  (sigmoid scores, distances and keypoint offsets in units of the stride) — the layout of the
  packaged ``det_*.onnx`` files, read by :class:`facelab.detection.SCRFD`.
* RetinaFace → input ``input`` ``(N, 3, H, W)`` (dynamic), outputs ``loc (N, P, 4)``,
  ``conf (N, P, 2)`` (softmaxed), ``landms (N, P, 10)`` and the prior configuration in the ONNX
  metadata — the biubug6 layout read by :class:`facelab.detection.RetinaFace` (the same as
  :func:`facelab.train.detectors.retinaface_mnet.export_retinaface`).

Acceptance checks, as for the recognition export (:func:`facelab.train.export.export_onnx`):
the graph has one 4-D input and the expected outputs, :func:`facelab.detection.classify_detector`
recognises the file as the right architecture, and ONNX Runtime's outputs equal torch's within
``atol`` at two input sizes. The card (``<out>.json``) carries the normalisation, the prior or
anchor settings, the licence, the training data and the metrics of the last evaluation;
``FaceAnalyzer(folder)`` and :func:`facelab.detection.create_detector` read it.
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
from facelab.train.detection.variants import DetectorModel, export_signature, get_variant
from facelab.train.loop import read_model_pt
from facelab.zoo.card import ModelCard

__all__ = ["load_detector", "export_detector"]

_logger = logging.getLogger(__name__)


def load_detector(checkpoint: str | Path) -> tuple[DetectorModel, dict[str, Any]]:
    """``(model in eval mode on CPU, checkpoint dict)`` from a detection run's ``model.pt`` (or its folder).

    Raises:
        ModelError: missing file or not a facelab detection checkpoint.
    """
    path, state = read_model_pt(checkpoint)
    if not isinstance(state, dict) or state.get("kind") != "detection" or "variant" not in state:
        raise ModelError(f"{path} is not a facelab detection checkpoint (written by facelab train detect)")
    model = DetectorModel(get_variant(state["variant"]), float(state.get("width", 1.0)))
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit {state['variant']}: {exc}") from exc
    return model.eval(), state


def _set_output_widths(path: Path, widths: list[int | None]) -> None:
    """Write the known last axis (1, 4, 10 / 4, 2, 10) into the graph outputs, as InsightFace's files have it."""
    import onnx

    model = onnx.load(str(path))
    for output, width in zip(model.graph.output, widths):
        dims = output.type.tensor_type.shape.dim
        if width is not None and dims:
            dims[len(dims) - 1].ClearField("dim_param")
            dims[len(dims) - 1].dim_value = int(width)
    onnx.save(model, str(path))


def _check(out: Path, model: DetectorModel, atol: float) -> float:
    from facelab.detection import classify_detector
    from facelab.runtime.session import RuntimeOptions, create_session

    inputs, outputs = export_signature(model.variant)
    graph, graph_in = graph_inputs(out)
    if not is_one_4d_input(graph_in):
        raise ModelError(f"{out}: expected one 4-D input, got {[i.name for i in graph_in]}")
    if [o.name for o in graph.output] != [o.name for o in outputs]:
        raise ModelError(f"{out}: outputs {[o.name for o in graph.output]}, expected {[o.name for o in outputs]}")
    session = create_session(out, RuntimeOptions(providers="cpu"))
    found = classify_detector(session.outputs)
    if found is None or found[0] != model.variant.family:
        raise ModelError(
            f"{out}: facelab classifies this signature as {found and found[0]}, not {model.variant.family}"
        )
    rng = np.random.default_rng(0)
    shapes = (
        [(1, 3, 320, 320), (1, 3, 192, 256)]
        if model.variant.family == "scrfd"
        else [(1, 3, 320, 320), (2, 3, 192, 256)]
    )
    scale = 128.0 if model.variant.family == "retinaface" else 1.0
    samples = [rng.uniform(-1.0, 1.0, shape).astype(np.float32) * scale for shape in shapes]
    return compare_with_onnxruntime(
        out,
        model.export_form().eval(),
        samples,
        input_name=inputs[0].name,
        atol=atol,
        check_shapes=lambda x, ref, got: _check_output_shapes(out, outputs, ref, got),
        session=session.session,
    )


def _check_output_shapes(out: Path, outputs: Any, ref: list[np.ndarray], got: list[np.ndarray]) -> None:
    for info, r, g in zip(outputs, ref, got):
        if r.shape != g.shape:
            raise ModelError(f"{out}: {info.name} has shape {g.shape} in ONNX Runtime, {r.shape} in torch")


def export_detector(
    checkpoint: str | Path,
    out: str | Path,
    *,
    license: str,
    name: str | None = None,
    train_data: str | None = None,
    opset: int = 17,
    atol: float = 1e-4,
) -> ModelCard:
    """Export, check and describe a detector trained by :func:`facelab.train.detection.engine.train_detector`.

    Args:
        checkpoint: the run's ``model.pt`` or its folder.
        out: the ``.onnx`` file to write; the card goes beside it with suffix ``.json``.
        license: licence of the weights (mandatory in the card).
        name: card name (default ``"<variant>.<file stem>"``).
        train_data: training data name (default: the config's ``train_data_name``).
        opset: ONNX opset (>= 13).
        atol: largest accepted |torch − ONNX Runtime| difference of any output.

    Returns:
        The :class:`~facelab.zoo.card.ModelCard` written beside the model.

    Raises:
        ModelError: unusable checkpoint or a failed check.
    """
    check_opset(opset)
    check_licence(license)
    model, state = load_detector(checkpoint)
    variant = model.variant
    cfg = state.get("config", {})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs, outputs = export_signature(variant)
    names = [o.name for o in outputs]
    in_name = inputs[0].name
    if variant.family == "scrfd":
        dynamic = {in_name: {2: "height", 3: "width"}, **{n: {0: "rows"} for n in names}}
    else:
        dynamic = {in_name: {0: "batch", 2: "height", 3: "width"}, **{n: {0: "batch", 1: "priors"} for n in names}}
    torch_to_onnx(
        model.export_form().eval(),
        torch.zeros(1, 3, 320, 320),
        out,
        input_names=[in_name],
        output_names=names,
        opset=opset,
        dynamic_axes=dynamic,
    )
    _set_output_widths(out, [o.shape[-1] for o in outputs])
    extra: dict[str, Any] = {"variant": variant.name, "det_size": [int(cfg.get("eval_size", 640))] * 2}
    if variant.family == "retinaface":
        from facelab.train.detectors.retinaface_mnet import VARIANCES, _write_prior_metadata

        _write_prior_metadata(out, variant)  # type: ignore[arg-type]
        extra.update(
            {
                "layout": "priorbox",
                "min_sizes": [list(s) for s in variant.min_sizes],
                "steps": list(variant.steps),
                "variances": list(VARIANCES),
            }
        )
    else:
        extra.update(
            {"strides": list(variant.strides), "num_anchors": 2, "use_kps": variant.use_kps, "num_outputs": len(names)}
        )
    worst = _check(out, model, atol)
    norm = variant.normalization
    card = ModelCard(
        name=name or f"{variant.name}.{out.stem}",
        task="detection",
        arch=variant.family,
        files=(exported_file(out),),
        license=license,
        input_size=None,
        color_order=norm.color_order,
        mean=tuple(norm.mean),
        std=tuple(norm.std),
        source_url=variant.source,
        paper=(
            "SCRFD: Sample and Computation Redistribution for Efficient Face Detection (arXiv:2105.04714)"
            if variant.family == "scrfd"
            else "RetinaFace: Single-stage Dense Face Localisation in the Wild (arXiv:1905.00641)"
        ),
        train_data=train_data if train_data is not None else str(cfg.get("train_data_name", "")),
        notes=(
            f"trained with facelab train detect ({variant.name}, width {model.width:g}) "
            f"for {state.get('step', '?')} steps; "
            f"exported with opset {opset}; max |torch-ORT| {worst:.2e}"
        ),
        metrics={k: dict(v) for k, v in state.get("metrics", {}).items()},
        extra=extra,
    )
    card.save(out.with_suffix(".json"))
    _logger.info(
        "exported %s (%s) with card %s; max |torch-ORT| %.2e", out, variant.name, out.with_suffix(".json"), worst
    )
    return card
