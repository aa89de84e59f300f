"""``--det-size auto`` for every detector and ``--rotations auto``, through the CLI and the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import build_pack, open_pack_or_skip, run_main
from shared_data import shared_file


@pytest.fixture(scope="module")
def scrfd_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pack(tmp_path_factory.mktemp("auto_pack") / "scrfd", recognizer=False)


def test_det_size_auto_is_scrfds_own_multiscale_default(scrfd_pack: Path, capsys) -> None:
    from facelab.pipeline import FaceAnalyzer

    auto = FaceAnalyzer(scrfd_pack, det_size="auto", download=False, providers=["cpu"])
    assert auto.detector.input_sizes == [(128, 128), (640, 640)]
    default = FaceAnalyzer(scrfd_pack, download=False, providers=["cpu"])
    t1 = shared_file("data/images/t1.jpg")
    assert len(auto.detect(t1)) == len(default.detect(t1)) == 6
    code, out, err = run_main(["detect", t1, "--pack", scrfd_pack, "--det-size", "auto", "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)["faces"]) == 6


def test_det_size_auto_for_retinaface_yunet_and_the_open_pack(tmp_path: Path) -> None:
    from facelab.detection import create_detector
    from facelab.pipeline import FaceAnalyzer
    from test_detection_retinaface import _priorbox_model  # the RetinaFace graph those tests build

    yunet = create_detector(shared_file("models/yunet/face_detection_yunet_2026may.onnx"), det_size="auto")
    assert len(yunet.passes) == 2
    assert create_detector(_priorbox_model(tmp_path), det_size="auto").det_size == (640, 640)  # its own default
    open_pack_or_skip(tmp_path / "home")
    fa = FaceAnalyzer(home=tmp_path / "home", modules=["detection"], det_size="auto")
    assert len(fa.detect(shared_file("data/images/t1.jpg"))) == 6


def test_rotations_option_on_the_command_line(tmp_path: Path, capsys, monkeypatch) -> None:
    open_pack_or_skip(tmp_path / "home")
    monkeypatch.setenv("FACELAB_HOME", str(tmp_path / "home"))
    photo = shared_file("data/images/inspireface/bulk/r180.jpg")
    code, out, err = run_main(["detect", photo, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["faces"] == []
    code, out, err = run_main(["detect", photo, "--json", "--rotations", "auto"], capsys)
    assert code == 0, err
    (face,) = json.loads(out)["faces"]
    x1, y1, x2, y2 = face["bbox"]
    assert 0 <= x1 < x2 <= 330 and 0 <= y1 < y2 <= 409  # in the photo's own frame
    assert len(face["kps"]) == 5
