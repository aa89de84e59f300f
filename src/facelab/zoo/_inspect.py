"""Identify an ONNX file that has no card: read its signature and classify it as InsightFace does.

Used only for user-supplied folders (``resolve_pack("/path/to/folder")``): files whose SHA-256
matches a registered card get that card; the rest are classified here by their input/output
signature with the rules of InsightFace's ``ModelRouter`` (plus YuNet and RetinaFace output
names), and their input normalisation is detected from the first graph nodes as InsightFace's
model classes do. The result is a :class:`~facelab.zoo.card.ModelCard` whose licence is
``"unknown (user-supplied)"``.

The graph is read with ``onnx`` (optional, imported lazily; weights are never loaded from
external data). Without ``onnx`` the signature comes from an ONNX Runtime session instead and
the normalisation cannot be detected from node names; the card's notes say so.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facelab.errors import ModelError
from facelab.runtime.session import TensorInfo
from facelab.zoo.card import FileSpec, ModelCard

__all__ = ["OnnxSignature", "read_signature", "classify_signature", "USER_LICENSE", "CLASSIFIERS"]

_logger = logging.getLogger(__name__)

#: Licence written on cards made for user-supplied files.
USER_LICENSE = "unknown (user-supplied)"


@dataclass(frozen=True)
class OnnxSignature:
    """What classification needs to know about an ONNX graph.

    Attributes:
        inputs: graph inputs that are not initializers, in order (``None`` = dynamic axis).
        outputs: graph outputs, in order.
        first_nodes: names of the first 8 graph nodes (empty when unknown).
        source: ``"onnx"`` (graph read with the onnx package) or ``"onnxruntime"`` (session metadata).
    """

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    first_nodes: tuple[str, ...] = ()
    source: str = "onnx"

    def describe(self) -> str:
        """``inputs [name (1, 3, ?, ?)], outputs [...]`` for error messages."""

        def fmt(items: tuple[TensorInfo, ...]) -> str:
            return ", ".join(f"{t.name} ({', '.join('?' if d is None else str(d) for d in t.shape)})" for t in items)

        return f"inputs [{fmt(self.inputs)}], outputs [{fmt(self.outputs)}]"

    def to_dict(self) -> dict[str, object]:
        """JSON-safe form (stored in a classified card's ``extra["signature"]``)."""
        return {
            "inputs": [{"name": t.name, "shape": list(t.shape)} for t in self.inputs],
            "outputs": [{"name": t.name, "shape": list(t.shape)} for t in self.outputs],
        }


def _dims(value_info: object) -> tuple[int | None, ...]:
    shape = value_info.type.tensor_type.shape  # type: ignore[attr-defined]
    return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim)


def _read_with_onnx(path: Path) -> OnnxSignature:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    graph = model.graph
    if not graph.node and not graph.output:
        raise ModelError(f"{path}: not an ONNX model (empty graph)")
    weights = {init.name for init in graph.initializer}
    inputs = tuple(
        TensorInfo(i.name, _dims(i), str(i.type.tensor_type.elem_type)) for i in graph.input if i.name not in weights
    )
    outputs = tuple(TensorInfo(o.name, _dims(o), str(o.type.tensor_type.elem_type)) for o in graph.output)
    return OnnxSignature(inputs, outputs, tuple(n.name for n in graph.node[:8]), "onnx")


def _read_with_onnxruntime(path: Path) -> OnnxSignature:
    from facelab.runtime.session import RuntimeOptions, create_session

    session = create_session(path, RuntimeOptions(providers=["cpu"], graph_optimization="disable"))
    return OnnxSignature(session.inputs, session.outputs, (), "onnxruntime")


def read_signature(path: str | os.PathLike) -> OnnxSignature:
    """Read the inputs, outputs and first node names of an ONNX file.

    Args:
        path: the ``.onnx`` file.

    Raises:
        ModelError: the file is missing or not a readable ONNX model.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        import onnx  # noqa: F401
    except ImportError:
        _logger.warning(
            "%s: the onnx package is not installed; reading the signature from an ONNX Runtime session "
            "(input normalisation cannot be detected from node names; install facelab[convert] for that)",
            path.name,
        )
        return _read_with_onnxruntime(path)
    return _read_with_onnx(path)


# ------------------------------------------------------------------------------------ classification


@dataclass(frozen=True)
class _Guess:
    task: str
    arch: str
    input_size: tuple[int, int] | None
    color_order: str
    mean: float | tuple[float, float, float]
    std: float | tuple[float, float, float]
    extra: dict
    notes: str = ""
    align_template: str | None = None
    embedding_dim: int | None = None


def _hw(sig: OnnxSignature) -> tuple[int | None, int | None]:
    shape = sig.inputs[0].shape if sig.inputs else ()
    if len(shape) != 4:
        return None, None
    return shape[2], shape[3]


def _graph_normalises(sig: OnnxSignature, allow_bn_data: bool) -> bool | None:
    """InsightFace's test: Sub/_minus and Mul/_mul among the first 8 nodes (or bn_data in the first 3)."""
    if sig.source != "onnx":
        return None
    names = sig.first_nodes
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    if allow_bn_data and "bn_data" in names[:3]:
        return True
    return has_sub and has_mul


def _norm(sig: OnnxSignature, allow_bn_data: bool, default_std: float) -> tuple[float, float, str]:
    inside = _graph_normalises(sig, allow_bn_data)
    if inside is None:
        return 127.5, default_std, "normalisation assumed (onnx not installed, node names unknown)"
    if inside:
        return 0.0, 1.0, "the graph normalises its input (mean 0, std 1)"
    return 127.5, default_std, f"input (x - 127.5) / {default_std:g}"


def _out_dim(sig: OnnxSignature) -> int | None:
    shape = sig.outputs[0].shape if sig.outputs else ()
    return shape[1] if len(shape) >= 2 else None


def _strides(names: list[str], prefix: str) -> list[int]:
    found = sorted({int(m.group(1)) for n in names if (m := re.match(rf"^{prefix}_(\d+)$", n))})
    return found


_DETECTOR_NOTES = {
    "yunet": "YuNet (recognised by its cls_/obj_/bbox_/kps_ outputs): BGR 0..255 input",
    "retinaface": "RetinaFace (recognised by its loc/conf/landms or MXNet outputs)",
    "scrfd": "SCRFD detector (6/9/10/15 score/box/keypoint outputs)",
}


def _detector(sig: OnnxSignature) -> _Guess | None:
    # The detection package owns the signature -> architecture rules (one place for both).
    from facelab.detection import classify_detector
    from facelab.detection.scrfd import SCRFD_LAYOUTS

    found = classify_detector(sig.outputs)
    if found is None:
        if len(sig.outputs) >= 5:  # InsightFace's router calls any >= 5-output model a detector
            raise _Unsupported(
                f"{len(sig.outputs)} outputs like a detector, but not an SCRFD (6/9/10/15 outputs), "
                "RetinaFace or YuNet signature"
            )
        return None
    arch, norm = found
    h, w = _hw(sig)
    size = (w, h) if h and w else None
    extra: dict = {"num_outputs": len(sig.outputs), "use_kps": True}
    if arch == "scrfd":
        strides, anchors, use_kps = SCRFD_LAYOUTS[len(sig.outputs)]
        extra.update({"strides": list(strides), "num_anchors": anchors, "use_kps": use_kps})
    elif arch == "yunet":
        extra["strides"] = _strides([o.name for o in sig.outputs], "cls")
    return _Guess("detection", arch, size, norm.color_order, norm.mean, norm.std, extra, _DETECTOR_NOTES[arch])


def _landmark(sig: OnnxSignature) -> _Guess | None:
    if _hw(sig) != (192, 192):
        return None
    dim = _out_dim(sig)
    mean, std, note = _norm(sig, allow_bn_data=True, default_std=128.0)
    if dim == 3309:
        return _Guess(
            "landmark_3d_68",
            "1k3d68",
            (192, 192),
            "RGB",
            mean,
            std,
            {"num_points": 68, "point_dim": 3, "output_dim": dim, "crop_scale": 1.5},
            note,
        )
    if dim == 212:
        return _Guess(
            "landmark_2d_106",
            "2d106det",
            (192, 192),
            "RGB",
            mean,
            std,
            {"num_points": 106, "point_dim": 2, "output_dim": dim, "crop_scale": 1.5},
            note,
        )
    raise _Unsupported(f"192x192 landmark-style input but {dim} outputs (facelab knows 3309 = 3D-68 and 212 = 2D-106)")


def _attribute(sig: OnnxSignature) -> _Guess | None:
    if _hw(sig) != (96, 96):
        return None
    dim = _out_dim(sig)
    mean, std, note = _norm(sig, allow_bn_data=True, default_std=128.0)
    task = "genderage" if dim == 3 else "attribute"
    return _Guess(task, task, (96, 96), "RGB", mean, std, {"output_dim": dim, "crop_scale": 1.5}, note)


def _swap(sig: OnnxSignature) -> _Guess | None:
    if len(sig.inputs) != 2 or _hw(sig) != (128, 128):
        return None
    return _Guess(
        "swap", "inswapper", (128, 128), "RGB", 0.0, 255.0, {}, "two-input 128x128 face swapper: input x / 255"
    )


def _recognition(sig: OnnxSignature) -> _Guess | None:
    h, w = _hw(sig)
    if h is None or h != w or h < 112 or h % 16:
        return None
    mean, std, note = _norm(sig, allow_bn_data=False, default_std=127.5)
    return _Guess(
        "recognition",
        "arcface",
        (w, h),
        "RGB",
        mean,
        std,
        {},
        note,
        align_template="arcface_112_5pt",
        embedding_dim=_out_dim(sig),
    )


class _Unsupported(Exception):
    """A rule matched the input but the rest of the signature is one facelab cannot use."""


#: Classification rules in the order they are tried (name, rule): detectors first (the
#: detection package's rules), then InsightFace's ModelRouter order: 192, 96, 2-input 128, square >= 112.
CLASSIFIERS: tuple[tuple[str, Callable[[OnnxSignature], _Guess | None]], ...] = (
    ("detector", _detector),
    ("landmark", _landmark),
    ("attribute", _attribute),
    ("swap", _swap),
    ("recognition", _recognition),
)


def _tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-]", "_", text) or "user"


def classify_signature(
    sig: OnnxSignature, path: str | os.PathLike, *, sha256: str = "", size: int | None = None, tag: str = "user"
) -> ModelCard:
    """Make a card for an ONNX file from its signature, with InsightFace's routing rules.

    Args:
        sig: from :func:`read_signature`.
        path: the file (its name goes into the card and error messages).
        sha256: the file's SHA-256, recorded in the card.
        size: the file's size in bytes, recorded in the card.
        tag: the card name's tag (usually the folder name): ``<file stem>.<tag>``.

    Returns:
        A card with task, arch, input size, colour order and mean/std as InsightFace would use
        them, licence :data:`USER_LICENSE`, and the signature under ``extra["signature"]``.

    Raises:
        ModelError: no rule matches; the message names the file and its signature.
    """
    path = Path(path)
    if not sig.inputs or not sig.outputs:
        raise ModelError(f"{path}: unrecognised model signature: {sig.describe()}")
    for rule_name, rule in CLASSIFIERS:
        try:
            guess = rule(sig)
        except _Unsupported as exc:
            raise ModelError(f"{path}: unsupported {rule_name} model: {exc}; signature: {sig.describe()}") from None
        if guess is None:
            continue
        extra = dict(guess.extra)
        extra["signature"] = sig.to_dict()
        notes = f"classified by its signature ({rule_name} rule; read with {sig.source}): {guess.notes}"
        return ModelCard(
            name=f"{_tag(path.stem)}.{_tag(tag)}",
            task=guess.task,
            arch=guess.arch,
            files=(FileSpec(path.name, sha256, size),),
            license=USER_LICENSE,
            input_size=guess.input_size,
            color_order=guess.color_order,
            mean=(guess.mean,) * 3 if isinstance(guess.mean, float) else guess.mean,
            std=(guess.std,) * 3 if isinstance(guess.std, float) else guess.std,
            align_template=guess.align_template,
            embedding_dim=guess.embedding_dim,
            source_url=path.resolve().as_uri(),
            notes=notes,
            extra=extra,
        )
    raise ModelError(f"{path}: unrecognised model signature: {sig.describe()}")
