"""``get_model``: load one ONNX file as InsightFace's ``model_zoo.get_model`` does, on facelab runners.

The file is identified as facelab identifies pack members (a card JSON beside it, a registered
SHA-256, else its input/output signature with InsightFace's routing rules:
:mod:`facelab.zoo._inspect`), so the model gets InsightFace's preprocessing, and is wrapped in
the matching class (:mod:`.scrfd`, :mod:`.arcface_onnx`, :mod:`.landmark`, :mod:`.attribute`, :mod:`.inswapper`).

Providers follow InsightFace: ``providers=None`` picks what the installed ONNX Runtime offers
(CUDA or CoreML, then CPU); an explicit list is used in order, with ``provider_options`` (a list
parallel to it, or a dict keyed by provider name). facelab's policy differs in one place: a
requested accelerator that ONNX Runtime does not grant logs a warning instead of falling back
silently (see :func:`facelab.runtime.session.create_session`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from facelab.compat.insightface.model_zoo._base import Model
from facelab.compat.insightface.model_zoo.arcface_onnx import ArcFaceONNX
from facelab.compat.insightface.model_zoo.attribute import Attribute
from facelab.compat.insightface.model_zoo.inswapper import INSwapper
from facelab.compat.insightface.model_zoo.landmark import Landmark
from facelab.compat.insightface.model_zoo.scrfd import SCRFD
from facelab.errors import ConfigError, ModelNotFoundError
from facelab.runtime.session import RuntimeOptions
from facelab.zoo.card import ModelCard

__all__ = ["get_model", "runtime_options", "check_kwargs", "model_class", "wrap_runner", "DEFAULT_ROOT", "MODEL_KWARGS"]

_logger = logging.getLogger(__name__)

#: InsightFace's storage root (``root=`` default).
DEFAULT_ROOT = "~/.insightface"

#: Keyword arguments ``get_model`` (and ``FaceAnalysis``) accept, as InsightFace's.
MODEL_KWARGS = ("root", "download", "download_zip", "providers", "provider_options", "sess_options")


def _provider_name(entry: Any) -> str:
    return str(entry[0]) if isinstance(entry, (list, tuple)) and entry else str(entry)


def runtime_options(
    providers: Sequence[Any] | str | None = None,
    provider_options: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None = None,
    sess_options: Any = None,
) -> RuntimeOptions:
    """Facelab :class:`~facelab.runtime.session.RuntimeOptions` for InsightFace's session arguments.

    Args:
        providers: ``None`` (what ONNX Runtime offers: CUDA or CoreML, then CPU), or a list of
            provider names / ``(name, options)`` pairs, in priority order.
        provider_options: options per provider: a list parallel to ``providers``, a dict keyed
            by provider name, or (one provider) that provider's options.
        sess_options: an ``onnxruntime.SessionOptions``; its thread counts are used (facelab
            makes its own session options otherwise).

    Raises:
        ConfigError: malformed providers or provider options.
    """
    if providers is None or (isinstance(providers, str) and providers.lower() == "auto"):
        wanted: Any = "auto"
        names: list[str] = []
    elif isinstance(providers, str):
        wanted, names = [providers], [providers]
    elif isinstance(providers, Sequence):
        wanted, names = list(providers), [_provider_name(p) for p in providers]
    else:
        raise ConfigError(f"providers must be a list of provider names, not {type(providers).__name__}")
    by_name: dict[str, dict[str, Any]] = {}
    if provider_options is not None:
        if isinstance(provider_options, Mapping):
            if provider_options and all(isinstance(v, Mapping) for v in provider_options.values()):
                by_name = {str(k): dict(v) for k, v in provider_options.items()}
            elif len(names) == 1:
                by_name = {names[0]: dict(provider_options)}
            else:
                raise ConfigError("provider_options given as a dict must be keyed by provider name")
        else:
            values = list(provider_options)
            if len(values) > len(names):
                raise ConfigError(
                    f"provider_options has {len(values)} entries but providers only {len(names)}: {names}"
                )
            by_name = {n: dict(v or {}) for n, v in zip(names, values)}
    threads: dict[str, int] = {}
    if sess_options is not None:
        for ours, theirs in (
            ("intra_op_threads", "intra_op_num_threads"),
            ("inter_op_threads", "inter_op_num_threads"),
        ):
            value = int(getattr(sess_options, theirs, 0) or 0)
            if value > 0:
                threads[ours] = value
        _logger.info("sess_options: only the thread counts are used (%s); facelab sets the other options", threads)
    return RuntimeOptions(providers=wanted, provider_options=by_name, **threads)


def check_kwargs(kwargs: Mapping[str, Any], where: str, allowed: Sequence[str] = MODEL_KWARGS) -> None:
    """Raise :class:`~facelab.errors.ConfigError` naming keyword arguments the compat layer does not take."""
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{where}: unsupported argument(s) {unknown}; facelab's InsightFace layer takes {list(allowed)}"
        )


#: Compat class per facelab task.
_CLASSES: dict[str, type[Model]] = {
    task: cls for cls in (SCRFD, ArcFaceONNX, Landmark, Attribute, INSwapper) for task in cls.tasks
}


def model_class(card: ModelCard) -> type[Model]:
    """The compat class for a card's task (landmark tasks other than the listed ones use :class:`Landmark`).

    Raises:
        ConfigError: a task InsightFace's API has no class for.
    """
    cls = _CLASSES.get(card.task) or (Landmark if card.task.startswith("landmark_") else None)
    if cls is None:
        raise ConfigError(f"{card.name}: no InsightFace-style model class for task {card.task!r}")
    return cls


def wrap_runner(card: ModelCard, path: str | Path, runtime: RuntimeOptions, runner: Any = None) -> Model:
    """The compat model object for ``card``: wraps ``runner``, or loads one from ``path``."""
    return model_class(card)(card, path, runtime, runner)


def _model_path(name: str, root: str | os.PathLike) -> Path:
    """The file ``get_model(name)`` loads: ``name`` itself, or the last ``.onnx`` of ``<root>/models/<name>/``."""
    if name.endswith(".onnx"):
        return Path(name).expanduser()
    folder = Path(root).expanduser() / "models" / name
    files = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
    if not files:
        raise ModelNotFoundError(
            f"get_model({name!r}): no .onnx file in {folder} (a name without .onnx means a model folder "
            f"under <root>/models/, as in InsightFace); pass the path of an .onnx file instead"
        )
    return files[-1]  # InsightFace takes the last file in name order


def get_model(name: str | os.PathLike, **kwargs: Any) -> Any:
    """Load one model as InsightFace's ``model_zoo.get_model`` does.

    Args:
        name: an ``.onnx`` file, or the name of a folder ``<root>/models/<name>/`` (its last
            ``.onnx`` file in name order is loaded, as InsightFace does).
        **kwargs: InsightFace's ``root`` (default ``~/.insightface``), ``download``,
            ``download_zip``, ``providers``, ``provider_options`` and ``sess_options``.

    Returns:
        A :class:`~facelab.compat.insightface.model_zoo.scrfd.SCRFD`, ``ArcFaceONNX``,
        ``Landmark``, ``Attribute`` or ``INSwapper`` object.

    Raises:
        ModelNotFoundError: the file does not exist (facelab downloads packs, not InsightFace's
            single model files such as ``inswapper_128.onnx``: put the file at the path given).
        ModelError: the file is not a usable ONNX model, or of a signature InsightFace's router
            would not recognise (where InsightFace returns ``None``).
        ConfigError: an unsupported keyword argument or malformed providers.

    Example:
        >>> detector = get_model("det_10g.onnx", providers=["CPUExecutionProvider"])  # doctest: +SKIP
        >>> detector.prepare(ctx_id=-1, input_size=(640, 640))  # doctest: +SKIP
        >>> bboxes, kpss = detector.detect(img)  # doctest: +SKIP
    """
    from facelab.zoo import identify_model

    check_kwargs(kwargs, "get_model")
    path = _model_path(str(name), kwargs.get("root") or DEFAULT_ROOT)
    if not path.is_file():
        hint = (
            " facelab does not download InsightFace's single model files (download=True has no source here):"
            if kwargs.get("download")
            else ""
        )
        raise ModelNotFoundError(f"model file not found: {path}.{hint} put the .onnx file at that path")
    runtime = runtime_options(kwargs.get("providers"), kwargs.get("provider_options"), kwargs.get("sess_options"))
    card = identify_model(path)
    return wrap_runner(card, path, runtime)
