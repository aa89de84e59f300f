"""convert_cached: ONNX + card under FACELAB_HOME/converted, rebuilt only when the source or converter changes."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

import facelab.dlib.convert as convert
from facelab.convert.dlib_reader import bundled_model_path
from facelab.dlib.convert import convert_cached
from facelab.dlib.dnn import ConLayer, parse_dnn
from facelab.errors import ModelError, ModelNotFoundError
from facelab.zoo.card import ModelCard
from shared_data import missing_dependency, require_module


@pytest.fixture()
def detector_copy(tmp_path):
    require_module("onnx")
    try:
        src = bundled_model_path("mmod_human_face_detector.dat")
    except ModelNotFoundError as exc:
        missing_dependency(f"face-recognition-models is not installed: {exc}")
    dst = tmp_path / "src" / "mmod_human_face_detector.dat"
    dst.parent.mkdir()
    shutil.copyfile(src, dst)
    return dst


def test_first_call_converts_then_reuses(tmp_path, detector_copy):
    home = tmp_path / "home"
    onnx_path, card = convert_cached(detector_copy, home=home)
    assert onnx_path == home / "converted" / "mmod_human_face_detector.onnx"
    card_path = home / "converted" / "mmod_human_face_detector.json"
    assert onnx_path.is_file() and card_path.is_file()
    assert sorted(p.name for p in (home / "converted").iterdir()) == [card_path.name, onnx_path.name]  # no temp files
    assert card == ModelCard.load(card_path)
    assert card.license == "CC0-1.0" and card.task == "detection"
    assert card.extra["source_sha256"] == hashlib.sha256(detector_copy.read_bytes()).hexdigest()
    assert card.extra["converter_version"] == convert.CONVERTER_VERSION
    assert "face-recognition-models" in card.extra["source_package"]
    assert card.extra["detector_windows"] == [[80, 80, ""]]
    assert card.extra["output_to_input"] == {"scale": 8.0, "offset": 14.0}
    assert card.files[0].sha256 == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert card.files[0].size_bytes == onnx_path.stat().st_size

    before = (onnx_path.stat().st_mtime_ns, onnx_path.stat().st_ino, card_path.stat().st_mtime_ns)
    again_path, again_card = convert_cached(detector_copy, home=home)
    assert again_path == onnx_path and again_card == card
    assert (onnx_path.stat().st_mtime_ns, onnx_path.stat().st_ino, card_path.stat().st_mtime_ns) == before


def test_facelab_home_environment(tmp_path, detector_copy, monkeypatch):
    monkeypatch.setenv("FACELAB_HOME", str(tmp_path / "envhome"))
    onnx_path, _ = convert_cached(detector_copy)
    assert onnx_path.parent == tmp_path / "envhome" / "converted"


def test_changed_source_is_rebuilt(tmp_path, detector_copy):
    ort = require_module("onnxruntime")
    home = tmp_path / "home"
    onnx_path, card = convert_cached(detector_copy, home=home)
    old_onnx = onnx_path.read_bytes()
    # change one weight of the last convolution (raw float32 data near the end of the file)
    data = bytearray(detector_copy.read_bytes())
    network = parse_dnn(bytes(data), "copy")
    last = [layer for layer in network.layers if isinstance(layer, ConLayer)][-1]
    flat = last.weights.reshape(-1)
    for channel in range(flat.size // 81):  # the centre tap of every input channel of the 9x9 kernel
        needle = flat[channel * 81 + 38 : channel * 81 + 43].astype("<f4").tobytes()
        at = bytes(data).index(needle) + 8
        data[at : at + 4] = np.float32(50.0).astype("<f4").tobytes()
    detector_copy.write_bytes(bytes(data))
    new_path, new_card = convert_cached(detector_copy, home=home)
    assert new_path == onnx_path
    assert new_card.extra["source_sha256"] != card.extra["source_sha256"]
    assert onnx_path.read_bytes() != old_onnx
    # the rebuilt model really carries the new weight: its scores differ from the old model's
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    new_out = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    old_out = ort.InferenceSession(old_onnx, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert new_out.shape == old_out.shape and np.abs(new_out - old_out).max() > 1e-3


def test_converter_version_or_damaged_cache_rebuilds(tmp_path, detector_copy, monkeypatch):
    home = tmp_path / "home"
    onnx_path, card = convert_cached(detector_copy, home=home)
    card_path = onnx_path.with_suffix(".json")
    monkeypatch.setattr(convert, "CONVERTER_VERSION", "test-next")
    _, card2 = convert_cached(detector_copy, home=home)
    assert card2.extra["converter_version"] == "test-next"
    assert json.loads(card_path.read_text())["extra"]["converter_version"] == "test-next"
    # a truncated ONNX file (size differs from the card) is rebuilt
    onnx_path.write_bytes(onnx_path.read_bytes()[:1000])
    _, card3 = convert_cached(detector_copy, home=home)
    assert onnx_path.stat().st_size == card3.files[0].size_bytes > 1000
    # an unreadable card is rebuilt
    card_path.write_text("{not json")
    _, card4 = convert_cached(detector_copy, home=home)
    assert card4 == ModelCard.load(card_path)


def test_wrong_source_files(tmp_path):
    require_module("onnx")
    home = tmp_path / "home"
    try:
        sp = bundled_model_path("shape_predictor_5_face_landmarks.dat")
    except ModelNotFoundError as exc:
        missing_dependency(f"face-recognition-models is not installed: {exc}")
    with pytest.raises(ModelError, match="not a dlib DNN"):
        convert_cached(sp, home=home)
    with pytest.raises(ModelNotFoundError):
        convert_cached(tmp_path / "nothing.dat", home=home)
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x01\x01\x01\x0aloss_mmod_" + b"\x00" * 50)
    with pytest.raises(ModelError, match="junk.dat"):
        convert_cached(junk, home=home)
    converted = home / "converted"
    assert not converted.exists() or not any(converted.iterdir())
