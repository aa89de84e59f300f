"""``facelab analyze`` and ``facelab detect`` end to end: real photos, a real detector, real files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli_helpers import build_pack, link_or_copy, run_main
from onnx_builders import T1_BOXES
from shared_data import require_module, shared_file

# Real photos for the folder run: (name in the temporary folder, shared path).
_GOOD = [
    ("Rob_Lowe_0001.jpg", "data/images/inspireface/bulk/Rob_Lowe_0001.jpg"),
    ("Rob_Lowe_0002.jpg", "data/images/inspireface/bulk/Rob_Lowe_0002.jpg"),
    ("kun.jpg", "data/images/inspireface/bulk/kun.jpg"),
    ("sub/woman.png", "data/images/inspireface/bulk/woman.png"),
    ("sub/view.jpg", "data/images/inspireface/bulk/view.jpg"),  # no face
]
_GLOBBED = [("d1.jpeg", "data/images/inspireface/RD/d1.jpeg"), ("d2.jpeg", "data/images/inspireface/RD/d2.jpeg")]


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pack(tmp_path_factory.mktemp("cli_pack") / "tinypack")


@pytest.fixture(scope="module")
def t1_path() -> Path:
    return shared_file("data/images/t1.jpg")


@pytest.fixture(scope="module")
def analyzer(pack: Path):
    """The library's analyser on the same pack, detector fixed at 640 x 640 like the CLI runs below."""
    from facelab.pipeline import FaceAnalyzer

    return FaceAnalyzer(pack, det_size=(640, 640), download=False, providers=["cpu"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real photos, three bad files, and a second folder matched by a glob pattern."""
    root = tmp_path_factory.mktemp("cli_inputs")
    photos = root / "photos"
    for name, rel in _GOOD:
        link_or_copy(shared_file(rel), photos / name)
    jpeg = shared_file("data/images/inspireface/bulk/Nathalie_Baye_0002.jpg").read_bytes()
    (photos / "corrupt.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # truncated JPEG
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "sub" / "notes.png").write_text("not a picture\n", encoding="utf-8")
    (photos / "readme.txt").write_text("ignored: not an image ending\n", encoding="utf-8")
    for name, rel in _GLOBBED:
        link_or_copy(shared_file(rel), root / "more" / name)
    return {"root": root, "photos": photos, "glob": root / "more" / "*.jpeg"}


def _boxes(record: dict) -> np.ndarray:
    return np.array([f["bbox"] for f in record["faces"]], dtype=np.float32).reshape(-1, 4)


def test_analyze_one_image_prints_six_faces(pack: Path, t1_path: Path, capsys) -> None:
    code, out, err = run_main(["analyze", t1_path, "--pack", pack, "--det-size", "640x640"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{t1_path}: 6 face(s)"
    assert len(lines) == 7 and all(line.lstrip().startswith(f"[{i}] box=(") for i, line in enumerate(lines[1:]))
    assert all("embedding=512-d" in line for line in lines[1:])


def test_analyze_json_matches_face_analyzer(pack: Path, t1_path: Path, capsys) -> None:
    from facelab.pipeline import FaceAnalyzer

    # Default detector size (InsightFace's auto multi-scale), as a user would run it.
    code, out, err = run_main(["analyze", t1_path, "--pack", pack, "--json"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 1
    record = records[0]
    assert (record["path"], record["width"], record["height"]) == (str(t1_path), 1280, 886)
    assert len(record["faces"]) == 6
    expected = FaceAnalyzer(pack, download=False).analyze(t1_path)
    np.testing.assert_allclose(_boxes(record), np.stack([f.bbox for f in expected]), atol=1e-3)
    # ... and where InsightFace's SCRFD-500M puts these six faces (independent reference values).
    np.testing.assert_allclose(_boxes(record), T1_BOXES, atol=0.1)
    face = record["faces"][0]
    assert len(face["kps"]) == 5 and 0 < face["score"] <= 1
    assert "embedding" not in face  # only with --embeddings


def test_analyze_embeddings_and_detect_has_none(pack: Path, t1_path: Path, capsys) -> None:
    args = [t1_path, "--pack", pack, "--det-size", "640x640", "--json", "--embeddings"]
    code, out, _ = run_main(["analyze", *args], capsys)
    faces = json.loads(out)["faces"]
    assert code == 0 and len(faces) == 6
    emb = np.array([f["embedding"] for f in faces])
    assert emb.shape == (6, 512) and np.isfinite(emb).all()
    assert len({tuple(np.round(e[:4], 4)) for e in emb}) == 6  # six different faces, six embeddings

    code, out, _ = run_main(["detect", *args], capsys)
    detected = json.loads(out)["faces"]
    assert code == 0 and len(detected) == 6
    assert all("embedding" not in f and len(f["kps"]) == 5 for f in detected)
    np.testing.assert_allclose(_boxes({"faces": detected}), _boxes({"faces": faces}), atol=1e-4)

    code, out, _ = run_main(["detect", t1_path, "--pack", pack, "--det-size", "640x640"], capsys)
    assert code == 0 and out.startswith(f"{t1_path}: 6 face(s)") and "embedding" not in out


@pytest.mark.oracle
def test_analyze_equals_insightface_face_analysis(pack: Path, t1_path: Path, tmp_path: Path, capsys) -> None:
    """The whole command against InsightFace's own FaceAnalysis on the same pack folder."""
    require_module("insightface")
    from insightface.app import FaceAnalysis

    link_or_copy(pack, tmp_path / "models" / "tinypack")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = FaceAnalysis(name="tinypack", root=str(tmp_path), providers=["CPUExecutionProvider"])
        app.prepare(ctx_id=-1, det_size=(640, 640))
        theirs = app.get(cv2.imread(str(t1_path)))
    code, out, _ = run_main(
        ["analyze", t1_path, "--pack", pack, "--det-size", "640x640", "--json", "--embeddings"], capsys
    )
    ours = json.loads(out)["faces"]
    assert code == 0 and len(ours) == len(theirs) == 6
    np.testing.assert_allclose(_boxes({"faces": ours}), np.stack([f.bbox for f in theirs]), atol=1e-2)
    emb_ours = np.array([f["embedding"] for f in ours])
    emb_theirs = np.stack([f.embedding for f in theirs])
    assert np.abs(emb_ours - emb_theirs).max() <= 1e-4 * np.abs(emb_theirs).max()


def test_analyze_draw_writes_a_marked_copy(pack: Path, t1_path: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "drawn.jpg"
    code, out, err = run_main(["analyze", t1_path, "--pack", pack, "--det-size", "640x640", "--draw", target], capsys)
    assert code == 0, err
    drawn = cv2.imread(str(target))
    original = cv2.imread(str(t1_path))
    assert drawn is not None and drawn.shape == original.shape
    diff = np.abs(drawn.astype(np.int16) - original.astype(np.int16)).max(axis=2)
    # JPEG re-encoding changes pixels a little everywhere; the box outlines change them a lot.
    assert (diff > 100).sum() > 1000
    x1, y1, x2, y2 = (int(round(v)) for v in T1_BOXES[0])
    assert diff[y1 - 2 : y1 + 3, x1 + 10 : x2 - 10].max() > 100  # the top edge of the first face's box


def test_analyze_draw_into_missing_folder_is_a_clean_error(pack: Path, t1_path: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "no" / "such" / "folder" / "x.jpg"
    code, _, err = run_main(["analyze", t1_path, "--pack", pack, "--det-size", "640x640", "--draw", target], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"cannot write the drawing {target}" in err


def test_analyze_folder_and_glob_jsonl(pack: Path, folder: dict[str, Path], analyzer, capsys) -> None:
    code, out, err = run_main(
        ["analyze", folder["photos"], folder["glob"], "--pack", pack, "--det-size", "640x640", "--batch-images", "3"],
        capsys,
    )
    assert code == 3, err  # finished, but some inputs failed
    records = [json.loads(line) for line in out.splitlines()]
    by_path = {r["path"]: r for r in records}
    photos, more = folder["photos"], folder["root"] / "more"
    good = [photos / n for n, _ in _GOOD] + [more / n for n, _ in _GLOBBED]
    bad = {
        photos / "corrupt.jpg": "truncated or corrupt",
        photos / "empty.jpg": "empty file",
        photos / "sub" / "notes.png": "not an image",
    }
    assert len(records) == len(by_path) == len(good) + len(bad)  # one line per input; readme.txt not taken
    assert set(by_path) == {str(p) for p in good + list(bad)}
    # Lines come in input order: the folder's files sorted, then the glob's matches.
    folder_part = [r["path"] for r in records if r["path"].startswith(str(photos))]
    assert folder_part == sorted(folder_part) and records[-1]["path"] == str(more / "d2.jpeg")
    for path, problem in bad.items():
        record = by_path[str(path)]
        assert set(record) == {"path", "error"}
        assert record["error"].startswith(f"{path}: ") and problem in record["error"]
        assert f"facelab analyze: skipped {path}: " in err
    for path in good:  # batched results equal one-image-at-a-time analysis
        record = by_path[str(path)]
        assert "error" not in record
        expected = analyzer.analyze(path)
        assert len(record["faces"]) == len(expected)
        if expected:
            np.testing.assert_allclose(_boxes(record), np.stack([f.bbox for f in expected]), atol=1e-3)
    assert by_path[str(photos / "sub" / "view.jpg")]["faces"] == []
    for name in ("Rob_Lowe_0001.jpg", "kun.jpg", "sub/woman.png"):
        assert len(by_path[str(photos / name)]["faces"]) == 1
    image = cv2.imread(str(photos / "kun.jpg"))
    assert (by_path[str(photos / "kun.jpg")]["width"], by_path[str(photos / "kun.jpg")]["height"]) == (
        image.shape[1],
        image.shape[0],
    )
    assert f"{len(good)} image(s) analysed" in err and f"{len(bad)} skipped" in err
    assert "Traceback" not in err


def test_analyze_output_file_and_progress_bar(pack: Path, folder: dict[str, Path], tmp_path: Path, capsys) -> None:
    inputs = [folder["photos"] / "Rob_Lowe_0001.jpg", folder["photos"] / "empty.jpg", folder["glob"]]
    target = tmp_path / "results.jsonl"
    code, out, err = run_main(
        ["analyze", *inputs, "--pack", pack, "--det-size", "640x640", "--output", target, "--progress"], capsys
    )
    assert code == 3
    assert out == ""  # the results went to the file
    lines = target.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["path"] for line in lines] == [
        str(folder["photos"] / "Rob_Lowe_0001.jpg"),
        str(folder["photos"] / "empty.jpg"),
        *(str(folder["root"] / "more" / n) for n, _ in _GLOBBED),
    ]
    # tqdm's bar on stderr: the final state shows all 4 inputs done.
    assert "4/4" in err and "img/s" in err and "100%" in err
    assert "skipped" in err and "empty.jpg" in err


def test_analyze_many_images_draws_into_a_folder(pack: Path, folder: dict[str, Path], tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "drawings"
    code, _, err = run_main(
        ["analyze", folder["glob"], "--pack", pack, "--det-size", "640x640", "--draw", out_dir, "--no-progress"],
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["d1.jpg", "d2.jpg"]
    for name, rel in _GLOBBED:
        drawn = cv2.imread(str(out_dir / (Path(name).stem + ".jpg")))
        assert drawn is not None and drawn.shape == cv2.imread(str(shared_file(rel))).shape


def test_drawings_of_same_named_files_do_not_overwrite(pack: Path, tmp_path: Path, capsys) -> None:
    inputs = tmp_path / "people"
    for sub, (_, rel) in zip(("a", "b"), _GLOBBED):
        link_or_copy(shared_file(rel), inputs / sub / "photo.jpeg")
    out_dir = tmp_path / "drawn"
    code, _, err = run_main(["detect", inputs, "--pack", pack, "--det-size", "640x640", "--draw", out_dir], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["photo.jpg", "photo_2.jpg"]
    shapes = [cv2.imread(str(out_dir / n)).shape for n in ("photo.jpg", "photo_2.jpg")]
    assert shapes == [cv2.imread(str(shared_file(rel))).shape for _, rel in _GLOBBED]
