"""Hand-computed checks of the verification, calibration and detection metrics."""

import json

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.eval.calibration import calibrate, load_calibration, save_calibration
from facelab.eval.detection_ap import BoxGT, detection_ap
from facelab.eval.metrics import (
    eer,
    kfold_accuracy,
    kfold_splits,
    roc_auc,
    roc_curve,
    tar_at_far,
    tar_at_far_closest,
)
from facelab.eval.verification import evaluate_embeddings
from facelab.eval.widerface import voc_ap


def test_kfold_splits_match_sklearn_layout():
    # KFold(3) on 10 items: sizes 4, 3, 3, contiguous
    tests = [t.tolist() for _, t in kfold_splits(10, 3)]
    assert tests == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    train0 = kfold_splits(10, 3)[0][0].tolist()
    assert train0 == [4, 5, 6, 7, 8, 9]


def test_kfold_accuracy_hand_computed():
    # 4 folds of 2 pairs (genuine, impostor). Distances chosen so each fold's training threshold is known.
    dist = np.array([0.50, 1.50, 0.60, 1.40, 0.70, 1.30, 1.35, 1.20])
    same = np.array([1, 0, 1, 0, 1, 0, 1, 0], bool)
    r = kfold_accuracy(dist, same, n_folds=4)
    grid = np.arange(0, 4, 0.01)  # the protocol's thresholds; grid[70] is 0.7000000000000001, just above 0.70
    # Folds 1, 2, 4: the training genuine pairs reach 0.70 (and 1.35, which no threshold can save without
    # accepting impostors), so the first best threshold is the first grid value above 0.70: grid[70].
    # Fold 3 (pairs 4, 5) held out: training genuine 0.50, 0.60 -> first grid value above 0.60: grid[61].
    assert r.fold_thresholds.tolist() == [grid[70], grid[70], grid[61], grid[70]]
    # Fold 3: genuine 0.70 >= 0.61 is rejected -> 1/2. Fold 4: genuine 1.35 rejected -> 1/2.
    assert r.fold_accuracies.tolist() == [1.0, 1.0, 0.5, 0.5]
    assert r.accuracy == pytest.approx(0.75)
    assert r.accuracy_std == pytest.approx(0.25)


def test_kfold_explicit_folds():
    dist = np.array([0.1, 3.0, 0.2, 2.5])
    same = np.array([True, False, True, False])
    r = kfold_accuracy(dist, same, folds=[0, 1, 0, 1])
    # fold 0 = pairs 0, 2 (genuine), trained on impostors only -> threshold 0 rejects all -> 0.0
    # fold 1 = pairs 1, 3 (impostors), trained on genuine only -> threshold 0.21 -> both impostors rejected -> 1.0
    assert r.fold_accuracies.tolist() == [0.0, 1.0]
    assert r.fold_thresholds.tolist() == [0.0, np.arange(0, 4, 0.01)[21]]


def test_auc_eer_tar_hand_computed():
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.3, 0.85, 0.6, 0.2, 0.1]
    # genuine > impostor pairs: 0.9 beats 4, 0.8 beats 3, 0.7 beats 3, 0.3 beats 2 -> 12 of 16
    assert roc_auc(labels, scores) == pytest.approx(12 / 16)
    # at t = 0.7: FRR = 1/4 (0.3), FAR = 1/4 (0.85)
    assert eer(labels, scores) == (pytest.approx(0.25), pytest.approx(0.7))
    res = tar_at_far(labels, scores, fars=[0.25, 0.5, 0.1])
    # FAR 0.25: one impostor may pass; threshold = 2nd best impostor 0.6; genuine > 0.6: 3 of 4
    assert (res[0].tar, res[0].threshold, res[0].far) == (0.75, 0.6, 0.25)
    # FAR 0.5: threshold 0.2 -> all 4 genuine above
    assert (res[1].tar, res[1].threshold, res[1].far) == (1.0, 0.2, 0.5)
    assert res[2].status == "insufficient impostors" and res[2].tar is None


def test_auc_with_ties_counts_half():
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5
    assert roc_auc([1, 1, 0], [0.5, 0.7, 0.5]) == pytest.approx((0.5 + 1) / 2)


def test_eer_interpolates_between_points():
    # t=0.5: FAR 1/2 (imp 0.6), FRR 0; t=0.6: FAR 1/2, FRR 1/2 -> crossing exactly at 0.5 rate
    assert eer([1, 1, 0, 0], [0.5, 0.9, 0.6, 0.1])[0] == pytest.approx(0.5)
    # genuine {0.8}, impostor {0.6}: at t=0.6 FRR 0 < FAR 1; at t=0.8 FRR 0 = FAR 0 -> EER 0
    assert eer([1, 0], [0.8, 0.6])[0] == 0.0


def test_roc_curve_and_closest_tar_like_sklearn():
    fpr, tpr, thr = roc_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thr[0] == np.inf and thr[1:].tolist() == [0.9, 0.8, 0.7, 0.1]
    # collinear middle point of three equal steps is dropped: scores 4..1 all impostor then genuine
    fpr, tpr, _ = roc_curve([0, 0, 0, 1], [4, 3, 2, 1])
    assert fpr.tolist() == [0.0, 1 / 3, 1.0, 1.0]
    assert tar_at_far_closest([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], fars=[0.4, 0.01]) == {0.4: 0.5, 0.01: 0.0}


def test_bad_inputs_raise():
    with pytest.raises(ConfigError):
        roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ConfigError):
        tar_at_far([1, 0], [0.1])
    with pytest.raises(ConfigError):
        kfold_accuracy([0.1, 0.2], [1, 0], n_folds=10)


def test_evaluate_embeddings_perfect_separation():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 8))
    e1 = np.repeat(base, 2, axis=0)[:40]
    e2 = e1.copy()
    same = np.tile([True, False], 20)
    e2[~same] = -e1[~same]  # impostors opposite: cosine -1, distance 4
    r = evaluate_embeddings(e1, e2, same)
    assert r.accuracy == 1.0 and r.accuracy_std == 0.0
    assert r.auc == 1.0 and r.eer == 0.0
    d = r.to_dict()
    for key in ("accuracy", "accuracy_std", "auc", "eer", "best_threshold", "tar_at_far"):
        assert key in d
    assert d["tar_at_far"]["0.1"]["tar"] == 1.0
    assert d["tar_at_far"]["0.01"]["status"] == "insufficient impostors"


def test_evaluate_embeddings_missing_face_is_rejected():
    e1 = np.array([[1.0, 0.0], [1.0, 0.0], [np.nan, np.nan], [0.0, 1.0]])
    e2 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    r = evaluate_embeddings(e1, e2, [True, False, True, False], n_folds=1)
    assert r.n_failed == 1
    assert r.scores.tolist() == [1.0, 0.0, -1.0, 0.0]


def test_calibration_threshold_frr_ci_and_json(tmp_path):
    # 10 impostors 0.0..0.9, genuine 0.55, 0.75, 0.95, 0.99
    imp = np.arange(10) / 10
    gen = np.array([0.55, 0.75, 0.95, 0.99])
    scores = np.r_[gen, imp]
    same = np.r_[np.ones(4, bool), np.zeros(10, bool)]
    cal = calibrate(scores, same, far_target=0.2, n_boot=50, seed=3)
    # two impostors may pass (0.9, 0.8): threshold just above 0.7; genuine below it: 0.55 -> FRR 1/4
    assert cal.threshold == pytest.approx(0.7) and cal.threshold > 0.7
    assert cal.far == 0.2 and cal.frr == 0.25
    assert cal.ci["threshold"][0] <= cal.ci["threshold"][1]
    again = calibrate(scores, same, far_target=0.2, n_boot=50, seed=3)
    assert again.ci == cal.ci  # seeded
    path = tmp_path / "cal.json"
    save_calibration(cal, path)
    data = json.loads(path.read_text())
    assert data["metric"] == "cosine" and data["pairs"] == {"genuine": 4, "impostor": 10}
    assert load_calibration(path) == cal.threshold
    with pytest.raises(ConfigError, match="insufficient impostors"):
        calibrate(scores, same, far_target=0.01)
    path.write_text('{"metric": "l2", "threshold": 1}')
    with pytest.raises(ConfigError):
        load_calibration(path)


def test_voc_ap_hand_computed():
    # PR points (0.5, 1.0), (0.5, 0.5), (1.0, 2/3): area = 0.5 * 1 + 0.5 * 2/3
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 1 / 3)


def test_detection_ap_hand_computed_with_ignore():
    gt = {
        "a": BoxGT([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], ignore=[False, False, True]),
        "b": BoxGT([[0, 0, 10, 10]]),
    }
    det = {
        "a": (
            np.array([[0, 0, 10, 10], [0, 0, 10, 10], [40, 40, 50, 50], [20, 21, 30, 31]]),
            np.array([0.9, 0.8, 0.95, 0.5]),
        ),
        "b": np.array([[100, 100, 110, 110, 0.7]]),
    }
    r = detection_ap(gt, det)
    # order: 0.95 (ignored, dropped), 0.9 TP, 0.8 FP (duplicate), 0.7 FP, 0.5 TP (IoU 90/110 > 0.5)
    # recall after each: 1/3, 1/3, 1/3, 2/3 ; precision: 1, 1/2, 1/3, 1/2
    # VOC: envelope 1, 1/2, 1/2, 1/2 -> 1/3 * 1 + 1/3 * 1/2
    assert r.ap == pytest.approx(1 / 3 + 1 / 6)
    assert (r.tp, r.n_det, r.n_gt) == (2, 4, 3)
    assert r.recall == pytest.approx(2 / 3) and r.precision == 0.5
