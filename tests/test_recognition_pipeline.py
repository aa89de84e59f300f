"""The runners' pipeline protocol, and FaceAnalyzer on a folder of real detector + tiny InsightFace-signature models."""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest

import shared_data
from facelab.alignment.landmarks import LandmarkRunner, default_landmark_card
from facelab.alignment.pose import estimate_pose, load_meanshape
from facelab.attributes import AttributeRunner, default_attribute_card
from facelab.errors import ConfigError
from facelab.recognition import create_recognizer
from facelab.structures import Detections
from onnx_builders import (
    T1_BOXES,
    T1_KPS,
    build_genderage,
    build_landmark_2d106,
    build_landmark_3d68,
    build_recognizer,
)
from shared_data import shared_file


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    img = cv2.imread(str(shared_file("data/images/t1.jpg")))
    assert img is not None
    return img


def _detections(n: int) -> Detections:
    return Detections(T1_BOXES[:n], np.linspace(0.9, 0.6, n), T1_KPS[:n])


def test_protocol_methods_equal_direct_calls(tmp_path, t1: np.ndarray) -> None:
    rec = create_recognizer(build_recognizer(tmp_path / "rec.onnx"))
    dets = [_detections(6), Detections.empty(), _detections(2)]
    images = [t1, np.zeros((30, 30, 3), np.uint8), t1]
    emb = rec.embed_detections(images, dets)
    assert [e.shape for e in emb] == [(6, 512), (0, 512), (2, 512)]
    np.testing.assert_allclose(emb[2], rec.embed(rec.align(t1, T1_KPS[:2])), atol=1e-6)
    with pytest.raises(ConfigError):
        rec.embed_detections([t1], [Detections(T1_BOXES[:1], [0.9], None)])

    path = build_landmark_3d68(tmp_path / "3d68.onnx")
    lmk = LandmarkRunner.from_card(
        default_landmark_card(path, "landmark_3d_68"),
        path,
        meanshape_path=shared_file("data/landmarks/meanshape_68.pkl"),
    )
    values = lmk.predict_detections(images, dets)
    assert set(values[0]) == {"landmark_3d_68", "pose"} and len(values[0]["pose"]) == 6
    assert values[1] == {"landmark_3d_68": [], "pose": []}
    np.testing.assert_allclose(np.stack(values[2]["landmark_3d_68"]), lmk.predict(t1, T1_BOXES[:2]), atol=1e-6)

    path = build_genderage(tmp_path / "ga.onnx")
    attr = AttributeRunner.from_card(default_attribute_card(path), path)
    values = attr.predict_detections(images, dets)
    gender, age = attr.predict(t1, T1_BOXES)
    assert values[0] == {"gender": gender.tolist(), "age": age.tolist()}
    assert values[1] == {"gender": [], "age": []}


@pytest.mark.slow
def test_face_analyzer_with_tiny_models(tmp_path, t1: np.ndarray, monkeypatch) -> None:
    shared_data.require_module("onnx")
    import facelab.detection  # noqa: F401  registers the detection runner (runners register on import)
    from facelab.pipeline import FaceAnalyzer

    folder = tmp_path / "pack"
    folder.mkdir()
    detector = shared_file("models/insightface/det_500m.onnx")
    try:
        os.symlink(detector, folder / "det_500m.onnx")
    except OSError:
        shutil.copyfile(detector, folder / "det_500m.onnx")  # a temporary copy, outside the repository
    build_recognizer(folder / "w600k_tiny.onnx")
    build_landmark_2d106(folder / "2d106_tiny.onnx")
    build_landmark_3d68(folder / "1k3d68_tiny.onnx")
    build_genderage(folder / "genderage_tiny.onnx")
    monkeypatch.setenv("FACELAB_MEANSHAPE_68", str(shared_file("data/landmarks/meanshape_68.pkl")))
    analyzer = FaceAnalyzer(folder, home=tmp_path / "home", download=False, providers=["cpu"])
    faces = analyzer.analyze(t1)
    assert len(faces) == 6
    rec = create_recognizer(folder / "w600k_tiny.onnx")
    lmk2 = LandmarkRunner.from_card(
        default_landmark_card(folder / "2d106_tiny.onnx", "landmark_2d_106"), folder / "2d106_tiny.onnx"
    )
    lmk3 = LandmarkRunner.from_card(
        default_landmark_card(folder / "1k3d68_tiny.onnx", "landmark_3d_68"), folder / "1k3d68_tiny.onnx"
    )
    ga = AttributeRunner.from_card(
        default_attribute_card(folder / "genderage_tiny.onnx"), folder / "genderage_tiny.onnx"
    )
    meanshape = load_meanshape(shared_file("data/landmarks/meanshape_68.pkl"))
    # T1_BOXES are insightface's own SCRFD-500M boxes for this photo (see onnx_builders)
    np.testing.assert_allclose(np.stack([f.bbox for f in faces]), T1_BOXES, atol=0.1)
    for face in faces:
        # every field equals what the stand-alone runner gives for the detected box / keypoints
        assert face.embedding.shape == (512,) and face.landmark_2d_106.shape == (106, 2)
        np.testing.assert_allclose(face.embedding, rec.embed_faces(t1, face.kps[None])[0][0], atol=1e-5)
        np.testing.assert_allclose(face.landmark_2d_106, lmk2.predict(t1, face.bbox[None])[0], atol=1e-3)
        np.testing.assert_allclose(face.landmark_3d_68, lmk3.predict(t1, face.bbox[None])[0], atol=1e-3)
        np.testing.assert_allclose(face.pose, estimate_pose(face.landmark_3d_68, meanshape), atol=1e-4)
        gender, age = ga.predict(t1, face.bbox[None])
        assert (face.gender, face.age) == (int(gender[0]), int(age[0])) and isinstance(face.age, int)


def test_fill_faces_sets_face_fields_and_keeps_other_outputs_as_attributes():
    from facelab.structures import Face, fill_faces

    faces = [[Face(bbox=np.zeros(4), score=0.9), Face(bbox=np.ones(4), score=0.8)], []]
    pose = np.array([1.0, 2.0, 3.0], np.float32)
    fill_faces(faces, [{"gender": [1, 0], "age": [30, 41], "pose": [pose, pose], "attribute_7": ["a", "b"]}, {}])
    assert [(f.gender, f.age, f.sex) for f in faces[0]] == [(1, 30, "M"), (0, 41, "F")]
    assert faces[0][1].pose is pose
    assert [f.attributes for f in faces[0]] == [{"attribute_7": "a"}, {"attribute_7": "b"}]


def test_detections_with_mismatched_lengths_name_the_lengths():
    with pytest.raises(ConfigError, match="same length, got 2, 1 and none"):
        Detections(np.zeros((2, 4)), np.zeros(1))
    with pytest.raises(ValueError):  # ConfigError stays a ValueError for old callers
        Detections(np.zeros((2, 4)), np.zeros(2), np.zeros((3, 5, 2)))


def test_detector_options_reach_the_detector_and_bad_ones_are_named(tmp_path):
    from cli_helpers import build_pack
    from facelab import ConfigError
    from facelab.pipeline import FaceAnalyzer

    pack = build_pack(tmp_path / "pack", recognizer=False)
    analyzer = FaceAnalyzer(pack, det_size=(640, 640), det_options={"nms_thresh": 0.25, "max_batch": 2})
    assert analyzer.detector.nms_thresh == 0.25 and analyzer.detector.max_batch == 2
    with pytest.raises(ConfigError, match="unsupported option"):
        FaceAnalyzer(pack, det_options={"no_such_option": 1})
