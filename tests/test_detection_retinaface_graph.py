"""biubug6's RetinaFace / RFB / Slim converted without torch equal the torch export and run in facelab's runner."""

from __future__ import annotations

import numpy as np
import pytest

from cli_helpers import assert_clean_error, run_main
from shared_data import require_module, shared_file

torch = require_module("torch")
ort = require_module("onnxruntime")

from facelab.detection import RetinaFace, create_detector  # noqa: E402
from facelab.detection.retinaface_graph import convert_retinaface  # noqa: E402
from facelab.errors import ModelError  # noqa: E402
from facelab.io.image import load_image  # noqa: E402
from facelab.train.detectors.retinaface_mnet import export_retinaface, load_retinaface  # noqa: E402
from facelab.zoo import identify_model  # noqa: E402

WEIGHTS = {"mobilenet0.25": "mobilenet0.25_Final.pth", "RFB": "RBF_Final.pth", "slim": "slim_Final.pth"}


def _weights(variant):
    return shared_file(f"models/retinaface_biubug6/{WEIGHTS[variant]}")


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``{variant: (card, path)}`` of the torch-free conversions."""
    root = tmp_path_factory.mktemp("retinaface_graph")
    return {v: (convert_retinaface(_weights(v), root / f"{v}.onnx"), root / f"{v}.onnx") for v in WEIGHTS}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The torch export (``facelab train export-retinaface``) of MobileNet0.25: ``(card, path)``."""
    path = tmp_path_factory.mktemp("retinaface_torch") / "mnet_torch.onnx"
    return export_retinaface(_weights("mobilenet0.25"), path), path


def _bgr_input(image):
    x = image.astype(np.float32) - np.array([104.0, 117.0, 123.0], np.float32)
    return x.transpose(2, 0, 1)[None].copy()


def _inputs():
    image = load_image(shared_file("data/images/t1.jpg"))
    rng = np.random.default_rng(1)
    return [
        _bgr_input(image[60:300, 100:420]),  # a real photo with faces
        rng.uniform(-120, 130, (2, 3, 203, 137)).astype(np.float32),  # batch 2; odd size: FPN upsamples 13x9 to 26x18
    ]


def _assert_close(got, want):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)


def test_mnet_outputs_equal_the_torch_export(converted, exported):
    ours, theirs = _session(converted["mobilenet0.25"][1]), _session(exported[1])
    assert [o.name for o in ours.get_outputs()] == ["loc", "conf", "landms"]
    assert [i.name for i in ours.get_inputs()] == ["input"]
    for x in _inputs():
        got = ours.run(None, {"input": x})
        _assert_close(got, theirs.run(None, {"input": x}))
        assert got[1].sum(-1) == pytest.approx(1.0, abs=1e-5)
        assert got[1][..., 1].max() > 0.5 or x.shape[0] == 2  # the photo has faces


@pytest.mark.parametrize("variant", ["RFB", "slim"])
def test_outputs_equal_the_torch_network(converted, variant):
    """RFB and Slim against torch itself (the network the export traces and checks), two sizes and batch sizes."""
    model, _ = load_retinaface(_weights(variant))
    session = _session(converted[variant][1])
    for x in _inputs():
        with torch.no_grad():
            want = [t.numpy() for t in model(torch.from_numpy(x))]
        _assert_close(session.run(None, {"input": x}), want)


def test_card_and_metadata_match_the_torch_export(converted, exported):
    card, path = converted["mobilenet0.25"]
    ours, theirs = card.to_dict(), exported[0].to_dict()
    assert {k for k in ours if ours[k] != theirs[k]} == {"files", "notes"}
    assert "without torch" in card.notes
    assert identify_model(path) == card  # the card beside the file, matched by its SHA-256
    keys = ("min_sizes", "steps", "variances")
    meta = _session(path).get_modelmeta().custom_metadata_map
    torch_meta = _session(exported[1]).get_modelmeta().custom_metadata_map
    assert {k: meta[k] for k in keys} == {k: torch_meta[k] for k in keys}
    for variant in ("RFB", "slim"):
        assert converted[variant][0].extra["min_sizes"] == [[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]]


def test_runner_detects_the_same_faces(converted, exported):
    path, torch_path = converted["mobilenet0.25"][1], exported[1]
    ours = create_detector(path)  # opened without its card: priors from the metadata
    assert isinstance(ours, RetinaFace)
    assert [list(s) for s in ours.min_sizes] == [[10, 20], [32, 64], [128, 256]]
    theirs = create_detector(torch_path)
    image = load_image(shared_file("data/images/t1.jpg"))
    a, b = ours.detect(image), theirs.detect(image)
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    np.testing.assert_allclose(a.kps, b.kps, atol=1e-2)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_wrong_or_extra_tensors_are_refused(tmp_path):
    with pytest.raises(ModelError, match="slim_Final.pth: the checkpoint has no tensor 'conv8.branch0"):
        convert_retinaface(_weights("slim"), tmp_path / "x.onnx", variant="RFB")
    state = torch.load(_weights("slim"), map_location="cpu", weights_only=True)
    state["module.extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(ModelError, match=r"not a RetinaFace slim checkpoint: 1 tensors unused \(\['extra.weight'\]"):
        convert_retinaface(tmp_path / "extra.pth", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_convert_retinaface(tmp_path, capsys):
    out = tmp_path / "slim.onnx"
    code, stdout, _ = run_main(["models", "convert-retinaface", str(_weights("slim")), str(out)], capsys)
    assert code == 0 and "retinaface_slim.biubug6" in stdout
    assert identify_model(out).extra["steps"] == [8, 16, 32, 64]
    code, _, err = run_main(["models", "convert-retinaface", str(tmp_path / "none.pth"), str(out)], capsys)
    assert code == 2
    assert_clean_error(err, "none.pth", command="models")
