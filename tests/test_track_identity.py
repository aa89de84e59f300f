"""Per-track identity with real embeddings from the default (open) pack, and InsightFace Server's event rules."""

from __future__ import annotations

import numpy as np
import pytest

from cli_helpers import link_or_copy
from facelab.errors import ConfigError
from facelab.track.events import EventPolicy, PresenceMonitor, Sighting
from facelab.track.identity import (
    Candidate,
    IdentityConfig,
    ReferenceMatcher,
    TrackIdentity,
    decide,
    default_margin,
    resolve_rules,
)
from video_scenes import analyzer, photo


@pytest.fixture(scope="module")
def fa():
    return analyzer("open", ("recognition",))


@pytest.fixture(scope="module")
def embeddings(fa):
    """Normalised embeddings and quality of the main face of some photos of A, B and C."""
    out = {}
    for person, ks in (("A", (0, 3)), ("B", (0,)), ("C", (0,))):
        for k in ks:
            face = fa.analyze(photo(person, k), max_num=1, metric="max")[0]
            out[(person, k)] = (face.normed_embedding, face.quality.score)
    return out


@pytest.fixture(scope="module")
def matcher(fa, tmp_path_factory):
    refs = tmp_path_factory.mktemp("refs")
    link_or_copy(photo("A", 1), refs / "A" / "a1.jpg")
    link_or_copy(photo("A", 2), refs / "A" / "a2.jpg")
    link_or_copy(photo("B", 1), refs / "B" / "b1.jpg")
    link_or_copy(photo("D", 0), refs / "D.jpg")  # a loose file is a person named by its stem
    return ReferenceMatcher.from_folder(fa, refs)


def test_reference_folder_and_search(matcher, embeddings):
    assert sorted(matcher.person_ids) == ["A", "B", "D"]
    assert len(matcher.matrix) == 4 and matcher.dim == 128
    assert matcher.threshold == pytest.approx(0.923)  # the open pack's cosine threshold
    for person in ("A", "B"):
        top = matcher.search(embeddings[(person, 0)][0][None, :], top_k=2)[0]
        assert [c.person_id for c in top][0] == person and len(top) == 2
        assert top[0].score > top[1].score


def test_track_confirms_a_known_person_after_three_samples(matcher, embeddings):
    threshold, margin = resolve_rules(IdentityConfig(), matcher, None)
    assert margin == pytest.approx(default_margin(threshold)) == pytest.approx(0.1 * (1 - 0.923))
    ident = TrackIdentity(threshold, margin)
    (e0, q0), (e3, q3) = embeddings[("A", 0)], embeddings[("A", 3)]
    decisions = [ident.add_sample(e, q, t, matcher) for t, (e, q) in enumerate([(e0, q0), (e3, q3), (e0, q0)])]
    assert all(d.person_id == "A" for d in decisions)
    assert [ident.confirmed is not None for _ in range(1)] == [True]
    assert ident.status == "matched" and ident.confirmed.person_id == "A" and not ident.conflict
    assert len(ident.samples) == 3
    # after two samples the track was still pending
    early = TrackIdentity(threshold, margin)
    early.add_sample(e0, q0, 0.0, matcher)
    early.add_sample(e3, q3, 0.1, matcher)
    assert early.status == "pending"


def test_unknown_face_and_low_quality_samples(matcher, embeddings):
    threshold, margin = resolve_rules(IdentityConfig(), matcher, None)
    ident = TrackIdentity(threshold, margin)
    e, q = embeddings[("C", 0)]
    for t in range(3):
        assert ident.add_sample(e, q, float(t), matcher).person_id is None
    assert ident.status == "unknown"
    assert ident.add_sample(e, 0.1, 5.0, matcher) is None  # below min_quality 0.25: not used
    assert len(ident.samples) == 3


def test_two_people_on_one_track_is_a_conflict(matcher, embeddings):
    threshold, margin = resolve_rules(IdentityConfig(max_samples=1), matcher, None)
    ident = TrackIdentity(threshold, margin, IdentityConfig(max_samples=1))
    for t in range(3):
        ident.add_sample(*embeddings[("A", 0)], float(t), matcher)
    assert ident.status == "matched"
    for t in range(3, 6):
        ident.add_sample(*embeddings[("B", 0)], float(t), matcher)
    assert ident.conflict and ident.status == "conflict" and ident.history == ["A", "B"]


def test_template_is_quality_weighted():
    ident = TrackIdentity(0.5, 0.05, IdentityConfig(max_samples=2))
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    ident.samples = [(a, 0.9, 0.0), (b, 0.3, 1.0)]
    t = ident.template()
    assert t[0] == pytest.approx(0.9 / np.hypot(0.9, 0.3))
    # the lowest-quality sample is the one dropped when full
    m = ReferenceMatcher({"x": ("X", a[None])}, threshold=0.5)
    ident.add_sample(np.array([1.0, 0.1]), 0.8, 2.0, m)
    assert sorted(s[1] for s in ident.samples) == [0.8, 0.9]


def test_decide_needs_threshold_and_margin():
    cands = [Candidate("a", "A", 0.6), Candidate("b", "B", 0.58)]
    assert decide(cands, 0.5, 0.05).person_id is None  # too close to the runner-up
    assert decide(cands, 0.5, 0.01).person_id == "a"
    assert decide(cands, 0.7, 0.0).person_id is None  # below the threshold
    assert decide([Candidate("a", "A", 0.6)], 0.5, 0.5).person_id == "a"  # no runner-up
    assert decide([], 0.5, 0.0).person_id is None
    with pytest.raises(ConfigError, match="threshold"):
        resolve_rules(IdentityConfig(), None, None)
    with pytest.raises(ConfigError, match="confirm_frames"):
        IdentityConfig(confirm_frames=0)


def test_reference_folder_errors(fa, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ReferenceMatcher.from_folder(fa, tmp_path / "missing")
    with pytest.raises(ConfigError, match="no photos"):
        ReferenceMatcher.from_folder(fa, tmp_path)
    (tmp_path / "E").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "E" / "blank.png"), np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(ConfigError, match="no face found"):
        ReferenceMatcher.from_folder(fa, tmp_path)
    with pytest.raises(ConfigError, match="different sizes"):
        ReferenceMatcher({"a": ("A", np.ones((1, 4))), "b": ("B", np.ones((1, 3)))})


def _s(track, person=None, confirmed=True):
    return Sighting(track, confirmed, person, person, 0.9 if person else None)


def test_events_enter_exit_absence_and_cooldown():
    mon = PresenceMonitor(EventPolicy(absence_timeout=3.0, cooldown=10.0))
    assert mon.update(0.0, [_s(1, confirmed=False)]) == []  # pending: no event yet
    ev = mon.update(0.5, [_s(1, "ann")])
    assert [(e.type, e.person_id, e.track_id) for e in ev] == [("person_enter", "ann", 1)]
    assert mon.update(3.4, []) == []  # 2.9 s without a sighting
    ev = mon.update(3.5, [])
    assert [(e.type, e.time, e.last_seen) for e in ev] == [("person_exit", 3.5, 0.5)]
    # the same person back on a new track within the 10 s cooldown: no second enter...
    assert mon.update(5.0, [_s(2, "ann")]) == []
    # ...but a new enter once the cooldown has passed (and track 2 has left, unannounced or not)
    ev = mon.update(20.0, [_s(3, "ann")])
    assert [(e.type, e.track_id) for e in ev] == [("person_enter", 3), ("person_exit", 2)]


def test_events_identity_change_and_unknown():
    mon = PresenceMonitor(EventPolicy(cooldown=0.0))
    assert [e.type for e in mon.update(0.0, [_s(1)])] == ["unknown_enter"]
    ev = mon.update(1.0, [_s(1, "bob")])  # the track's confirmed identity changed
    assert [(e.type, e.person_id) for e in ev] == [("unknown_exit", None), ("person_enter", "bob")]
    assert [e.type for e in mon.finish(2.0)] == ["person_exit"]
    quiet = PresenceMonitor(EventPolicy(emit_unknown=False))
    assert quiet.update(0.0, [_s(1)]) == [] and quiet.finish(1.0) == []
    with pytest.raises(ConfigError):
        EventPolicy(absence_timeout=0)
