"""2d106 / 3d68 landmark runners: InsightFace parity on tiny models, decoding, batching, pose."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from facelab.alignment.landmarks import LandmarkRunner, decode_landmarks, default_landmark_card
from facelab.alignment.transform import bbox_crop_transform
from facelab.errors import ConfigError, ModelError
from facelab.registry import RUNNERS
from facelab.structures import Face
from onnx_builders import T1_BOXES, build_genderage, build_landmark_2d106, build_landmark_3d68
from shared_data import require_module, shared_file


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lmk")
    return {
        ("landmark_2d_106", True): build_landmark_2d106(folder / "2d106_graphnorm.onnx", in_graph_norm=True),
        ("landmark_2d_106", False): build_landmark_2d106(folder / "2d106_plain.onnx", in_graph_norm=False),
        ("landmark_3d_68", True): build_landmark_3d68(folder / "3d68_graphnorm.onnx", in_graph_norm=True),
        ("landmark_3d_68", False): build_landmark_3d68(folder / "3d68_plain.onnx", in_graph_norm=False),
    }


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    img = cv2.imread(str(shared_file("data/images/t1.jpg")))
    assert img is not None
    return img


def _runner(path, task: str, in_graph: bool, **kwargs) -> LandmarkRunner:
    return RUNNERS.get(task).from_card(
        default_landmark_card(path, task, in_graph_normalization=in_graph), path, None, **kwargs
    )


def _oracle_landmarks(path, img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, list]:
    require_module("insightface")
    from insightface.app.common import Face as InsightFace
    from insightface.model_zoo.landmark import Landmark

    model = Landmark(str(path))
    points, poses = [], []
    for box in boxes:
        face = InsightFace(bbox=box)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.get(img, face)
        points.append(face[model.taskname])
        poses.append(face.get("pose"))
    return np.stack(points), poses


@pytest.mark.oracle
@pytest.mark.parametrize("task", ["landmark_2d_106", "landmark_3d_68"])
@pytest.mark.parametrize("in_graph", [True, False])
def test_equals_insightface(models, t1: np.ndarray, task: str, in_graph: bool) -> None:
    path = models[(task, in_graph)]
    ours = _runner(path, task, in_graph).predict(t1, T1_BOXES)
    theirs, _ = _oracle_landmarks(path, t1, T1_BOXES)
    expected_shape = (6, 106, 2) if task == "landmark_2d_106" else (6, 68, 3)
    assert ours.shape == expected_shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-3, rtol=0)


@pytest.mark.oracle
def test_pose_equals_insightface(models, t1: np.ndarray) -> None:
    path = models[("landmark_3d_68", True)]
    runner = _runner(path, "landmark_3d_68", True, meanshape_path=shared_file("data/landmarks/meanshape_68.pkl"))
    faces = [Face(bbox=b, score=0.9) for b in T1_BOXES]
    runner.annotate(t1, faces)
    theirs_points, theirs_poses = _oracle_landmarks(path, t1, T1_BOXES)
    for face, pts, p in zip(faces, theirs_points, theirs_poses):
        np.testing.assert_allclose(face.landmark_3d_68, pts, atol=1e-3)
        assert face.pose is not None and face.pose.dtype == np.float32
        np.testing.assert_allclose(face.pose, p, atol=1e-3)


def test_decoding_maps_crop_back_to_image() -> None:
    # Independent of the model: output 0 is the crop centre = the box centre; z = 0.
    box = np.array([200.0, 100.0, 300.0, 260.0], np.float32)  # centre (250, 180), side 160
    matrix = bbox_crop_transform(box, 192)
    zero = decode_landmarks(np.zeros(3309, np.float32), matrix, 192, 68)
    assert zero.shape == (68, 3)
    np.testing.assert_allclose(zero, np.tile([250.0, 180.0, 0.0], (68, 1)), atol=1e-3)
    # Output +1 is the crop's far corner: centre + half the crop (= 0.75 * side) in image pixels;
    # z = 1 is 96 crop px = 120 image px.
    ones = decode_landmarks(np.ones(212, np.float32), matrix, 192, 106)
    np.testing.assert_allclose(ones, np.tile([250.0 + 120.0, 180.0 + 120.0], (106, 1)), atol=1e-3)
    z = decode_landmarks(np.concatenate([np.zeros(3306), [0.0, 0.0, 1.0]]).astype(np.float32), matrix, 192, 68)
    assert z[-1, 2] == pytest.approx(120.0, abs=1e-3) and np.all(z[:-1, 2] == 0)
    # Only the LAST lmk_num rows are kept (1k3d68 outputs 1103 points).
    marked = np.zeros((1103, 3), np.float32)
    marked[-68:, 0] = 0.5
    kept = decode_landmarks(marked.reshape(-1), matrix, 192, 68)
    np.testing.assert_allclose(kept[:, 0], 250.0 + 0.5 * 120.0, atol=1e-3)
    with pytest.raises(ModelError):
        decode_landmarks(np.zeros(100, np.float32), matrix, 192, 106)


def test_batched_across_images_with_one_run_per_chunk(models, t1: np.ndarray) -> None:
    path = models[("landmark_2d_106", True)]
    runner = _runner(path, "landmark_2d_106", True, batch_size=5)
    calls: list[int] = []
    original = runner.session.run

    def counting(feeds, output_names=None):
        calls.append(len(next(iter(feeds.values()))))
        return original(feeds, output_names)

    runner.session.run = counting  # type: ignore[method-assign]
    small = cv2.resize(t1, (640, 443))
    boxes_small = T1_BOXES * 0.5
    result = runner.predict_batch([t1, small, t1], [T1_BOXES, boxes_small, np.zeros((0, 4))])
    assert calls == [5, 5, 2]
    assert [r.shape for r in result] == [(6, 106, 2), (6, 106, 2), (0, 106, 2)]
    one = _runner(path, "landmark_2d_106", True, batch_size=1)
    for box, pts in zip(boxes_small, result[1]):
        np.testing.assert_allclose(one.predict(small, box[None])[0], pts, atol=1e-4)


def test_annotate_2d_and_errors(models, t1: np.ndarray) -> None:
    path2 = models[("landmark_2d_106", True)]
    runner = _runner(path2, "landmark_2d_106", True)
    faces = [Face(bbox=b, score=0.9) for b in T1_BOXES[:2]]
    runner.annotate(t1, faces)
    np.testing.assert_allclose(faces[1].landmark_2d_106, runner.predict(t1, T1_BOXES[1:2])[0])
    assert faces[0].pose is None and faces[0].landmark_3d_68 is None
    path3 = models[("landmark_3d_68", True)]
    with pytest.raises(ModelError):  # a 2D card on a 3D model
        _runner(path3, "landmark_2d_106", True)
    with pytest.raises(ConfigError):
        LandmarkRunner.from_card(
            default_landmark_card(path2, "landmark_2d_106").with_overrides(task="genderage"), path2
        )
    with pytest.raises(ModelError):  # a 96x96 attribute model is not a 192 landmark model per its card
        other = build_genderage(path2.parent / "ga.onnx")
        LandmarkRunner.from_card(default_landmark_card(other, "landmark_2d_106", input_size=(192, 192)), other)
