"""``facelab models list|info|verify|download`` against a temporary model home (no network)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cli_helpers import assert_clean_error, link_or_copy, run_main, run_script
from shared_data import shared_file

# InsightFace's buffalo packs and their files (InsightFace model zoo; see research/insightface-anchor.md).
_BUFFALO_L_FILES = {"det_10g.onnx", "w600k_r50.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx"}
_BUFFALO_SC_FILES = {"det_500m.onnx", "w600k_mbf.onnx"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_list_shows_the_insightface_packs(home: Path, capsys) -> None:
    code, out, _ = run_main(["models", "list"], capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert {"buffalo_l", "buffalo_m", "buffalo_s", "buffalo_sc", "antelopev2"} <= set(rows)
    assert rows["buffalo_l"].split()[1] == "no"  # nothing installed in the empty home
    assert "non-commercial" in rows["buffalo_l"]  # the licence is shown
    assert "genderage" in rows["buffalo_l"] and "genderage" not in rows["buffalo_sc"]
    # The default pack registers itself from facelab.dlib; the command must still list it.
    assert "open" in rows and "CC0" in rows["open"]

    code, out, _ = run_main(["models", "list", "--json"], capsys)
    packs = {p["name"]: p for p in json.loads(out)}
    assert code == 0 and packs["buffalo_sc"]["installed"]["complete"] is False
    assert {f["filename"] for m in packs["buffalo_l"]["models"] for f in m["files"]} == _BUFFALO_L_FILES


def test_info_buffalo_l(home: Path, capsys) -> None:
    code, out, _ = run_main(["models", "info", "buffalo_l"], capsys)
    assert code == 0
    assert out.startswith("buffalo_l: ")
    assert "licence: non-commercial" in out
    assert f"installed: {home / 'models' / 'buffalo_l'} (incomplete)" in out
    recognition = next(line for line in out.splitlines() if line.strip().startswith("recognition"))
    # ArcFace w600k_r50: 112 x 112 RGB, (x - 127.5) / 127.5, the 5-point ArcFace template.
    assert "input=[112, 112] RGB mean=127.5 std=127.5 template=arcface_112_5pt" in recognition
    tasks = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert tasks == ["detection", "recognition", "landmark_2d_106", "landmark_3d_68", "genderage"]

    code, out, _ = run_main(["models", "info", "buffalo_l", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["name"] == "buffalo_l"
    assert {f["filename"] for f in info["installed"]["files"]} == _BUFFALO_L_FILES


def test_info_unknown_pack_is_a_clean_error(home: Path, capsys) -> None:
    code, _, err = run_main(["models", "info", "buffalo_xl"], capsys)
    assert code == 2
    assert_clean_error(err, "buffalo_xl", "buffalo_l", command="models")


def test_verify_reports_missing_then_partial(home: Path, capsys) -> None:
    code, out, _ = run_main(["models", "verify", "buffalo_sc"], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"buffalo_sc: PROBLEMS ({home / 'models' / 'buffalo_sc'})"
    assert sorted(lines[1:]) == ["  BAD det_500m.onnx missing", "  BAD w600k_mbf.onnx missing"]

    # buffalo_sc's det_500m.onnx is byte-identical to the shared detector: it verifies against the pin.
    folder = home / "models" / "buffalo_sc"
    link_or_copy(shared_file("models/insightface/det_500m.onnx"), folder / "det_500m.onnx")
    (folder / "w600k_mbf.onnx").write_bytes(b"not the recogniser")
    code, out, _ = run_main(["models", "verify", "buffalo_sc", "--json"], capsys)
    assert code == 1
    report = json.loads(out)
    files = {f["filename"]: f for f in report["files"]}
    assert report["ok"] is False and set(files) == _BUFFALO_SC_FILES
    assert files["det_500m.onnx"]["ok"] is True
    assert files["w600k_mbf.onnx"]["ok"] is False and "size" in files["w600k_mbf.onnx"]["problem"]

    code, out, _ = run_main(["models", "list"], capsys)
    row = next(line for line in out.splitlines() if line.startswith("buffalo_sc "))
    assert row.split()[1] == "partial"


def test_download_offline_names_file_hash_and_place(home: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FACELAB_OFFLINE", "1")
    code, out, err = run_main(["models", "download", "buffalo_sc"], capsys)
    assert code == 2 and out == ""
    assert "Traceback" not in err and err.startswith("facelab models: error: ")
    assert "FACELAB_OFFLINE" in err
    target = home / "models" / "buffalo_sc" / "det_500m.onnx"
    # The expected hash is that of the real file (the shared copy is byte-identical to the pack's).
    expected = _sha256(shared_file("models/insightface/det_500m.onnx"))
    line = next(line for line in err.splitlines() if "det_500m.onnx (" in line)
    assert expected in line and f"put it at {target}" in line
    assert "w600k_mbf.onnx" in err and not (home / "models" / "buffalo_sc" / "w600k_mbf.onnx").exists()


def test_download_offline_from_the_console_script(tmp_path: Path) -> None:
    env = {
        "FACELAB_HOME": str(tmp_path / "h"),
        "INSIGHTFACE_HOME": str(tmp_path / "i"),
        "FACELAB_OFFLINE": "1",
    }
    proc = run_script(["models", "download", "buffalo_sc", "--no-progress"], env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(tmp_path / "h" / "models" / "buffalo_sc" / "w600k_mbf.onnx") in proc.stderr
