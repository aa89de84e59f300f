"""Bad inputs and bad packs: exit code 2 and one readable line, never a Python traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import assert_clean_error, build_pack, link_or_copy, run_main, run_script, script_command
from shared_data import shared_file


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pack(tmp_path_factory.mktemp("cli_errors") / "tinypack")


@pytest.fixture(scope="module")
def t1_path() -> Path:
    return shared_file("data/images/t1.jpg")


def test_missing_image(pack: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.jpg"
    code, out, err = run_main(["analyze", missing, "--pack", pack], capsys)
    assert code == 2 and out == ""
    assert_clean_error(err, str(missing), "no such file")


def test_glob_matching_nothing(pack: Path, tmp_path: Path, capsys) -> None:
    pattern = str(tmp_path / "*.jpg")
    code, _, err = run_main(["detect", pattern, "--pack", pack], capsys)
    assert code == 2
    assert_clean_error(err, pattern, command="detect")


def test_unknown_pack_name(t1_path: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FACELAB_HOME", str(tmp_path / "home"))
    code, _, err = run_main(["analyze", t1_path, "--pack", "no_such_pack", "--offline"], capsys)
    assert code == 2
    assert_clean_error(err, "no_such_pack", "buffalo_l")  # names the problem and the known packs


def test_pack_folder_without_detector(t1_path: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "recognition_only"
    build_pack(folder)
    (folder / "det_500m.onnx").unlink()
    code, _, err = run_main(["analyze", t1_path, "--pack", folder], capsys)
    assert code == 2
    assert_clean_error(err, str(folder), "no face detector", "w600k_tiny.onnx")


def test_empty_pack_folder(t1_path: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "empty_pack"
    folder.mkdir()
    code, _, err = run_main(["analyze", t1_path, "--pack", folder], capsys)
    assert code == 2
    assert_clean_error(err, str(folder), "no .onnx")


@pytest.mark.parametrize(
    "content",
    [b"this is not an onnx model\n", "truncated"],
    ids=["text", "truncated-detector"],
)
def test_junk_onnx_in_pack(t1_path: Path, tmp_path: Path, capsys, content: bytes | str) -> None:
    folder = tmp_path / "junk_pack"
    folder.mkdir()
    if content == "truncated":
        data = shared_file("models/insightface/det_500m.onnx").read_bytes()[:5000]
    else:
        data = content
    (folder / "det_500m.onnx").write_bytes(data)
    code, _, err = run_main(["analyze", t1_path, "--pack", folder], capsys)
    assert code == 2
    assert_clean_error(err, str(folder / "det_500m.onnx"), "not a readable ONNX model")


def test_unwritable_output(pack: Path, t1_path: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "missing_dir" / "out.jsonl"
    code, _, err = run_main(["analyze", t1_path, "--pack", pack, "--det-size", "640x640", "-o", target], capsys)
    assert code == 2
    assert_clean_error(err, str(target), "--output")


def test_bad_det_size_is_a_usage_error(pack: Path, t1_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        run_main(["analyze", t1_path, "--pack", pack, "--det-size", "big"], capsys)
    assert exc.value.code == 2
    assert "expected WxH" in capsys.readouterr().err


def test_single_bad_image_is_reported_and_exits_3(pack: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole JPEG")
    code, out, err = run_main(["analyze", bad, "--pack", pack, "--det-size", "640x640", "--json"], capsys)
    assert code == 3
    assert out.strip().startswith('{"path": ') and '"error"' in out
    assert f"skipped {bad}: " in err and "Traceback" not in err


def test_console_script_exit_codes_and_stderr(pack: Path, t1_path: Path, tmp_path: Path) -> None:
    """The installed ``facelab`` script, in a real process: exit codes and stderr text."""
    env = {"FACELAB_HOME": str(tmp_path / "home"), "FACELAB_OFFLINE": "1"}
    ok = run_script(["detect", t1_path, "--pack", pack, "--det-size", "640x640"], env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{t1_path}: 6 face(s)")

    missing = tmp_path / "missing.jpg"
    proc = run_script(["analyze", missing, "--pack", pack], env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"facelab analyze: error: no such file, folder or matching pattern: {missing}"

    junk = tmp_path / "junk_pack"
    junk.mkdir()
    (junk / "det.onnx").write_bytes(b"junk")
    proc = run_script(["analyze", t1_path, "--pack", junk], env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert_clean_error(proc.stderr, str(junk / "det.onnx"), "not a readable ONNX model")

    folder = tmp_path / "inputs"
    link_or_copy(t1_path, folder / "t1.jpg")
    (folder / "bad.png").write_text("text, not a PNG", encoding="utf-8")
    proc = run_script(["detect", folder, "--pack", pack, "--det-size", "640x640"], env=env)
    assert proc.returncode == 3, proc.stderr
    assert len(proc.stdout.splitlines()) == 2
    assert f"facelab detect: skipped {folder / 'bad.png'}: " in proc.stderr
    assert "1 image(s) analysed, 6 face(s), 1 skipped" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = run_script([], env=env)
    assert proc.returncode == 2 and "usage: facelab" in proc.stdout


def test_python_m_facelab_version() -> None:
    from facelab import __version__

    proc = subprocess.run(
        [sys.executable, "-m", "facelab", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"facelab {__version__}"


def test_closed_stdout_stops_quietly(pack: Path, t1_path: Path, tmp_path: Path) -> None:
    """``facelab analyze DIR --embeddings | head -1``: exit 141 (SIGPIPE convention), no traceback."""
    folder = tmp_path / "many"
    for i in range(4):  # ~60 KB of JSON per image: more than the pipe buffer holds
        link_or_copy(t1_path, folder / f"t1_{i}.jpg")
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [*script_command(), "analyze", str(folder), "--pack", str(pack), "--det-size", "640x640"]
            + ["--embeddings", "--batch-images", "1"],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        first = proc.stdout.readline()
        proc.stdout.close()  # the reader goes away, as `head -1` does
        code = proc.wait(timeout=120)
    assert first.startswith(b'{"path": ') and first.endswith(b"\n")
    err = stderr_path.read_text()
    assert code == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
