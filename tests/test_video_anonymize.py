"""Anonymisation of generated videos with ground truth: no leaked frame, audio kept, stable ids, people by name.

The clips are made by :mod:`video_scenes` from deepface's photos (true boxes from the open pack's
MMOD detector on the stills); facelab runs the open pack with YuNet (both from ``../shared``) and
hides faces in solid green, so a frame "leaks" when less than 95 % of a visible true face box is
green in the decoded output.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared_data import require_module

av = require_module("av")

from cli_helpers import assert_clean_error, link_or_copy, run_main  # noqa: E402
from facelab.errors import ConfigError  # noqa: E402
from facelab.track.identity import ReferenceMatcher  # noqa: E402
from facelab.video.anonymize import AnonymizeOptions, anonymize_video, render_video  # noqa: E402
from shared_data import shared_file  # noqa: E402
from video_scenes import (  # noqa: E402
    YUNET,
    analyzer,
    decode_frames,
    leaked_frames,
    make_clip,
    photo,
    video_home,
    write_audio_only,
)

GREEN = (0, 255, 0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def fa():
    return analyzer("yunet")


def _solid(**kw) -> AnonymizeOptions:
    return AnonymizeOptions(mode="solid", color=GREEN, preset="ultrafast", **kw)


def _audio(path):
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts) for p in c.demux(c.streams.audio[0]) if p.size]


def _times(path):
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


@pytest.mark.parametrize("detect_every", [1, 3])
@pytest.mark.parametrize("scene", ["walk", "occlusion", "cut"])
def test_no_true_face_is_ever_visible(scene, detect_every, fa, clips, tmp_path):
    src, frames, truth = make_clip(scene, clips)
    out = tmp_path / "anon.mp4"
    report = anonymize_video(src, out, fa, _solid(detect_every=detect_every), boxes_out=tmp_path / "b.json")
    result = decode_frames(out)
    assert len(result) == len(frames) == report.frames
    visible = sum(f.visible for faces in truth for f in faces)
    assert visible >= 0.9 * len(frames)  # the check below is about real faces (one or two per frame)
    assert leaked_frames(result, truth, GREEN) == []
    assert report.detect_frames == len(range(0, len(frames), detect_every))
    if scene == "walk":  # audio bit for bit, same frame times
        assert _audio(out) == _audio(src) and len(_audio(src)) > 100
        assert _times(out) == _times(src)


@pytest.mark.parametrize("detect_every", [1, 3])
def test_track_id_survives_a_five_frame_occlusion(detect_every, fa, clips, tmp_path):
    src, frames, truth = make_clip("occlusion", clips)
    anonymize_video(src, tmp_path / "o.mp4", fa, _solid(detect_every=detect_every), boxes_out=tmp_path / "b.json")
    doc = json.loads((tmp_path / "b.json").read_text())
    hidden = [i for i, faces in enumerate(truth) if any(f.person == "A" and not f.visible for f in faces)]
    assert len(hidden) == 5
    a_ids = set()
    for i in range(len(frames)):
        for b in doc["frames"][i]["boxes"]:
            if b["source"] == "detected" and b["box"][0] < 280:  # A is on the left half, B on the right
                a_ids.add(b["track_id"])
    assert len(a_ids) == 1, a_ids  # one id for A before and after the occlusion
    assert len(doc["tracks"]) == 2


def test_a_cut_starts_new_tracks_and_masks_do_not_cross_it(fa, clips, tmp_path):
    src, frames, truth = make_clip("cut", clips)
    anonymize_video(src, tmp_path / "c.mp4", fa, _solid(detect_every=3), boxes_out=tmp_path / "b.json")
    doc = json.loads((tmp_path / "b.json").read_text())
    cut = len(frames) // 2
    before = {b["track_id"] for e in doc["frames"][:cut] for b in e["boxes"] if b["source"] == "detected"}
    after = {b["track_id"] for e in doc["frames"][cut:] for b in e["boxes"] if b["source"] == "detected"}
    assert len(before) == 1 and len(after) == 1 and before != after
    carried = {b["track_id"] for e in doc["frames"][cut:] for b in e["boxes"]}
    assert not (carried & before)  # nothing of shot 1 is held into shot 2


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    refs = tmp_path_factory.mktemp("refs")
    link_or_copy(photo("A", 1), refs / "A" / "1.jpg")
    link_or_copy(photo("A", 2), refs / "A" / "2.jpg")
    link_or_copy(photo("B", 1), refs / "B" / "1.jpg")
    return refs


def _visibility(result, frames, truth):
    """Per person: frames where its face is left as in the source, frames where it is green."""
    from video_scenes import covered_fraction

    seen: dict[str, list[int]] = {"A": [0, 0], "B": [0, 0]}
    for out, src, faces in zip(result, frames, truth):
        for f in faces:
            x1, y1, x2, y2 = (int(round(v)) for v in f.box)
            same = np.abs(out[y1:y2, x1:x2].astype(int) - src[y1:y2, x1:x2]).mean() < 4.0
            green = covered_fraction(out, f.box, GREEN) >= 0.95
            seen[f.person][0] += same
            seen[f.person][1] += green
    return seen


@pytest.mark.parametrize(("flag", "hidden"), [("keep", "B"), ("only", "A")])
def test_except_and_only_choose_who_stays_visible(flag, hidden, fa, clips, references, tmp_path):
    src, frames, truth = make_clip("pair", clips)
    matcher = ReferenceMatcher.from_folder(fa, references)
    who = ("A",) if flag == "keep" else ("A",)
    options = _solid(detect_every=2, **{flag: who})
    report = anonymize_video(src, tmp_path / "p.mp4", fa, options, matcher=matcher, boxes_out=tmp_path / "b.json")
    seen = _visibility(decode_frames(tmp_path / "p.mp4"), frames, truth)
    n = len(frames)
    visible = "A" if hidden == "B" else "B"
    assert seen[hidden] == [0, n]  # hidden on every frame
    assert seen[visible] == [n, 0]  # left exactly as it was on every frame
    assert report.tracks == 2 and report.visible_tracks == 1
    doc = json.loads((tmp_path / "b.json").read_text())
    ids = {t["identity"]["person_id"]: t["mask"] for t in doc["tracks"]}
    assert ids == {"A": flag == "only", "B": flag == "keep"}


def test_cli_boxes_out_then_render_an_edited_file(clips, tmp_path, capsys):
    src, frames, truth = make_clip("pair", clips)
    boxes = tmp_path / "boxes.json"
    home = video_home()
    argv = ["video", "anonymize", src, tmp_path / "a.mp4", "--detector", shared_file(YUNET), "--mode", "solid"]
    argv += ["--color", "0,255,0", "--boxes-out", boxes, "--detect-every", "3", "--preset", "ultrafast"]
    import os

    os.environ["FACELAB_HOME"] = str(home)
    try:
        code, out, err = run_main(argv, capsys)
        assert code == 0, err
        assert "2 track(s)" in err and "1 audio stream(s) copied" in err
        doc = json.loads(boxes.read_text())
        assert doc["format"] == "facelab-video-boxes" and doc["video"]["frames"] == len(frames)
        # the edit: leave the right-hand track (B) visible, and hide an extra corner box on frame 0
        right = [t for t in doc["tracks"] if t["track_id"] in _ids_right_of(doc, 240)]
        assert len(right) == 1
        right[0]["mask"] = False
        doc["frames"][0]["boxes"].append({"box": [0, 0, 40, 30]})
        boxes.write_text(json.dumps(doc))
        code, out, err = run_main(["video", "render", src, boxes, tmp_path / "r.mp4", "--preset", "ultrafast"], capsys)
        assert code == 0, err
    finally:
        del os.environ["FACELAB_HOME"]
    result = decode_frames(tmp_path / "r.mp4")
    seen = _visibility(result, frames, truth)
    assert seen["B"] == [len(frames), 0] and seen["A"] == [0, len(frames)]
    assert np.abs(result[0][2:26, 2:36].astype(int) - GREEN).max() < 40  # the added box (x 1.3) is green
    assert np.abs(result[1][2:26, 2:36].astype(int) - frames[1][2:26, 2:36]).mean() < 4.0  # not on frame 1
    assert _audio(tmp_path / "r.mp4") == _audio(src)


def _ids_right_of(doc, x):
    return {b["track_id"] for e in doc["frames"] for b in e["boxes"] if b["box"][0] > x and b["track_id"]}


def test_render_rejects_a_boxes_file_for_another_video(clips, tmp_path):
    src, frames, _ = make_clip("pair", clips)
    doc = {"format": "facelab-video-boxes", "version": 1, "video": {"width": 640, "height": 360, "frames": 5}}
    doc["frames"] = []
    (tmp_path / "b.json").write_text(json.dumps(doc))
    from facelab.errors import VideoError

    with pytest.raises(VideoError, match="boxes are for 640x360"):
        render_video(src, tmp_path / "b.json", tmp_path / "out.mp4")
    doc["video"] = {"width": 480, "height": 270, "frames": 5}
    (tmp_path / "b.json").write_text(json.dumps(doc))
    with pytest.raises(VideoError, match="decoded 24 frames, but the boxes are for 5"):
        render_video(src, tmp_path / "b.json", tmp_path / "out.mp4")
    doc["frames"] = [{"frame": 0, "boxes": [{"box": [10, 10, 5, 20]}]}]
    (tmp_path / "b.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="frame 0, box 0"):
        render_video(src, tmp_path / "b.json", tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]  # nothing half-written


def test_bad_videos_fail_cleanly_and_write_nothing(clips, tmp_path, capsys):
    src, _, _ = make_clip("pair", clips)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 300)
    truncated = tmp_path / "half.mp4"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    tone = write_audio_only(tmp_path / "tone.m4a")
    import os

    os.environ["FACELAB_HOME"] = str(video_home())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    try:
        cases = ((junk, "not a readable video"), (truncated, "not a readable video"), (tone, "no video stream"))
        for bad, needle in cases:
            argv = ["video", "anonymize", bad, out_dir / "x.mp4", "--detector", shared_file(YUNET)]
            code, _, err = run_main(argv, capsys)
            assert code == 2
            assert_clean_error(err, str(bad), needle, command="video anonymize")
        code, _, err = run_main(["video", "anonymize", src, src], capsys)
        assert code == 2 and "is the input" in err
    finally:
        del os.environ["FACELAB_HOME"]
    assert list(out_dir.iterdir()) == []


def test_images_and_folders(fa, tmp_path, capsys):
    import cv2

    from facelab.io.image import load_image

    t1 = shared_file("data/images/t1.jpg")
    folder = tmp_path / "in"
    link_or_copy(t1, folder / "group.jpg")
    link_or_copy(photo("C"), folder / "sub" / "c.jpg")
    import os

    os.environ["FACELAB_HOME"] = str(video_home())
    try:
        argv = ["video", "anonymize", folder, tmp_path / "out", "--detector", shared_file(YUNET), "--mode", "solid"]
        code, _, err = run_main(argv + ["--color", "0,255,0"], capsys)
    finally:
        del os.environ["FACELAB_HOME"]
    assert code == 0, err
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg")) == [
        "group.jpg",
        "sub/c.jpg",
    ]
    original = load_image(t1)
    boxes = fa.detect(original).boxes
    assert 5 <= len(boxes) <= 7
    result = cv2.imread(str(tmp_path / "out" / "group.jpg"))
    from video_scenes import covered_fraction

    for box in boxes:
        assert covered_fraction(result, box, GREEN, tol=80) > 0.95
    assert "6 face(s) hidden" in err or f"{len(boxes)} face(s) hidden" in err


def test_default_pack_detector_on_a_short_clip(clips, tmp_path):
    """The default pack's own detector (dlib MMOD), as on a fresh machine without ../shared models."""
    src, frames, truth = make_clip("pair", clips, width=320, height=180, seconds=1.0)
    fa = analyzer("open", ("detection",))
    report = anonymize_video(src, tmp_path / "d.mp4", fa, _solid(detect_every=3))
    assert report.tracks == 2
    assert leaked_frames(decode_frames(tmp_path / "d.mp4"), truth, GREEN) == []


def test_options_are_checked(fa, clips, tmp_path):
    with pytest.raises(ConfigError, match="unknown anonymisation mode"):
        AnonymizeOptions(mode="pixelate")
    with pytest.raises(ConfigError, match="not both"):
        AnonymizeOptions(keep=("a",), only=("b",))
    src, _, _ = make_clip("pair", clips)
    with pytest.raises(ConfigError, match="reference people or a gallery"):
        anonymize_video(src, tmp_path / "x.mp4", fa, AnonymizeOptions(keep=("A",)))
