"""``facelab compare A B``: similarity, threshold and verdict; a face-less image is a clean error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_clean_error, build_pack, link_or_copy, run_main
from shared_data import require_module, shared_file


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pack(tmp_path_factory.mktemp("cli_compare") / "tinypack")


def _compare(capsys, a: Path, b: Path, pack: Path, *extra: str) -> tuple[int, str, str]:
    return run_main(["compare", a, b, "--pack", pack, "--det-size", "640x640", *extra], capsys)


def test_same_image_twice_is_the_same_person(pack: Path, capsys) -> None:
    image = shared_file("data/images/inspireface/bulk/Rob_Lowe_0001.jpg")
    code, out, err = _compare(capsys, image, image, pack, "--threshold", "0.3", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) >= {"similarity", "threshold", "same_person"}
    assert result["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert result["threshold"] == 0.3 and result["same_person"] is True
    assert result["pack"] == "tinypack"


def test_two_people_score_lower_and_text_output(pack: Path, capsys) -> None:
    a = shared_file("data/images/inspireface/bulk/Rob_Lowe_0001.jpg")
    b = shared_file("data/images/inspireface/bulk/woman.png")
    code, out, err = _compare(capsys, a, b, pack, "--threshold", "0.9999", "--json")
    assert code == 0, err
    result = json.loads(out)
    # A random tiny recogniser still gives two different crops different embeddings.
    assert -1.0 <= result["similarity"] < 0.9999 and result["same_person"] is False

    code, out, _ = _compare(capsys, a, a, pack, "--threshold", "0.5")
    assert code == 0
    assert out.startswith("cosine similarity 1.0000 (threshold 0.5): same person")


def test_without_threshold_the_verdict_is_unknown(pack: Path, capsys) -> None:
    # The folder's recogniser has no card threshold, so no verdict can be given.
    image = shared_file("data/images/inspireface/bulk/kun.jpg")
    code, out, _ = _compare(capsys, image, image, pack, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["threshold"] is None and result["same_person"] is None
    assert np.isclose(result["similarity"], 1.0, atol=1e-5)


def test_calibration_file_sets_the_threshold(pack: Path, tmp_path: Path, capsys) -> None:
    image = shared_file("data/images/inspireface/bulk/kun.jpg")
    calibration = tmp_path / "cal.json"
    calibration.write_text(json.dumps({"metric": "cosine", "threshold": 0.42}), encoding="utf-8")
    code, out, _ = _compare(capsys, image, image, pack, "--threshold", str(calibration), "--json")
    assert code == 0 and json.loads(out)["threshold"] == 0.42

    calibration.write_text("{}", encoding="utf-8")
    code, _, err = _compare(capsys, image, image, pack, "--threshold", str(calibration))
    assert code == 2
    assert_clean_error(err, str(calibration), "threshold", command="compare")


def test_image_without_a_face_is_a_clean_error(pack: Path, capsys) -> None:
    face = shared_file("data/images/inspireface/bulk/Rob_Lowe_0001.jpg")
    no_face = shared_file("data/images/inspireface/bulk/view.jpg")
    code, out, err = _compare(capsys, face, no_face, pack, "--threshold", "0.3")
    assert code == 2 and out == ""
    assert_clean_error(err, str(no_face), "no face", command="compare")


def test_pack_without_recogniser_is_a_clean_error(tmp_path: Path, capsys) -> None:
    detector_only = build_pack(tmp_path / "detonly", recognizer=False)
    image = shared_file("data/images/inspireface/bulk/kun.jpg")
    code, out, err = _compare(capsys, image, image, detector_only)
    assert code == 2 and out == ""
    assert "Traceback" not in err and "no recognition model" in err and "detonly" in err


@pytest.mark.oracle
def test_similarity_equals_insightface_on_the_same_pack(pack: Path, tmp_path: Path, capsys) -> None:
    """The score of two different people, against InsightFace's FaceAnalysis on the same pack folder."""
    require_module("insightface")
    import warnings

    import cv2
    from insightface.app import FaceAnalysis

    a = shared_file("data/images/inspireface/bulk/Rob_Lowe_0001.jpg")
    b = shared_file("data/images/inspireface/bulk/woman.png")
    link_or_copy(pack, tmp_path / "models" / "tinypack")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = FaceAnalysis(name="tinypack", root=str(tmp_path), providers=["CPUExecutionProvider"])
        app.prepare(ctx_id=-1, det_size=(640, 640))
        faces = [app.get(cv2.imread(str(p))) for p in (a, b)]
    assert [len(f) for f in faces] == [1, 1]  # one face each: no choice of "main" face involved
    expected = float(faces[0][0].normed_embedding @ faces[1][0].normed_embedding)
    code, out, err = _compare(capsys, a, b, pack, "--json")
    assert code == 0, err
    assert json.loads(out)["similarity"] == pytest.approx(expected, abs=1e-4)
    assert abs(expected) < 0.99  # two different crops: the check is not the trivial 1.0
