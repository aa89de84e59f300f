"""WIDER FACE AP against the real val ground truth, plus the CLI."""

import json

import numpy as np
import pytest

from facelab.cli import main
from facelab.eval.widerface import (
    WiderFaceGT,
    evaluate_widerface,
    load_widerface_gt,
    read_widerface_predictions,
    write_widerface_predictions,
)
from shared_data import require_module, shared_file


@pytest.fixture(scope="module")
def gt():
    require_module("scipy")
    return load_widerface_gt(shared_file("data/detection/widerface_val_gt"))


def _clean_gt_predictions(gt):
    """Every distinct ground-truth box with positive size, score 1."""
    preds = {}
    for e, event in enumerate(gt.events):
        preds[event] = {}
        for name, b in zip(gt.images[e], gt.boxes[e]):
            b = b[(b[:, 2] > 0) & (b[:, 3] > 0)]
            b = np.unique(b, axis=0) if len(b) else b
            preds[event][name] = np.hstack([b, np.ones((len(b), 1))])
    return preds


def test_ground_truth_as_predictions(gt):
    assert len(gt.events) == 61 and gt.n_images == 3226
    r = evaluate_widerface(_clean_gt_predictions(gt), gt)
    assert r.ap["easy"] == 1.0 and r.ap["medium"] == 1.0
    # Two "hard" faces cannot be recalled by any box: an exact duplicate box in
    # 21_Festival_Festival_21_604 and a box of width -2 in 39_Ice_Skating_iceskiing_39_583.
    # Precision stays 1, so AP = recall = (n - 2) / n.
    n = r.n_faces["hard"]
    assert r.ap["hard"] == pytest.approx((n - 2) / n, abs=1e-12)


def test_empty_predictions_give_zero(gt):
    r = evaluate_widerface({}, gt)
    assert r.ap == {"easy": 0.0, "medium": 0.0, "hard": 0.0}


def _reference_ap(preds, gt, setting, iou_t=0.5, n_t=1000):
    """Straightforward re-implementation of the official port's loops (slow, for a few events)."""
    all_scores = [v[:, 4] for ev in preds.values() for v in ev.values() if len(v)]
    lo, hi = min(s.min() for s in all_scores), max(s.max() for s in all_scores)
    pr = np.zeros((n_t, 2))
    count = 0
    for e, event in enumerate(gt.events):
        for j, name in enumerate(gt.images[e]):
            g = gt.boxes[e][j]
            keep = gt.keep[setting][e][j]
            count += len(keep)
            p = preds.get(event, {}).get(name, np.zeros((0, 5))).copy()
            if len(g) == 0 or len(p) == 0:
                continue
            p[:, 4] = (p[:, 4] - lo) / (hi - lo)
            p = p[np.argsort(-p[:, 4], kind="stable")]
            ignore = np.zeros(len(g), int)
            ignore[keep] = 1
            rec = np.zeros(len(g))
            prop = np.ones(len(p))
            pred_recall = np.zeros(len(p))
            for h in range(len(p)):
                px1, py1, px2, py2 = p[h, 0], p[h, 1], p[h, 0] + p[h, 2], p[h, 1] + p[h, 3]
                ov = []
                for k in range(len(g)):
                    gx1, gy1, gx2, gy2 = g[k, 0], g[k, 1], g[k, 0] + g[k, 2], g[k, 1] + g[k, 3]
                    iw = min(px2, gx2) - max(px1, gx1) + 1
                    ih = min(py2, gy2) - max(py1, gy1) + 1
                    if iw <= 0 or ih <= 0:
                        ov.append(0.0)
                        continue
                    inter = iw * ih
                    union = (px2 - px1 + 1) * (py2 - py1 + 1) + (gx2 - gx1 + 1) * (gy2 - gy1 + 1) - inter
                    ov.append(inter / union)
                k = int(np.argmax(ov))
                if ov[k] >= iou_t:
                    if ignore[k] == 0:
                        rec[k] = -1
                        prop[h] = -1
                    elif rec[k] == 0:
                        rec[k] = 1
                pred_recall[h] = np.sum(rec == 1)
            for t in range(n_t):
                thresh = 1 - (t + 1) / n_t
                idx = np.where(p[:, 4] >= thresh)[0]
                if len(idx):
                    r = idx[-1]
                    pr[t, 0] += np.sum(prop[: r + 1] == 1)
                    pr[t, 1] += pred_recall[r]
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = pr[:, 1] / pr[:, 0]
    recall = pr[:, 1] / count
    mrec = np.r_[0.0, recall, 1.0]
    mpre = np.r_[0.0, np.nan_to_num(prec), 0.0]
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def test_random_boxes_match_reference(gt):
    rng = np.random.default_rng(7)
    sub = WiderFaceGT(
        gt.events[:2],
        [x[:6] for x in gt.images[:2]],
        [x[:6] for x in gt.boxes[:2]],
        {s: [x[:6] for x in gt.keep[s][:2]] for s in gt.keep},
    )
    preds = {}
    for e, event in enumerate(sub.events):
        preds[event] = {}
        for name, b in zip(sub.images[e], sub.boxes[e]):
            keep = b[rng.random(len(b)) < 0.7]
            noisy = keep + rng.normal(0, 1.5, keep.shape)
            junk = np.c_[rng.uniform(0, 800, (5, 2)), rng.uniform(3, 60, (5, 2))]
            boxes = np.vstack([noisy, junk])
            preds[event][name] = np.c_[boxes, rng.uniform(0.1, 0.99, len(boxes))]
    r = evaluate_widerface(preds, sub)
    for s in ("easy", "medium", "hard"):
        assert r.ap[s] == pytest.approx(_reference_ap(preds, sub, s), abs=1e-12)
    assert 0 < r.ap["hard"] < 1


def test_prediction_files_round_trip_and_cli(gt, tmp_path):
    preds = _clean_gt_predictions(gt)
    sub = {ev: preds[ev] for ev in gt.events[:3]}
    write_widerface_predictions(tmp_path / "pred", sub)
    back = read_widerface_predictions(tmp_path / "pred")
    assert set(back) == set(sub)
    name = next(iter(sub[gt.events[0]]))
    assert np.allclose(back[gt.events[0]][name], sub[gt.events[0]][name])
    out = tmp_path / "ap.json"
    code = main(
        [
            "eval",
            "widerface",
            "--pred",
            str(tmp_path / "pred"),
            "--gt",
            str(shared_file("data/detection/widerface_val_gt")),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    ref = evaluate_widerface(back, gt)
    for s in ("easy", "medium", "hard"):
        assert data[s] == pytest.approx(ref.ap[s])
        assert 0 < data[s] < 0.2  # only 3 of 61 events predicted
    assert data["missing_images"] == gt.n_images - sum(len(v) for v in sub.values())
