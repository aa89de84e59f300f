"""The embedding contract of a recogniser: which vectors a collection may hold.

A contract pins the recogniser file (SHA-256), its preprocessing and the embedding dimension,
as InsightFace Server 0.2's ``embedding_contract_id`` does. Embeddings of another contract are
refused with a message naming both models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facelab.errors import ConfigError
from facelab.gallery.records import EmbeddingContract

__all__ = ["contract_of", "contract_of_card", "PREPROCESSING_TAG"]

#: Version of the preprocessing recipe string (bump when what it records changes).
PREPROCESSING_TAG = "facelab-pre-1"


def _preprocessing(card: Any) -> str:
    size = "dynamic" if card.input_size is None else f"{card.input_size[0]}x{card.input_size[1]}"
    mean = ",".join(f"{v:g}" for v in card.mean)
    std = ",".join(f"{v:g}" for v in card.std)
    parts = [
        PREPROCESSING_TAG,
        card.arch,
        card.align_template or "no-template",
        size,
        card.color_order,
        f"mean={mean}",
        f"std={std}",
        card.layout,
    ]
    extra = card.extra.get("preprocessing_version")
    if extra:
        parts.append(str(extra))
    return "/".join(parts)


def contract_of_card(card: Any, path: str | os.PathLike | None = None, home: str | os.PathLike | None = None):
    """The contract of a recogniser given its card (and file, when the card pins no SHA-256).

    Args:
        card: the recogniser's :class:`~facelab.zoo.card.ModelCard` (task ``"recognition"``).
        path: its model file, hashed (with facelab's hash cache) when the card has no SHA-256.
        home: model home holding the hash cache.

    Returns:
        :class:`~facelab.gallery.records.EmbeddingContract`.

    Raises:
        ConfigError: not a recogniser card, no embedding dimension, or no way to know the hash.
    """
    if card.task != "recognition":
        raise ConfigError(f"{card.name} is a {card.task!r} model, not a recogniser")
    if not card.embedding_dim:
        raise ConfigError(f"recogniser card {card.name} does not give its embedding dimension")
    digest = card.files[0].sha256 if card.files else ""
    if not digest:
        if path is None:
            raise ConfigError(f"recogniser card {card.name} pins no SHA-256 and no model file was given")
        from facelab.zoo._hub import cached_sha256

        digest = cached_sha256(Path(path), home)
    return EmbeddingContract(card.name, digest.lower(), _preprocessing(card), int(card.embedding_dim))


def contract_of(analyzer: Any) -> EmbeddingContract:
    """The embedding contract of a :class:`~facelab.pipeline.FaceAnalyzer`'s recogniser.

    Raises:
        ConfigError: the analyser has no recogniser.

    Example:
        >>> contract_of(FaceAnalyzer()).describe()       # doctest: +SKIP
        'dlib_resnet.open (128-d, sha256 028e19018491…, preprocessing facelab-pre-1/dlib_resnet/...)'
    """
    card = getattr(analyzer, "cards", {}).get("recognition")
    if card is None or getattr(analyzer, "recognizer", None) is None:
        raise ConfigError(f"pack {getattr(analyzer, 'pack_name', '?')!r} has no recognition model; a gallery needs one")
    cached = getattr(analyzer, "_facelab_contract", None)
    if cached is not None:
        return cached
    contract = contract_of_card(card, getattr(analyzer, "paths", {}).get("recognition"))
    try:
        analyzer._facelab_contract = contract  # hashing a file once per analyser is enough
    except AttributeError:  # pragma: no cover - an analyser with __slots__
        pass
    return contract
