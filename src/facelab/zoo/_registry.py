"""The pack and model-card registry: built-in cards from ``zoo/cards/*.json`` plus registered ones.

Model names are ``arch.tag`` strings (``"scrfd_10g.buffalo_l"``); the tag of an InsightFace card is
the pack it ships in. A bare arch name (``"scrfd_10g"``) resolves to its first tag, in pack
registration order: the built-in packs load in the order of :data:`BUILTIN_ORDER` (``buffalo_l``
first), so ``get_card("scrfd_10g")`` is buffalo_l's detector.

Other parts of facelab (and plugins) add packs with :func:`register_pack`; a pack or model name
that is already registered is an error.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import logging
import re
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

from facelab.errors import ConfigError, ModelNotFoundError
from facelab.zoo.card import ModelCard, PackCard, is_known_task

__all__ = [
    "ADDON_TASKS",
    "PACK_PROVIDERS",
    "pack_builder",
    "register_pack_builder",
    "BUILTIN_ORDER",
    "register_pack",
    "unregister_pack",
    "list_packs",
    "get_pack",
    "list_models",
    "get_card",
    "pack_of",
    "cards_by_sha256",
    "card_problems",
    "pack_problems",
]

_logger = logging.getLogger(__name__)

#: Built-in packs in the order their tags rank for bare-arch look-ups; other JSON files follow, sorted.
BUILTIN_ORDER = ("buffalo_l", "buffalo_m", "buffalo_s", "buffalo_sc", "antelopev2")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*\.[A-Za-z0-9_\-]+$")

#: Tasks whose models take a fixed-size crop, so their cards must state it (detectors and
#: shape-predictor style 5-point landmarkers need not).
_NEED_INPUT_SIZE = ("recognition", "landmark_2d_106", "landmark_3d_68", "genderage", "attribute", "swap", "liveness")

#: Tasks of add-on packs, used beside a main pack (``FaceAnalyzer(pack, modules=[..., "liveness"])``):
#: a pack whose members all have one of these tasks needs no detector.
ADDON_TASKS = ("liveness",)

_lock = threading.RLock()

#: Modules that register packs of their own; imported the first time the registry is used.
PACK_PROVIDERS = ("facelab.dlib.pack",)
_builders: dict[str, Callable[[Any], Any]] = {}
_packs: dict[str, PackCard] = {}
_models: dict[str, ModelCard] = {}
_model_pack: dict[str, str] = {}
_loaded = False


def card_problems(card: ModelCard) -> list[str]:
    """Check a model card against facelab's required-fields schema.

    Args:
        card: the card to check.

    Returns:
        Human-readable problems, empty when the card is complete: ``arch.tag`` name, known task,
        arch, licence, at least one file with a name, a 64-hex-digit SHA-256 or none, a positive
        size or none, ``RGB``/``BGR`` colour order, three-value mean/std with non-zero std,
        ``NCHW``/``NHWC`` layout, an input size for crop-based tasks (all but ``detection`` and
        ``landmark_5``), and an alignment template plus embedding size for recognisers.
    """
    where = f"model card {card.name!r}"
    problems: list[str] = []
    if not _NAME.match(card.name or ""):
        problems.append(f"{where}: name must look like 'arch.tag'")
    if not is_known_task(card.task):
        problems.append(f"{where}: unknown task {card.task!r}")
    if not card.arch:
        problems.append(f"{where}: arch is empty")
    if not card.license:
        problems.append(f"{where}: licence is empty")
    if not card.files:
        problems.append(f"{where}: no files")
    for spec in card.files:
        if not spec.filename or "/" in spec.filename or "\\" in spec.filename:
            problems.append(f"{where}: bad file name {spec.filename!r}")
        if spec.sha256 and not _SHA256.match(spec.sha256):
            problems.append(f"{where}: {spec.filename}: sha256 must be 64 lowercase hex digits")
        if spec.size_bytes is not None and (not isinstance(spec.size_bytes, int) or spec.size_bytes <= 0):
            problems.append(f"{where}: {spec.filename}: size_bytes must be a positive integer or null")
    if card.color_order not in ("RGB", "BGR"):
        problems.append(f"{where}: color_order must be RGB or BGR")
    if len(card.mean) != 3 or len(card.std) != 3:
        problems.append(f"{where}: mean and std need three values each")
    if any(s == 0 for s in card.std):
        problems.append(f"{where}: std must be non-zero")
    if card.layout not in ("NCHW", "NHWC"):
        problems.append(f"{where}: layout must be NCHW or NHWC")
    if card.task in _NEED_INPUT_SIZE and card.input_size is None:
        problems.append(f"{where}: input_size is required for task {card.task!r}")
    if card.input_size is not None and (len(card.input_size) != 2 or min(card.input_size) <= 0):
        problems.append(f"{where}: input_size must be (width, height) with positive values")
    if card.task == "recognition":
        if not card.align_template:
            problems.append(f"{where}: a recogniser needs align_template")
        if not card.embedding_dim:
            problems.append(f"{where}: a recogniser needs embedding_dim")
    return problems


def pack_problems(pack: PackCard) -> list[str]:
    """Check a pack card and its members against the schema (see :func:`card_problems`).

    A pack also needs a name, a licence, at least one member, exactly one member per file name
    and a detector (except an add-on pack, whose members all have a task of :data:`ADDON_TASKS`);
    an archive needs at least one URL. A pack without an archive fetches each member from its
    card's ``urls`` (``https://`` or ``file://``); a member without URLs must be
    put in place by hand (the not-found error says where).
    """
    where = f"pack {pack.name!r}"
    problems: list[str] = []
    if not pack.name or not re.match(r"^[A-Za-z0-9_\-]+$", pack.name):
        problems.append(f"{where}: name must be letters, digits, '_' or '-'")
    if not pack.license:
        problems.append(f"{where}: licence is empty")
    if not pack.models:
        problems.append(f"{where}: no member models")
    addon = bool(pack.models) and all(m.task in ADDON_TASKS for m in pack.models)
    if pack.model("detection") is None and not addon:
        problems.append(f"{where}: no detection model")
    seen: set[str] = set()
    for card in pack.models:
        problems.extend(card_problems(card))
        for spec in card.files:
            if spec.filename in seen:
                problems.append(f"{where}: file {spec.filename!r} appears twice")
            seen.add(spec.filename)
    if pack.archive is not None:
        if not pack.urls:
            problems.append(f"{where}: an archive needs at least one URL")
        if pack.archive.sha256 and not _SHA256.match(pack.archive.sha256):
            problems.append(f"{where}: archive sha256 must be 64 lowercase hex digits")
    return problems


def _add(pack: PackCard) -> None:
    problems = pack_problems(pack)
    if problems:
        raise ConfigError("invalid pack card: " + "; ".join(problems))
    if pack.name in _packs:
        raise ConfigError(f"pack {pack.name!r} is already registered")
    clashes = [m.name for m in pack.models if m.name in _models]
    if clashes:
        raise ConfigError(f"pack {pack.name!r}: model names already registered: {clashes}")
    _packs[pack.name] = pack
    for card in pack.models:
        _models[card.name] = card
        _model_pack[card.name] = pack.name


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        folder = resources.files("facelab.zoo").joinpath("cards")
        entries = {e.name[: -len(".json")]: e for e in folder.iterdir() if e.name.endswith(".json")}
        order = [n for n in BUILTIN_ORDER if n in entries] + sorted(n for n in entries if n not in BUILTIN_ORDER)
        for stem in order:
            data = json.loads(entries[stem].read_text(encoding="utf-8"))
            pack = PackCard.from_dict(data)
            if pack.name != stem:
                raise ConfigError(f"built-in card {stem}.json declares pack {pack.name!r}")
            _add(pack)
        _loaded = True
    # Outside the lock's first pass: providers call register_pack, which needs _loaded set.
    for module in PACK_PROVIDERS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def register_pack_builder(name: str, builder: Callable[[Any], Any]) -> None:
    """Declare that pack ``name`` is built locally rather than downloaded.

    ``builder(home)`` must build (or reuse) the pack's files under the facelab home without
    network access and return a :class:`facelab.zoo.ResolvedPack`; :func:`facelab.zoo.resolve_pack`
    calls it instead of looking for downloads.
    """
    _builders[name] = builder


def pack_builder(name: str) -> Callable[[Any], Any] | None:
    """The local builder registered for pack ``name``, or ``None``."""
    _ensure_loaded()
    return _builders.get(name)


def register_pack(card: PackCard) -> PackCard:
    """Register a model pack and its member cards.

    Args:
        card: the pack; it must pass :func:`pack_problems`.

    Returns:
        The card, so this works as a plain call or on a module-level constant.

    Raises:
        ConfigError: the card is incomplete, or the pack name or a member's model name is
            already registered.
    """
    _ensure_loaded()
    with _lock:
        _add(card)
    _logger.debug("registered pack %s (%d models)", card.name, len(card.models))
    return card


def unregister_pack(name: str) -> PackCard:
    """Remove a registered pack and its member cards (for tests and plugins that reload).

    Raises:
        ModelNotFoundError: no pack has that name.
    """
    _ensure_loaded()
    with _lock:
        pack = get_pack(name)
        del _packs[name]
        for card in pack.models:
            _models.pop(card.name, None)
            _model_pack.pop(card.name, None)
    return pack


def list_packs() -> list[str]:
    """Names of the registered packs, in registration order (built-ins first, buffalo_l first)."""
    _ensure_loaded()
    return list(_packs)


def get_pack(name: str) -> PackCard:
    """The pack card called ``name``.

    Raises:
        ModelNotFoundError: unknown pack; the message lists the known ones.
    """
    _ensure_loaded()
    try:
        return _packs[name]
    except KeyError:
        raise ModelNotFoundError(f"unknown model pack {name!r}; known packs: {list(_packs)}") from None


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered model cards matching a shell-style ``pattern``, sorted.

    Example:
        >>> "scrfd_10g.buffalo_l" in list_models("scrfd*")
        True
    """
    _ensure_loaded()
    return sorted(n for n in _models if fnmatch.fnmatchcase(n, pattern))


def get_card(name: str) -> ModelCard:
    """The model card called ``name`` (``arch.tag``), or the first tag of a bare arch name.

    Example:
        >>> get_card("scrfd_10g").name
        'scrfd_10g.buffalo_l'

    Raises:
        ModelNotFoundError: no card has that name or arch; the message suggests close names.
    """
    _ensure_loaded()
    card = _models.get(name)
    if card is not None:
        return card
    for full, card in _models.items():  # registration order = tag priority
        if full.rsplit(".", 1)[0] == name:
            return card
    close = sorted(n for n in _models if name.split(".")[0] in n)[:10]
    hint = f"; similar: {close}" if close else f"; known: {sorted(_models)}"
    raise ModelNotFoundError(f"unknown model {name!r}{hint}")


def pack_of(model_name: str) -> str:
    """Name of the pack a registered model card belongs to."""
    card = get_card(model_name)
    return _model_pack[card.name]


def cards_by_sha256(sha256: str) -> list[ModelCard]:
    """Registered model cards one of whose files has this SHA-256, in registration order."""
    _ensure_loaded()
    sha256 = sha256.lower()
    return [c for c in _models.values() if any(f.sha256 == sha256 for f in c.files)]
