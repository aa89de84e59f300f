"""Mask planning over a whole video (interpolation, look-back, hold, borders, cuts) and the redaction modes."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.ops.redact import REDACTION_MODES, redact, scale_boxes
from facelab.track.identity import Decision, TrackIdentity
from facelab.track.plan import MaskPlanConfig, plan_masks, should_mask

NO_GROWTH = MaskPlanConfig(lookback=0.0, hold=0.0, growth=0.0)


def _boxes(plan, frame, track=None):
    return [np.array(b.box) for b in plan[frame] if track is None or b.track_id == track]


def test_interpolation_between_detections():
    obs = [(0, np.array([0, 0, 40, 40.0])), (4, np.array([40, 0, 80, 40.0]))]
    plan = plan_masks(6, {1: obs}, fps=10, detect_every=4, config=NO_GROWTH)
    np.testing.assert_allclose(_boxes(plan, 2, 1)[0], [20, 0, 60, 40])
    assert [b.source for b in plan[1]] == ["interpolated"] and [b.source for b in plan[4]] == ["detected"]
    # detect_every - 1 frames are always held, even with hold=0, moving on at the last velocity
    np.testing.assert_allclose(_boxes(plan, 5, 1)[0], [50, 0, 90, 40])
    grown = plan_masks(6, {1: obs}, fps=10, detect_every=4, config=MaskPlanConfig(growth=0.1))
    np.testing.assert_allclose(_boxes(grown, 2, 1)[0], [16, -4, 64, 44])  # 2 frames from a detection: +20 %
    # a jumpy last step is clamped: at most a quarter of the box size per frame
    jumpy = [(0, np.array([0, 0, 10, 10.0])), (1, np.array([10, 0, 20, 10.0]))]
    np.testing.assert_allclose(
        _boxes(plan_masks(3, {1: jumpy}, fps=10, config=MaskPlanConfig(lookback=0, hold=0.1, growth=0)), 2)[0],
        [12.5, 0, 22.5, 10],
    )


def test_lookback_and_hold_follow_the_motion():
    obs = [(10, np.array([100, 100, 120, 120.0])), (11, np.array([102, 100, 122, 120.0]))]
    cfg = MaskPlanConfig(lookback=0.3, hold=0.2, growth=0.0)
    plan = plan_masks(20, {7: obs}, fps=10, config=cfg)
    assert [f for f in range(20) if plan[f]] == list(range(7, 14))  # 3 frames before, 2 after
    np.testing.assert_allclose(_boxes(plan, 7)[0], [94, 100, 114, 120])
    np.testing.assert_allclose(_boxes(plan, 13)[0], [106, 100, 126, 120])
    assert {plan[7][0].source, plan[13][0].source} == {"lookback", "hold"}


def test_faces_at_the_border_are_covered_up_to_it():
    # a face entering from the right: first seen as a narrow box against the border
    obs = [(5, np.array([180, 50, 200, 110.0])), (6, np.array([170, 50, 200, 110.0]))]
    plan = plan_masks(8, {1: obs}, fps=10, size=(200, 150), config=MaskPlanConfig(lookback=0.3, growth=0.0))
    box = _boxes(plan, 5)[0]
    assert box[2] == 200 and box[0] == pytest.approx(200 - 0.75 * 60)  # widened inwards to a face's aspect
    for f in (2, 3, 4):  # before: held against the border (not moved off-screen), clipped to the frame
        b = _boxes(plan, f)[0]
        assert b[2] == 200 and b[0] <= 155 and b[1] <= 50 and b[3] >= 110


def test_masks_cover_both_shots_around_a_cut_and_no_further():
    old = [(0, np.array([10, 10, 30, 30.0])), (3, np.array([10, 10, 30, 30.0]))]
    new = [(6, np.array([60, 60, 80, 80.0])), (9, np.array([60, 60, 80, 80.0]))]
    cfg = MaskPlanConfig(lookback=10.0, hold=10.0, growth=0.0)
    plan = plan_masks(12, {1: old, 2: new}, fps=1, detect_every=3, cuts=[6], detect_frames=[0, 3, 6, 9], config=cfg)
    # the cut happened on frame 4, 5 or 6: both shots' masks cover 4 and 5, neither crosses further
    assert [sorted(b.track_id for b in plan[f]) for f in range(12)] == [[1]] * 4 + [[1, 2]] * 2 + [[2]] * 6


def test_untracked_detections_are_covered_around_their_frame():
    plan = plan_masks(10, {}, {4: [np.array([0, 0, 5, 5.0])]}, fps=10, detect_every=3, config=NO_GROWTH)
    assert [f for f in range(10) if plan[f]] == [2, 3, 4, 5, 6]
    assert all(b.track_id is None and b.source in ("untracked", "lookback", "hold") for f in (2, 4, 6) for b in plan[f])


def test_should_mask_rules():
    def ident(person, conflict=False):
        t = TrackIdentity(0.5, 0.05)
        t.confirmed = None if person == "pending" else Decision(person, person, 0.9, 0.1)
        t.conflict = conflict
        return t

    assert should_mask(ident("ann")) and should_mask(None)
    assert not should_mask(ident("ann"), keep=["ann"])
    assert should_mask(ident("ann", conflict=True), keep=["ann"])  # any doubt stays hidden
    assert should_mask(ident("pending"), keep=["ann"]) and should_mask(ident(None), keep=["ann"])
    assert should_mask(ident("bob"), only=["bob"]) and not should_mask(ident("ann"), only=["bob"])
    assert should_mask(ident("pending"), only=["bob"]) and not should_mask(ident(None), only=["bob"])
    with pytest.raises(ConfigError):
        should_mask(None, keep=["a"], only=["b"])


@pytest.mark.parametrize("mode", REDACTION_MODES)
def test_redaction_modes_hide_the_scaled_box_only(mode):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    box = np.array([[50, 40, 90, 80]])
    out = redact(image, box, mode, mask_scale=1.5, color=(0, 255, 0))
    assert out is not image
    changed = np.any(out != image, axis=2)
    x1, y1, x2, y2 = scale_boxes(box, 1.5)[0]
    np.testing.assert_allclose([x1, y1, x2, y2], [40, 30, 100, 90])
    assert not changed[:29].any() and not changed[91:].any()
    assert not changed[:, :39].any() and not changed[:, 101:].any()
    centre = changed[45:75, 55:85]
    assert centre.mean() > 0.95  # the face itself is changed
    region = out[30:90, 40:100].astype(float)
    if mode == "solid":
        assert (region == (0, 255, 0)).all()
    if mode in ("blur", "ellipse"):  # detail is gone: neighbouring pixels are close
        assert np.abs(np.diff(out[50:70, 60:80].astype(float), axis=1)).mean() < 10
    if mode == "mosaic":
        assert len(np.unique(out[30:90, 40:100].reshape(-1, 3), axis=0)) <= 64
    if mode == "ellipse":
        assert not changed[30, 40] and not changed[89, 99]  # corners of the box stay as they were


def test_redaction_clips_and_checks_its_arguments():
    image = np.full((50, 50, 3), 200, np.uint8)
    out = redact(image, [[-20, -20, 10, 10], [60, 60, 90, 90]], "solid", mask_scale=1.0)
    assert (out[:10, :10] == 0).all() and (out[10:, 10:] == 200).all()
    same = redact(image, np.zeros((0, 4)), "blur")
    assert np.array_equal(same, image)
    with pytest.raises(ConfigError, match="unknown anonymisation mode"):
        redact(image, [[0, 0, 5, 5]], "pixelate")
    with pytest.raises(ConfigError, match="mask_scale"):
        redact(image, [[0, 0, 5, 5]], "blur", mask_scale=0)
    inplace = image.copy()
    assert redact(inplace, [[0, 0, 5, 5]], "solid", inplace=True) is inplace
