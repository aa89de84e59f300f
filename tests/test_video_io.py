"""Video IO with real encoded files: timestamps, audio copied bit for bit, rotation, errors, fallbacks, live sources."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from shared_data import require_module

av = require_module("av")

from facelab.errors import ConfigError, VideoError  # noqa: E402
from facelab.video.io import OpenCVReader, PyAVReader, VideoWriter, atomic_output, open_video  # noqa: E402
from facelab.video.live import LiveSource, is_live_source  # noqa: E402
from video_scenes import write_audio_only, write_clip  # noqa: E402


def _frames(n: int, w: int = 160, h: int = 96) -> list[np.ndarray]:
    out = []
    for i in range(n):
        img = np.full((h, w, 3), 60, np.uint8)
        img[10:30, (4 * i) % (w - 20) : (4 * i) % (w - 20) + 20] = (0, 200, 255)
        out.append(img)
    return out


def _audio_packets(path: Path) -> list[tuple[bytes, int, int]]:
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts, p.dts) for p in c.demux(c.streams.audio[0]) if p.size]


def _times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


def _copy(src: Path, dst: Path, *, audio: bool = True) -> None:
    reader = PyAVReader(src)
    writer = VideoWriter(dst, reader, audio=audio, preset="ultrafast")
    for frame in reader.frames(audio_sink=writer.mux_audio if audio else None):
        writer.write(frame.image, frame.pts, frame.index)
    writer.close()
    reader.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("io") / "clip.mp4"
    write_clip(path, _frames(30), 15.0)
    return path


def test_reader_info_and_timestamps(clip):
    with open_video(clip) as r:
        assert r.info.backend == "pyav"
        assert (r.info.width, r.info.height, r.info.frames, r.info.audio) == (160, 96, 30, ("aac",))
        assert r.info.fps == pytest.approx(15.0) and r.info.duration == pytest.approx(2.0)
        frames = list(r.frames(want_image=lambda i: i % 3 == 0))
    assert [f.index for f in frames] == list(range(30))
    assert [f.time for f in frames] == pytest.approx([i / 15 for i in range(30)])
    assert all((f.image is not None) == (f.index % 3 == 0) for f in frames)
    assert frames[0].image.shape == (96, 160, 3) and frames[0].image.dtype == np.uint8


def test_audio_is_copied_bit_for_bit_and_times_are_kept(clip, tmp_path):
    out = tmp_path / "copy.mp4"
    _copy(clip, out)
    src_audio, out_audio = _audio_packets(clip), _audio_packets(out)
    assert len(src_audio) > 50
    assert out_audio == src_audio  # bytes, pts and dts of every AAC packet
    assert _times(out) == _times(clip)
    with av.open(str(out)) as c:
        assert c.duration == pytest.approx(2_000_000, abs=70_000)  # within one frame
        assert c.streams.video[0].codec_context.name == "h264"
    # and without audio when asked
    silent = tmp_path / "silent.mp4"
    _copy(clip, silent, audio=False)
    with av.open(str(silent)) as c:
        assert not c.streams.audio and c.streams.video[0].frames == 30


def test_variable_frame_rate_keeps_every_timestamp(tmp_path):
    src = tmp_path / "vfr.mp4"
    times = write_clip(src, _frames(20), 10.0, vfr=True)
    gaps = np.diff(times)
    assert gaps.min() < 0.07 and gaps.max() > 0.13  # really variable
    out = tmp_path / "vfr_out.mp4"
    _copy(src, out)
    assert _times(out) == pytest.approx(times, abs=1e-9)
    assert _audio_packets(out) == _audio_packets(src)


def test_rotated_phone_video_is_read_upright(tmp_path):
    path = tmp_path / "rot.mp4"
    img = np.zeros((96, 160, 3), np.uint8)
    img[:20, :30] = 255  # a mark in the stored frame's top-left corner
    # what a phone held upright writes: show the frame turned 90 degrees clockwise
    write_clip(path, [img] * 4, 10.0, audio=False, rotation=-90)
    with PyAVReader(path) as r:
        assert (r.info.width, r.info.height, r.info.rotation) == (96, 160, 270)
        image = next(iter(r.frames())).image
    assert image.shape == (160, 96, 3)
    ys, xs = np.nonzero(image[..., 0] > 128)
    # turned clockwise, the top-left mark is now top-right, 30 rows tall and 20 columns wide
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (0, 29, 76, 95)
    # the re-encoded video is upright and carries no rotation any more
    copy = tmp_path / "rot_out.mp4"
    _copy(path, copy)
    with PyAVReader(copy) as r:
        assert (r.info.width, r.info.height, r.info.rotation) == (96, 160, 0)


def test_bad_inputs_give_clear_errors(clip, tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        PyAVReader(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01garbage" * 500)
    with pytest.raises(VideoError, match="not a readable video"):
        PyAVReader(junk)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(VideoError, match="not a readable video"):
        PyAVReader(truncated)
    audio_only = write_audio_only(tmp_path / "tone.m4a")
    with pytest.raises(VideoError, match="no video stream .*audio"):
        PyAVReader(audio_only)
    with pytest.raises(ConfigError, match="unknown video backend"):
        open_video(clip, "gstreamer")


def test_atomic_output_leaves_nothing_on_error(clip, tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(VideoError, match="expected 160x96"):
        with atomic_output(target) as temp:
            reader = PyAVReader(clip)
            writer = VideoWriter(temp, reader)
            writer.write(np.zeros((50, 50, 3), np.uint8), 0, 0)
    reader.close()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="does not exist"):
        with atomic_output(tmp_path / "no" / "dir.mp4"):
            pass


def test_opencv_fallback_reads_the_same_frames(clip):
    with OpenCVReader(clip) as r:
        assert r.info.backend == "opencv" and (r.info.width, r.info.height) == (160, 96)
        frames = list(r.frames())
    assert len(frames) == 30
    assert [f.time for f in frames] == pytest.approx([i / 15 for i in range(30)], abs=0.002)
    with PyAVReader(clip) as r:
        ref = [f.image for f in r.frames()]
    assert np.abs(frames[5].image.astype(int) - ref[5]).mean() < 2.0  # same decoded picture


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_live_source_keeps_only_the_newest_frame(tmp_path):
    path = tmp_path / "stream.mp4"
    write_clip(path, _frames(150), 30.0, audio=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/stream.mp4"
        assert is_live_source(url) and is_live_source("rtsp://cam/1") and is_live_source("cam:0")
        assert not is_live_source(str(path))
        delivered = []
        with LiveSource(url) as live:
            for frame in live:
                delivered.append(frame.index)
                time.sleep(0.03)  # a slow consumer: the reader must drop, never queue
            stats = live.stats
    finally:
        server.shutdown()
    assert stats.decoded == 150
    assert stats.skipped > 0 and stats.delivered == len(delivered)
    assert stats.delivered + stats.skipped in (stats.decoded - 1, stats.decoded)
    assert delivered == sorted(set(delivered)) and max(np.diff(delivered)) > 1  # newest first, gaps = drops
    with pytest.raises(VideoError, match="cannot open"):
        LiveSource(f"http://127.0.0.1:{server.server_address[1]}/nothing.mp4", open_timeout=2)


def test_import_facelab_does_not_load_pyav():
    code = (
        "import sys, json, facelab, facelab.video, facelab.track, facelab.cli\n"
        "facelab.cli.build_parser()\n"
        "print(json.dumps(sorted(m for m in ('av', 'scipy') if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
