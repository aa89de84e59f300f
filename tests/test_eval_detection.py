"""General detection AP on dlib's hand-labelled VOC faces."""

import numpy as np
import pytest

from facelab.eval.detection_ap import detection_ap, read_dlib_xml
from shared_data import require_module, shared_file


def test_read_dlib_xml():
    gt = read_dlib_xml(shared_file("data/detection/dlib_faces/testing.xml"))
    assert sum(len(g.boxes) for g in gt.values()) == 25
    # <box top='181' left='274' width='52' height='53'/> is the first box of 2008_002470.jpg
    assert gt["2008_002470.jpg"].boxes[0].tolist() == [274.0, 181.0, 326.0, 234.0]
    train = read_dlib_xml(shared_file("data/detection/dlib_faces/training.xml"))
    assert sum(len(g.boxes) for g in train.values()) == 18


def test_ground_truth_fed_back_and_shifted():
    gt = read_dlib_xml(shared_file("data/detection/dlib_faces/testing.xml"))
    perfect = {k: np.c_[g.boxes, np.linspace(1, 0.5, len(g.boxes))] for k, g in gt.items()}
    r = detection_ap(gt, perfect)
    assert (r.ap, r.recall, r.precision) == (1.0, 1.0, 1.0)
    # boxes moved far outside the photos overlap nothing: no true positive
    moved = {k: (g.boxes + [5000, 0, 5000, 0], np.ones(len(g.boxes))) for k, g in gt.items()}
    r = detection_ap(gt, moved)
    assert (r.ap, r.tp, r.n_det) == (0.0, 0, 25)
    # half-width shift: IoU with its own box is (w/2 * h) / (3/2 * w * h) = 1/3 < 0.5, and a neighbour overlaps less
    half = {
        k: (
            g.boxes
            + np.c_[
                (g.boxes[:, 2] - g.boxes[:, 0]) / 2,
                0 * g.boxes[:, 0],
                (g.boxes[:, 2] - g.boxes[:, 0]) / 2,
                0 * g.boxes[:, 0],
            ],
            np.ones(len(g.boxes)),
        )
        for k, g in gt.items()
    }
    assert detection_ap(gt, half).tp == 0


@pytest.mark.slow
def test_real_detector_on_dlib_faces():
    require_module("onnxruntime")
    from facelab.detection import create_detector
    from facelab.io.image import load_image

    det = create_detector(shared_file("models/insightface/det_500m.onnx"))
    folder = shared_file("data/detection/dlib_faces")
    gt = read_dlib_xml(folder / "testing.xml")
    found = {name: det.detect(load_image(folder / name)).det for name in gt}
    found["dogs.jpg"] = det.detect(load_image(folder / "dogs.jpg")).det  # no face: any box is a false positive
    r = detection_ap(gt, found)
    # loose sanity bounds for a real detector on 25 easy, hand-labelled faces
    assert r.recall >= 0.9 and r.ap >= 0.85
