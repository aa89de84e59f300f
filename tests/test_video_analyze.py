"""``facelab video analyze`` and the frame-by-frame API on generated clips: tracks, identities, events, outputs."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading

import cv2
import numpy as np
import pytest

from shared_data import require_module

av = require_module("av")

from cli_helpers import link_or_copy, run_main  # noqa: E402
from facelab.track.identity import ReferenceMatcher  # noqa: E402
from facelab.video import VideoAnalyzer, iter_video  # noqa: E402
from shared_data import shared_file  # noqa: E402
from video_scenes import YUNET, analyzer, make_clip, photo, video_home  # noqa: E402


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    refs = tmp_path_factory.mktemp("refs")
    link_or_copy(photo("A", 1), refs / "A" / "1.jpg")
    link_or_copy(photo("B", 1), refs / "B" / "1.jpg")
    return refs


@pytest.fixture
def home_env():
    os.environ["FACELAB_HOME"] = str(video_home())
    yield
    del os.environ["FACELAB_HOME"]


def _audio(path):
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts) for p in c.demux(c.streams.audio[0]) if p.size]


def test_frame_by_frame_api_with_identities(clips, references):
    src, frames, truth = make_clip("walk", clips)
    fa = analyzer("yunet")
    matcher = ReferenceMatcher.from_folder(fa, references)
    va = VideoAnalyzer(fa, fps=12.0, detect_every=3, matcher=matcher)
    results = [result for _, result in iter_video(src, va)]
    events = [e for r in results for e in r.events] + va.finish()
    assert len(results) == len(frames)
    assert [r.detected for r in results] == [i % 3 == 0 for i in range(len(frames))]
    assert all(f.state != "detected" for r in results if not r.detected for f in r.faces)
    # one track per person, named after the references
    named = {t.identity.confirmed.person_id: t for t in va.tracks() if t.identity.status == "matched"}
    assert sorted(named) == ["A", "B"] and len(va.tracks()) == 2
    b_first = min(i for i, faces in enumerate(truth) for f in faces if f.person == "B" and f.visible)
    assert named["B"].first_frame >= b_first - 3
    enters = [(e.person_id, e.time) for e in events if e.type == "person_enter"]
    exits = [(e.person_id, e.time) for e in events if e.type == "person_exit"]
    assert [p for p, _ in enters] == ["A", "B"] and sorted(p for p, _ in exits) == ["A", "B"]
    assert enters[1][1] >= b_first / 12.0  # B is announced only once it is there
    assert not [e for e in events if e.type.startswith("unknown")]
    thumb = named["A"].thumbnail
    assert thumb is not None and max(thumb.shape[:2]) <= 128


def test_cli_analyze_writes_lines_summary_thumbnails_and_annotated_video(clips, references, tmp_path, capsys, home_env):
    src, frames, _ = make_clip("pair", clips)
    argv = ["video", "analyze", src, "--detector", shared_file(YUNET), "--references", references]
    argv += ["-o", tmp_path / "frames.jsonl", "--summary", tmp_path / "tracks.json", "--thumbnails", tmp_path / "th"]
    argv += ["--annotated", tmp_path / "annotated.mp4", "--detect-every", "2"]
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    assert "2 track(s), 2 recognised" in err and "person_enter" in err
    lines = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    per_frame = [x for x in lines if "frame" in x]
    assert [x["frame"] for x in per_frame] == list(range(len(frames)))
    assert {f["identity"]["name"] for x in per_frame[6:] for f in x["faces"]} == {"A", "B"}
    assert [x["event"]["type"] for x in lines if "event" in x] == ["person_exit", "person_exit"]
    summary = json.loads((tmp_path / "tracks.json").read_text())
    assert sorted(t["identity"]["person_id"] for t in summary["tracks"]) == ["A", "B"]
    assert [e["type"] for e in summary["events"]].count("person_enter") == 2
    for t in summary["tracks"]:
        thumb = cv2.imread(str(tmp_path / "th" / t["thumbnail"]))
        assert thumb is not None and 40 <= max(thumb.shape[:2]) <= 128
    with av.open(str(tmp_path / "annotated.mp4")) as c:
        drawn = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(drawn) == len(frames)
    assert _audio(tmp_path / "annotated.mp4") == _audio(src)
    assert np.abs(drawn[5].astype(int) - frames[5]).max() > 100  # boxes were drawn


def test_cli_analyze_opencv_backend_and_a_live_http_stream(clips, tmp_path, capsys, home_env):
    src, frames, _ = make_clip("pair", clips)
    argv = ["video", "analyze", src, "--detector", shared_file(YUNET), "--backend", "opencv"]
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert len([x for x in lines if "frame" in x]) == len(frames)
    assert {f["track_id"] for x in lines if "frame" in x for f in x["faces"]} == {1, 2}

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    # a streamable container (MPEG-TS: no seeking, as a camera sends), packets copied from the clip
    stream = tmp_path / "stream.ts"
    with av.open(str(src)) as inp, av.open(str(stream), "w") as ts:
        mapping = {s.index: ts.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux():
            if packet.size and packet.stream.index in mapping:
                packet.stream = mapping[packet.stream.index]
                ts.mux(packet)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/stream.ts"
        argv = ["video", "analyze", url, "--detector", shared_file(YUNET), "--max-seconds", "20"]
        code, out, err = run_main(argv, capsys)
    finally:
        server.shutdown()
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines() if '"frame"' in x]
    assert 1 <= len(lines) <= len(frames)
    assert all(x["detected"] for x in lines)  # live: every delivered (newest) frame is analysed
    assert [x["frame"] for x in lines] == sorted({x["frame"] for x in lines})


def test_a_stream_without_frames_is_an_error(tmp_path, capsys, home_env):
    (tmp_path / "empty.ts").write_bytes(b"")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://user:secret@127.0.0.1:{server.server_address[1]}/missing.ts"
        code, _, err = run_main(["video", "analyze", url, "--detector", shared_file(YUNET)], capsys)
    finally:
        server.shutdown()
    assert code == 2 and "cannot open the live source" in err and "secret" not in err


@pytest.fixture(scope="module")
def gallery_url(tmp_path_factory):
    """A real SQLite gallery with A (two photos) and B (one) enrolled by the open pack's recogniser."""
    from facelab.gallery import Gallery

    url = str(tmp_path_factory.mktemp("gallery") / "people.db")
    fa = analyzer("yunet")
    with Gallery.open(url) as g:
        for person, ks in (("A", (1, 2)), ("B", (1,))):
            result = g.enroll([photo(person, k) for k in ks], fa, name=person)
            assert result.person is not None
    return url


def test_gallery_names_the_tracks_and_chooses_who_stays_visible(clips, gallery_url, tmp_path, capsys, home_env):
    from video_scenes import decode_frames, leaked_frames

    src, frames, truth = make_clip("pair", clips)
    argv = ["video", "analyze", src, "--detector", shared_file(YUNET), "--gallery", gallery_url]
    code, out, err = run_main(argv + ["--summary", tmp_path / "s.json"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert sorted(t["identity"]["name"] for t in summary["tracks"]) == ["A", "B"]
    assert sorted(e["name"] for e in summary["events"] if e["type"] == "person_enter") == ["A", "B"]
    argv = ["video", "anonymize", src, tmp_path / "x.mp4", "--detector", shared_file(YUNET), "--gallery", gallery_url]
    code, _, err = run_main(argv + ["--except", "A", "--mode", "solid", "--color", "0,255,0"], capsys)
    assert code == 0, err
    assert "1 left visible" in err
    result = decode_frames(tmp_path / "x.mp4")
    leaks = leaked_frames(result, truth, (0, 255, 0))
    assert {p for _, p, _ in leaks} == {"A"} and len(leaks) == len(frames)  # A visible on every frame, B never
    code, _, err = run_main(argv + ["--except", "Nobody"], capsys)
    assert code == 2 and "no person 'Nobody'" in err
    assert not (tmp_path / "x2.mp4").exists()


def test_appearance_gate_keeps_another_person_off_a_track(clips):
    """Without cut detection, B (same place, after the cut) continues A's track by IoU; the embedding gate stops it."""
    src, frames, truth = make_clip("cut", clips)
    fa = analyzer("yunet")

    def ids(gate):
        va = VideoAnalyzer(fa, fps=12.0, detect_every=2, appearance_gate=gate, cut_threshold=None)
        per_person: dict[str, set[int]] = {"A": set(), "B": set()}
        for (_, result), faces in zip(iter_video(src, va), truth):
            for f in result.faces:
                if f.state == "detected" and faces:
                    per_person[faces[0].person].add(f.track_id)
        return per_person

    plain = ids(None)
    assert plain["A"] == plain["B"]  # an identity switch: one id for two people
    gated = ids(0.9)  # cosine below 0.9 (the open pack's same-person threshold is 0.923) cannot join
    assert len(gated["A"]) == 1 and len(gated["B"]) == 1 and gated["A"] != gated["B"]
