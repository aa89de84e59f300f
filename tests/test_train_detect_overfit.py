"""Detectors trained on real photos with the CLI, exported, and used by facelab's own runners and FaceAnalyzer.

* SCRFD-500M-kps from scratch learns dlib's 4 training photos (18 faces): AP >= 0.9 after 80 CPU steps.
* biubug6's MIT RetinaFace-MobileNet0.25, fine-tuned for 5 steps, still finds all 43 faces of
  training.xml + testing.xml.
* Both exports run in :class:`facelab.detection.SCRFD` / :class:`~facelab.detection.RetinaFace`
  with outputs equal to torch's within 1e-4, and ``FaceAnalyzer(folder)`` loads them from their cards.
"""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

import shared_data

torch = shared_data.require_module("torch")
shared_data.require_module("onnxruntime")
shared_data.require_module("onnx")

from facelab.cli import main  # noqa: E402
from facelab.zoo.card import ModelCard  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread_per_module")]

DLIB = "data/detection/dlib_faces"


@pytest.fixture(scope="module")
def scrfd_run(tmp_path_factory):
    shared_data.shared_file(f"{DLIB}/training.xml")
    out = tmp_path_factory.mktemp("scrfd") / "run"
    assert main(["train", "detect", "configs/detection/smoke_cpu_scrfd.yaml", f"output={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def retina_run(tmp_path_factory):
    shared_data.shared_file("models/retinaface_biubug6/mobilenet0.25_Final.pth")
    out = tmp_path_factory.mktemp("retina") / "run"
    assert main(["train", "detect", "configs/detection/smoke_cpu_retinaface.yaml", f"output={out}"]) == 0
    return out


def _export(run, tmp_path, name):
    onnx_path = tmp_path / "pack" / f"{name}.onnx"
    rc = main(
        ["train", "export-detector", str(run), str(onnx_path), "--license", "CC0-1.0", "--train-data", "dlib_faces"]
    )
    assert rc == 0
    card = ModelCard.load(onnx_path.with_suffix(".json"))
    assert card.files[0].sha256 == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert card.license == "CC0-1.0" and card.train_data == "dlib_faces" and card.task == "detection"
    return onnx_path, card


def _runners(run, onnx_path, card, **kwargs):
    from facelab.detection.base import DetectionRunner
    from facelab.train.detection.engine import make_runner
    from facelab.train.detection.export import load_detector

    model, _ = load_detector(run)
    size = tuple(card.extra["det_size"])
    ort_runner = DetectionRunner.from_card(card, onnx_path, **kwargs)
    torch_runner = make_runner(model, size[0], ort_runner.det_thresh, ort_runner.nms_thresh)
    return ort_runner, torch_runner


def _same_outputs(ort_runner, torch_runner, images):
    from facelab.io.image import load_image
    from facelab.ops.boxes import letterbox

    size = getattr(ort_runner, "det_size", None) or ort_runner.input_sizes[0]
    found = 0
    for path in images:
        img = load_image(path)
        canvas, _ = letterbox(img, size)
        raw_ort, raw_torch = ort_runner._run([canvas])[0], torch_runner._run([canvas])[0]
        assert len(raw_ort) == len(raw_torch)
        for a, b in zip(raw_ort, raw_torch):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-4)
        a, b = ort_runner.detect(img), torch_runner.detect(img)
        assert len(a) == len(b)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(a.kps, b.kps, rtol=1e-4, atol=1e-4)
        found += len(a)
    return found


def _analyzer_finds(folder, image, expected):
    from facelab.pipeline import FaceAnalyzer

    faces = FaceAnalyzer(folder, modules=["detection"]).analyze(image)
    assert len(faces) == expected and all(f.kps is not None and f.kps.shape == (5, 2) for f in faces)


def test_scrfd_from_scratch_learns_the_dlib_training_photos(scrfd_run):
    state = torch.load(scrfd_run / "model.pt", weights_only=False)
    assert state["step"] == 80 and state["variant"] == "scrfd_500m_kps"
    result = state["metrics"]["training"]
    assert result["n_gt"] == 18 and result["ap"] >= 0.9, result


def test_exported_scrfd_matches_torch_in_facelabs_runner_and_loads_in_face_analyzer(scrfd_run, tmp_path):
    from facelab.detection import SCRFD
    from facelab.eval.detection_ap import detection_ap
    from facelab.train.detection.annotations import load_annotations, to_box_gt
    from facelab.zoo._inspect import classify_signature, read_signature

    onnx_path, card = _export(scrfd_run, tmp_path, "scrfd_dlib")
    assert card.arch == "scrfd" and card.extra["num_outputs"] == 9 and card.metrics["training"]["ap"] >= 0.9
    sig = read_signature(onnx_path)
    assert [(i.name, i.shape) for i in sig.inputs] == [("input.1", (1, 3, None, None))]
    assert [o.name for o in sig.outputs] == [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
    assert [o.shape[1] for o in sig.outputs] == [1] * 3 + [4] * 3 + [10] * 3
    guessed = classify_signature(sig, onnx_path)  # without the card, the file is still an SCRFD
    assert (guessed.arch, guessed.mean, guessed.std, guessed.color_order) == ("scrfd", card.mean, card.std, "RGB")
    ort_runner, torch_runner = _runners(scrfd_run, onnx_path, card)
    assert isinstance(ort_runner, SCRFD) and ort_runner.input_sizes == [(192, 192)]
    photos = sorted(shared_data.shared_file(DLIB).glob("2008_00*.jpg"))[:3]
    assert _same_outputs(ort_runner, torch_runner, photos) > 0
    # the exported file alone scores the training photos as the training run did
    records = load_annotations(shared_data.shared_file(f"{DLIB}/training.xml"))
    evaluator = SCRFD.from_card(card, onnx_path, det_thresh=0.02, nms_thresh=0.4)
    ap = detection_ap(to_box_gt(records), {str(r.path): evaluator.detect(str(r.path)).det for r in records}).ap
    assert ap == pytest.approx(card.metrics["training"]["ap"], abs=1e-6)
    image = records[0].path
    _analyzer_finds(onnx_path.parent, image, len(ort_runner.detect(image)))


def test_finetuned_biubug6_retinaface_keeps_all_43_faces(retina_run):
    from facelab.train.detection.variants import build_detector

    state = torch.load(retina_run / "model.pt", weights_only=False)
    assert state["step"] == 5 and state["variant"] == "retinaface_mnet025_1mb"
    result = state["metrics"]["training+testing"]
    assert result["n_gt"] == 43 and result["recall"] == 1.0, result
    start = build_detector("retinaface_mnet025_1mb")
    start.load_pretrained(str(shared_data.shared_file("models/retinaface_biubug6/mobilenet0.25_Final.pth")))
    moved = max(
        float((state["model"][k] - v).abs().max()) for k, v in start.state_dict().items() if k.endswith("weight")
    )
    assert moved > 1e-5  # it did train


def test_exported_retinaface_matches_torch_in_facelabs_runner_and_loads_in_face_analyzer(retina_run, tmp_path):
    from facelab.detection import RetinaFace, create_detector

    onnx_path, card = _export(retina_run, tmp_path, "retinaface_dlib")
    assert card.arch == "retinaface" and card.extra["min_sizes"] == [[10, 20], [32, 64], [128, 256]]
    assert (card.color_order, card.mean, card.std) == ("BGR", (104.0, 117.0, 123.0), (1.0, 1.0, 1.0))
    ort_runner, torch_runner = _runners(retina_run, onnx_path, card)
    assert isinstance(ort_runner, RetinaFace) and ort_runner.det_size == (640, 640)
    photos = sorted(shared_data.shared_file(DLIB).glob("2009_*.jpg")) + sorted(
        shared_data.shared_file(DLIB).glob("2007_*.jpg")
    )
    assert _same_outputs(ort_runner, torch_runner, photos) >= 9
    # without its card the file still carries its prior boxes (ONNX metadata)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(onnx_path, bare / "det.onnx")
    plain = create_detector(bare / "det.onnx")
    assert plain.min_sizes == ((10, 20), (32, 64), (128, 256))
    _analyzer_finds(onnx_path.parent, photos[0], len(ort_runner.detect(photos[0])))
