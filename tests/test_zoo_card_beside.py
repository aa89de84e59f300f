"""A card JSON beside an ONNX file (as `facelab train export` writes it) is used for that file."""

import hashlib

import pytest

from cli_helpers import build_pack
from facelab.zoo import resolve_folder
from facelab.zoo.card import FileSpec, ModelCard


def _card_for(path, sha256: str) -> ModelCard:
    return ModelCard(
        name="iresnet_tiny.mytrain",
        task="recognition",
        arch="iresnet",
        files=(FileSpec(path.name, sha256, path.stat().st_size),),
        license="CC-BY-4.0",
        input_size=(112, 112),
        align_template="arcface_112_5pt",
        embedding_dim=512,
        train_data="my faces",
        extra={"threshold_cosine": 0.42},
    )


@pytest.fixture()
def pack(tmp_path):
    return build_pack(tmp_path / "pack")


def _recognizer_file(pack):
    resolved = resolve_folder(pack)
    return resolved.model("recognition")[1]


def test_matching_card_beside_the_file_is_used(pack):
    onnx_path = _recognizer_file(pack)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    _card_for(onnx_path, digest).save(onnx_path.with_suffix(".json"))
    card, path = resolve_folder(pack).model("recognition")
    assert path == onnx_path
    assert card.name == "iresnet_tiny.mytrain" and card.license == "CC-BY-4.0"
    assert card.extra["threshold_cosine"] == 0.42


def test_card_with_another_hash_is_ignored(pack):
    onnx_path = _recognizer_file(pack)
    before, _ = resolve_folder(pack).model("recognition")
    _card_for(onnx_path, "0" * 64).save(onnx_path.with_suffix(".json"))
    card, path = resolve_folder(pack).model("recognition")
    assert path == onnx_path and card.name != "iresnet_tiny.mytrain"
    assert card == before  # exactly the card the folder gave without the stale JSON
