"""``facelab eval verify`` / ``calibrate`` end to end with real ONNX models."""

import json

import cv2
import numpy as np
import pytest

from facelab.cli import main
from facelab.eval.calibration import load_calibration
from facelab.eval.pairs import write_bin
from shared_data import require_module, shared_file


def _tiny_recognizer(path):
    """A real 3-d 'recogniser': global average pool of the normalised RGB input."""
    onnx = require_module("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["683"]),
        ],
        "tiny_rec",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _colour_bin(path):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)] * 4
    imgs, flags = [], []
    for i, c in enumerate(colours):
        a = np.full((112, 112, 3), c, np.uint8)
        b = a.copy() if i % 2 == 0 else np.full((112, 112, 3), colours[(i + 1) % 5], np.uint8)
        flags.append(i % 2 == 0)
        imgs += [a, b]
    write_bin(path, [cv2.imencode(".png", x)[1].tobytes() for x in imgs], flags)


def test_verify_and_calibrate_with_model_file(tmp_path, capsys):
    require_module("onnxruntime")
    model = tmp_path / "tiny.onnx"
    _tiny_recognizer(model)
    _colour_bin(tmp_path / "c.bin")
    out = tmp_path / "v.json"
    code = main(
        [
            "eval",
            "verify",
            "--pairs",
            str(tmp_path / "c.bin"),
            "--model",
            str(model),
            "--json",
            str(out),
            "--save-scores",
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    for key in ("accuracy", "accuracy_std", "auc", "eer", "best_threshold", "tar_at_far"):
        assert key in data
    # identical crops give cosine 1 exactly; every impostor pair has different colours
    assert data["accuracy"] == 1.0 and data["auc"] == 1.0 and data["n_pairs"] == 20
    assert all(s == pytest.approx(1.0) for s, y in zip(data["scores"], data["issame"]) if y)
    assert "accuracy" in capsys.readouterr().out
    cal = tmp_path / "cal.json"
    assert main(["eval", "calibrate", "--scores", str(out), "--far", "0.1", "--out", str(cal), "--n-boot", "20"]) == 0
    threshold = load_calibration(cal)
    imp = sorted((s for s, y in zip(data["scores"], data["issame"]) if not y), reverse=True)
    assert imp[1] < threshold <= np.nextafter(imp[1], 2)  # 10 impostors, FAR 0.1: one may pass


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "widerface", "--pred", str(tmp_path / "none"), "--gt", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert main(["eval", "calibrate", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_verify_master_csv_with_default_pack(tmp_path):
    """End to end on deepface's 300 labelled photo pairs with the default (open, dlib) pack."""
    csv_path = shared_file("data/verification/deepface/master.csv")
    out = tmp_path / "master.json"
    assert main(["eval", "verify", "--pairs", str(csv_path), "--offline", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["n_pairs"] == 300
    # master.csv is mostly impostor pairs (38 genuine, 262 impostor), so the ranking is checked too.
    # dlib's own pipeline reaches 0.9967 accuracy here.
    assert data["accuracy"] >= 0.99
    assert data["auc"] > 0.99
    assert data["eer"] < 0.03


@pytest.mark.slow
def test_verify_photo_pairs_through_the_pipeline(tmp_path):
    """CSV photo pairs: a real SCRFD detector plus a tiny real recogniser, as a pack folder."""
    require_module("onnxruntime")
    det = shared_file("models/insightface/det_500m.onnx")
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "det_500m.onnx").symlink_to(det)
    _tiny_recognizer(pack / "w600k_tiny.onnx")
    src = shared_file("data/verification/deepface/master.csv")
    lines = src.read_text().splitlines()[:9]  # header + 8 pairs
    csv_path = tmp_path / "few.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "few.json"
    code = main(
        ["eval", "verify", "--pairs", str(csv_path), "--images", str(src.parent), "--pack", str(pack)]
        + ["--offline", "--folds", "2", "--json", str(out), "--save-scores"]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["n_pairs"] == 8 and data["n_failed"] == 0
    # independent check of the glue: the main face's embedding straight from the pipeline
    from facelab.pipeline import FaceAnalyzer

    fa = FaceAnalyzer(pack, download=False)
    a, b = (s.strip() for s in lines[1].split(",")[:2])
    ea = fa.analyze(str(src.parent / a), max_num=1)[0].normed_embedding
    eb = fa.analyze(str(src.parent / b), max_num=1)[0].normed_embedding
    assert data["scores"][0] == pytest.approx(float(ea @ eb), abs=1e-5)
