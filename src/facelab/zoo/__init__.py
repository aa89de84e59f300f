"""The model zoo: pack and model cards, downloads, and resolution of packs and model folders.

Cards for the InsightFace packs (``buffalo_l``, ``buffalo_m``, ``buffalo_s``, ``buffalo_sc``,
``antelopev2``) ship as JSON in ``facelab/zoo/cards/``; other packs join with
:func:`register_pack`. :func:`resolve_pack` turns a pack name or a folder of ONNX files into
``(card, path)`` pairs, downloading into ``$FACELAB_HOME/models/<pack>/`` when allowed.

Example:
    >>> from facelab.zoo import get_card, list_packs
    >>> list_packs()[0]
    'buffalo_l'
    >>> get_card("arcface_r50").embedding_dim
    512
"""

from __future__ import annotations

from facelab.zoo._hub import facelab_home, insightface_home, is_offline, models_dir
from facelab.zoo._registry import (
    card_problems,
    cards_by_sha256,
    get_card,
    get_pack,
    list_models,
    list_packs,
    pack_builder,
    pack_problems,
    register_pack,
    register_pack_builder,
    unregister_pack,
)
from facelab.zoo._resolve import (
    PackReport,
    ResolvedPack,
    download_pack,
    identify_model,
    install_pack,
    pack_info,
    resolve_folder,
    resolve_pack,
    verify_pack,
)
from facelab.zoo.card import FileSpec, ModelCard, PackCard

__all__ = [
    "FileSpec",
    "ModelCard",
    "PackCard",
    "PackReport",
    "ResolvedPack",
    "card_problems",
    "cards_by_sha256",
    "download_pack",
    "facelab_home",
    "get_card",
    "get_pack",
    "identify_model",
    "insightface_home",
    "install_pack",
    "is_offline",
    "list_models",
    "list_packs",
    "pack_builder",
    "register_pack_builder",
    "models_dir",
    "pack_info",
    "pack_problems",
    "register_pack",
    "resolve_folder",
    "resolve_pack",
    "unregister_pack",
    "verify_pack",
]
