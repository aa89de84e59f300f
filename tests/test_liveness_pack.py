"""The ``liveness`` pack end to end: download from a real local HTTP server (resume, verify), conversion
without torch, ``FaceAnalyzer(modules=[..., "liveness"])`` and ``facelab analyze --liveness``.

The server serves the real checkpoints from ``../shared``; the registered pack card is used with
only its URLs pointed at the server (same file names, sizes and pinned SHA-256). The main pack is a
folder with InsightFace's SCRFD-500M (``cli_helpers.build_pack``).
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from cli_helpers import build_pack, run_main
from shared_data import require_module, shared_file
from test_zoo_download import Server

require_module("onnxruntime")
require_module("onnx")

from facelab.errors import ChecksumError, ConfigError, ModelNotFoundError  # noqa: E402
from facelab.liveness import LivenessResult, load_liveness  # noqa: E402
from facelab.pipeline import FaceAnalyzer  # noqa: E402
from facelab.zoo import get_pack, register_pack, unregister_pack, verify_pack  # noqa: E402

SAMPLES = "models/silentface/samples"
OFFICIAL_PINS = {
    "2.7_80x80_MiniFASNetV2.pth": "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
    "4_0_0_80x80_MiniFASNetV1SE.pth": "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
}


@pytest.fixture
def server():
    s = Server()
    for name in OFFICIAL_PINS:
        s.files[f"/anti_spoof_models/{name}"] = shared_file(f"models/silentface/{name}").read_bytes()
    yield s
    s.close()


@pytest.fixture
def served(server):
    """The registered ``liveness`` pack, its members' URLs pointed at ``server`` for the test."""
    original = unregister_pack("liveness")
    models = tuple(
        dataclasses.replace(card, urls=(f"{server.url}/anti_spoof_models/{card.files[0].filename}",))
        for card in original.models
    )
    register_pack(dataclasses.replace(original, models=models))
    yield server
    unregister_pack("liveness")
    register_pack(original)


@pytest.fixture
def main_pack(tmp_path):
    return build_pack(tmp_path / "scrfd_pack", recognizer=False)


def test_registered_card_pins_the_official_files():
    pack = get_pack("liveness")
    assert {c.files[0].filename: c.files[0].sha256 for c in pack.models} == OFFICIAL_PINS
    for card in pack.models:
        assert card.license.startswith("Apache-2.0") and card.task == "liveness"
        assert card.urls[0] == (
            "https://github.com/minivision-ai/Silent-Face-Anti-Spoofing/raw/master/resources/anti_spoof_models/"
            + card.files[0].filename
        )
        assert (card.input_size, card.color_order, card.mean, card.std) == ((80, 80), "BGR", (0.0,) * 3, (1.0,) * 3)
    assert {c.arch: c.extra["crop_scale"] for c in pack.models} == {"minifasnet_v2": 2.7, "minifasnet_v1se": 4.0}


def test_download_resume_convert_and_analyze(served, home, main_pack, monkeypatch):
    v2 = "/anti_spoof_models/2.7_80x80_MiniFASNetV2.pth"
    served.truncate_once.add(v2)  # the first transfer breaks half-way: the second resumes with Range
    analyzer = FaceAnalyzer(main_pack, modules=["liveness"], home=home)
    ranged = [headers for path, headers in served.requests if path == v2 and "range" in headers]
    assert ranged and ranged[0]["range"].startswith("bytes=") and ranged[0]["range"] != "bytes=0-"
    assert sorted(p.name for p in (home / "models" / "liveness").iterdir()) == sorted(OFFICIAL_PINS)
    converted = sorted(p.name for p in (home / "converted").iterdir())
    assert converted == sorted(
        f"{n}.{ext}" for n in ("minifasnet_v1se.silentface", "minifasnet_v2.silentface") for ext in ("json", "onnx")
    )
    assert (home / "licenses" / "liveness.accepted.json").is_file()
    assert set(analyzer.models) == {"detection", "liveness"}
    assert analyzer.liveness is analyzer.models["liveness"]
    assert verify_pack("liveness", home=home).ok

    names = ["image_F1.jpg", "image_F2.jpg", "image_T1.jpg"]
    results = analyzer.analyze_batch([shared_file(f"{SAMPLES}/{n}") for n in names])
    verdicts = [[f.liveness.is_live for f in faces] for faces in results]
    assert verdicts == [[False], [False], [True]]
    face = results[2][0]
    assert isinstance(face.liveness, LivenessResult) and face.liveness.score > 0.95
    assert face.quality is not None and face.embedding is None  # only detection + liveness were asked for
    assert json.loads(json.dumps(face.to_dict()))["liveness"]["is_live"] is True

    # Offline now: the verified files and cached conversions are used; nothing is requested.
    count = len(served.requests)
    monkeypatch.setenv("FACELAB_OFFLINE", "1")
    again = FaceAnalyzer(main_pack, modules=["liveness"], home=home, liveness_threshold=0.9999)
    assert len(served.requests) == count
    assert again.models["liveness"].threshold == 0.9999
    assert again.analyze(shared_file(f"{SAMPLES}/image_T1.jpg"))[0].liveness.is_live is False
    runner = load_liveness(home=home, download=False)  # the gallery/service entry point
    assert [m.card.name for m in runner.models] == ["minifasnet_v2.silentface", "minifasnet_v1se.silentface"]


def test_corrupt_download_is_refused(served, home, main_pack):
    path = "/anti_spoof_models/4_0_0_80x80_MiniFASNetV1SE.pth"
    served.files[path] = served.files[path][:-10] + b"0123456789"  # same size, other bytes
    with pytest.raises(ChecksumError, match=OFFICIAL_PINS["4_0_0_80x80_MiniFASNetV1SE.pth"]):
        FaceAnalyzer(main_pack, modules=["liveness"], home=home)
    assert not (home / "models" / "liveness" / "4_0_0_80x80_MiniFASNetV1SE.pth").exists()
    assert not (home / "converted" / "minifasnet_v1se.silentface.onnx").exists()


def test_offline_without_files_names_them(served, home, main_pack, monkeypatch):
    monkeypatch.setenv("FACELAB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        FaceAnalyzer(main_pack, modules=["detection", "liveness"], home=home)
    message = str(info.value)
    for name, sha in OFFICIAL_PINS.items():
        assert name in message and sha in message
    assert str(home / "models" / "liveness") in message
    assert served.requests == []


def test_liveness_is_opt_in(served, home, main_pack):
    analyzer = FaceAnalyzer(main_pack, home=home)  # modules=None: the main pack's models only
    assert "liveness" not in analyzer.models and analyzer.liveness is None
    assert analyzer.analyze(shared_file(f"{SAMPLES}/image_T1.jpg"))[0].liveness is None
    assert served.requests == []
    with pytest.raises(ConfigError, match="list of names"):
        FaceAnalyzer(main_pack, modules="liveness", home=home)


def test_all_plus_liveness_keeps_the_main_pack(served, home, tmp_path):
    pack = build_pack(tmp_path / "with_rec")
    analyzer = FaceAnalyzer(pack, modules=["all", "liveness"], home=home)
    assert set(analyzer.models) == {"detection", "recognition", "liveness"}
    face = analyzer.analyze(shared_file(f"{SAMPLES}/image_F2.jpg"))[0]
    assert face.embedding is not None and face.liveness.is_live is False


def test_cli_analyze_liveness(served, home, main_pack, capsys):
    images = [str(shared_file(f"{SAMPLES}/image_F2.jpg")), str(shared_file(f"{SAMPLES}/image_T1.jpg"))]
    code, out, err = run_main(["analyze", "--liveness", "--pack", str(main_pack), images[0]], capsys)
    assert code == 0, err
    assert "liveness=SPOOF(" in out
    code, out, err = run_main(["analyze", "--liveness", "--pack", str(main_pack), "--json", *images], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["faces"][0]["liveness"]["is_live"] for r in records] == [False, True]
    code, out, _ = run_main(["analyze", "--pack", str(main_pack), images[1]], capsys)
    assert code == 0 and "liveness" not in out
    code, _, err = run_main(["analyze", "--liveness", "--offline", "--pack", str(main_pack), images[0]], capsys)
    assert code == 0  # downloaded above, so --offline works
    (home / "models" / "liveness" / "2.7_80x80_MiniFASNetV2.pth").unlink()
    code, _, err = run_main(["analyze", "--liveness", "--offline", "--pack", str(main_pack), images[0]], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("facelab analyze: error: model pack 'liveness' is not available")
    assert "2.7_80x80_MiniFASNetV2.pth (sha256 " + OFFICIAL_PINS["2.7_80x80_MiniFASNetV2.pth"] in err
