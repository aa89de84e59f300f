"""The built-in pack cards and the registry API."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import pytest

from facelab.errors import ConfigError, ModelNotFoundError
from facelab.zoo import (
    FileSpec,
    ModelCard,
    PackCard,
    card_problems,
    cards_by_sha256,
    get_card,
    get_pack,
    list_models,
    list_packs,
    pack_info,
    pack_problems,
    register_pack,
    unregister_pack,
)

PACKS = ["buffalo_l", "buffalo_m", "buffalo_s", "buffalo_sc", "antelopev2"]
LICENSE = "non-commercial research only (InsightFace)"

# Pins from the InsightFace research notes (server package table + public LFS pointers), typed in here.
ARCHIVES = {
    "buffalo_l": "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f",
    "buffalo_m": "d98264bd8f2dc75cbc2ddce2a14e636e02bb857b3051c234b737bf3b614edca9",
    "buffalo_s": "",
    "buffalo_sc": "57d31b56b6ffa911c8a73cfc1707c73cab76efe7f13b675a05223bf42de47c72",
    "antelopev2": "8e182f14fc6e80b3bfa375b33eb6cff7ee05d8ef7633e738d1c89021dcf0c5c5",
}
FILES = {
    "det_10g.onnx": ("5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91", 16923827),
    "scrfd_10g_bnkps.onnx": ("5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91", 16923827),
    "det_2.5g.onnx": ("041f73f47371333d1d17a6fee6c8ab4e6aecabefe398ff32cca4e2d5eaee0af9", 3292009),
    "det_500m.onnx": ("5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a", 2524817),
    "w600k_r50.onnx": ("4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43", 174383860),
    "w600k_mbf.onnx": ("9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f", 13616099),
    "glintr100.onnx": ("4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf", 260665334),
    "1k3d68.onnx": ("df5c06b8a0c12e422b2ed8947b8869faa4105387f199c477af038aa01f9a45cc", 143607619),
    "2d106det.onnx": ("f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf", 5030888),
    "genderage.onnx": ("4fde69b1c810857b88c64a335084f1c3fe8f01246c9a191b48c7bb756d6652fb", 1322532),
}
MEMBERS = {
    "buffalo_l": {"det_10g.onnx", "w600k_r50.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx"},
    "buffalo_m": {"det_2.5g.onnx", "w600k_r50.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx"},
    "buffalo_s": {"det_500m.onnx", "w600k_mbf.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx"},
    "buffalo_sc": {"det_500m.onnx", "w600k_mbf.onnx"},
    "antelopev2": {"scrfd_10g_bnkps.onnx", "glintr100.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx"},
}
REQUIRED_MODEL_KEYS = {
    "name",
    "task",
    "arch",
    "files",
    "license",
    "input_size",
    "color_order",
    "mean",
    "std",
    "align_template",
    "embedding_dim",
    "source_url",
}


def test_builtin_packs_listed_in_order():
    assert list_packs()[:5] == PACKS


@pytest.mark.parametrize("name", PACKS)
def test_card_json_has_required_fields_and_pins(name):
    raw = json.loads(resources.files("facelab.zoo").joinpath("cards", f"{name}.json").read_text())
    assert raw["name"] == name and raw["license"] == LICENSE
    assert raw["urls"] == [f"https://github.com/deepinsight/insightface/releases/download/v0.7/{name}.zip"]
    assert raw["archive"]["sha256"] == ARCHIVES[name]
    for model in raw["models"]:
        assert REQUIRED_MODEL_KEYS <= set(model), model["name"]
        assert model["license"] == LICENSE and model["source_url"]
        assert model["color_order"] == "RGB" and len(model["mean"]) == 3 and len(model["std"]) == 3
        for f in model["files"]:
            assert (f["sha256"], f["size_bytes"]) == FILES[f["filename"]]
    assert {f["filename"] for m in raw["models"] for f in m["files"]} == MEMBERS[name]
    pack = get_pack(name)
    assert pack_problems(pack) == []
    assert pack.models[0].task == "detection"
    assert PackCard.from_dict(pack.to_dict()) == pack


@pytest.mark.parametrize("name", PACKS)
def test_preprocessing_matches_insightface(name):
    pack = get_pack(name)
    det = pack.model("detection")
    assert (det.arch, det.mean, det.std, det.input_size) == ("scrfd", (127.5,) * 3, (128.0,) * 3, None)
    assert det.extra["strides"] == [8, 16, 32] and det.extra["num_anchors"] == 2
    rec = pack.model("recognition")
    assert (rec.input_size, rec.mean, rec.std) == ((112, 112), (127.5,) * 3, (127.5,) * 3)
    assert (rec.align_template, rec.embedding_dim) == ("arcface_112_5pt", 512)
    for task, size in (("landmark_2d_106", (192, 192)), ("landmark_3d_68", (192, 192)), ("genderage", (96, 96))):
        card = pack.model(task)
        if name == "buffalo_sc":
            assert card is None
            continue
        assert card.input_size == size and card.mean == (0.0,) * 3 and card.std == (1.0,) * 3


def test_list_models_and_get_card():
    assert list_models("scrfd*") == sorted(
        [
            "scrfd_10g.buffalo_l",
            "scrfd_10g.antelopev2",
            "scrfd_2.5g.buffalo_m",
            "scrfd_500m.buffalo_s",
            "scrfd_500m.buffalo_sc",
        ]
    )
    # Other packs (dlib's ``open`` pack) register on import, so count only the five InsightFace packs' models.
    insightface_tags = {"buffalo_l", "buffalo_m", "buffalo_s", "buffalo_sc", "antelopev2"}
    assert len([m for m in list_models() if m.rsplit(".", 1)[1] in insightface_tags]) == 5 + 5 + 5 + 2 + 5
    assert get_card("arcface_r100.antelopev2").files[0].filename == "glintr100.onnx"
    assert get_card("scrfd_10g").name == "scrfd_10g.buffalo_l"  # bare arch -> first tag
    assert get_card("scrfd_2.5g").name == "scrfd_2.5g.buffalo_m"
    assert get_card("arcface_mbf").name == "arcface_mbf.buffalo_s"
    with pytest.raises(ModelNotFoundError, match="scrfd_10g"):
        get_card("scrfd_10")
    with pytest.raises(ModelNotFoundError, match="buffalo_l"):
        get_pack("buffalo_xl")


def test_pack_info_of_builtin_pack(tmp_path):
    info = pack_info("buffalo_l", home=tmp_path / "h", insightface_root=tmp_path / "i")
    assert info["total_bytes"] == 341_268_726  # sum of the five pinned member sizes
    assert info["installed"]["location"] == "none" and info["installed"]["complete"] is False
    assert info["tasks"] == ["detection", "recognition", "landmark_2d_106", "landmark_3d_68", "genderage"]
    json.dumps(info)


def test_cards_by_sha256_finds_shared_detector():
    names = [c.name for c in cards_by_sha256(FILES["det_10g.onnx"][0])]
    assert names == ["scrfd_10g.buffalo_l", "scrfd_10g.antelopev2"]


def _tiny_pack(name: str, model_name: str = "x_det") -> PackCard:
    det = ModelCard(
        name=f"{model_name}.{name}",
        task="detection",
        arch="scrfd",
        license="MIT",
        files=(FileSpec("d.onnx", "a" * 64, 10),),
        urls=("http://127.0.0.1:9/d.onnx",),
    )
    return PackCard(name=name, models=(det,), license="MIT")


def test_register_pack_and_duplicates():
    pack = register_pack(_tiny_pack("unit_pack_a"))
    try:
        assert "unit_pack_a" in list_packs() and get_card("x_det").name == "x_det.unit_pack_a"
        with pytest.raises(ConfigError, match="already registered"):
            register_pack(_tiny_pack("unit_pack_a", "other"))
        assert "other.unit_pack_a" not in list_models()
    finally:
        unregister_pack(pack.name)
    assert "unit_pack_a" not in list_packs() and list_models("x_det*") == []


def test_duplicate_model_name_across_packs():
    first = _tiny_pack("unit_pack_c")
    clash = PackCard(name="unit_pack_d", models=first.models, license="MIT")
    register_pack(first)
    try:
        with pytest.raises(ConfigError, match="x_det.unit_pack_c"):
            register_pack(clash)
        assert "unit_pack_d" not in list_packs()
    finally:
        unregister_pack("unit_pack_c")


def test_schema_rejects_incomplete_cards():
    rec = ModelCard(name="norec", task="recognition", arch="", license="x", files=(FileSpec("r.onnx", "XYZ", 0),))
    problems = " | ".join(card_problems(rec))
    for text in (
        "arch.tag",
        "arch is empty",
        "64 lowercase hex",
        "size_bytes",
        "input_size",
        "align_template",
        "embedding_dim",
    ):
        assert text in problems
    no_det = PackCard(name="bad pack", models=(rec,), license="x", archive=FileSpec("a.zip"))
    problems = " | ".join(pack_problems(no_det))
    assert "no detection model" in problems and "needs at least one URL" in problems and "letters" in problems
    with pytest.raises(ConfigError, match="no detection model"):
        register_pack(no_det)


def test_import_is_light():
    code = (
        "import sys, facelab.zoo as z; z.list_packs(); z.get_card('scrfd_10g'); "
        "print(any(m in sys.modules for m in ('onnx', 'onnxruntime', 'torch', 'requests')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_local_file_card_defaults_and_overrides(tmp_path):
    from facelab.zoo.card import ModelCard

    card = ModelCard.for_local_file(tmp_path / "w600k_r50.onnx", task="recognition", arch="arcface")
    assert card.name == "w600k_r50.local"
    assert [f.filename for f in card.files] == ["w600k_r50.onnx"]
    assert card.source_url == str(tmp_path / "w600k_r50.onnx")
    assert "user-supplied" in card.license
    named = ModelCard.for_local_file("m.onnx", task="swap", arch="inswapper", name="mine", license="MIT")
    assert (named.name, named.license) == ("mine", "MIT")
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        ModelCard.for_local_file("m.onnx", task="nope", arch="x")
