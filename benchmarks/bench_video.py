"""Video anonymisation: facelab (``--detect-every 1`` and ``3``) vs deface 1.5.0 on a 720p clip with ground truth.

The clip is generated from the shared photos by ``tests/video_scenes.py`` (true boxes from the
open pack's default detector, MTCNN + MMOD, on the stills, pushed through known motion): two shots
of 3 s at 30 fps, 1280x720,
with faces panning and zooming, entering and leaving at the borders, a 5-frame occlusion, small
faces and a cut, plus an AAC audio track. Every tool runs as a subprocess (its CLI, end-to-end
wall time, so model loading counts), on the 2 CPU cores of this machine.

Columns: end-to-end fps; leaked frames (frames where a visible true face is less than 95 %
covered by the mask) and leaked face-frames; for facelab, MOTA / IDF1 / ID switches of its tracks
(the boxes file: track boxes per frame, IoU >= 0.3 to a true box; motmetrics), and whether the
audio came through bit for bit. Each configuration runs once, with solid masks so that coverage
can be measured on the pixels (facelab: ``--mode solid --color 0,255,0``; deface:
``--replacewith solid --boxes``, black, its one fill colour); everything else is each tool's
default (detector threshold, mask scale 1.3, libx264 at its default preset). Drawing a solid box
instead of a blur changes the time by a millisecond or so per frame.

deface lives in its own venv (it needs ``opencv-python``, which must not meet facelab's
``opencv-python-headless``)::

    python3 -m venv /tmp/deface-venv && /tmp/deface-venv/bin/pip install deface==1.5.0 onnx onnxruntime
    pip install motmetrics==1.4.0          # into facelab's venv, for MOTA/IDF1
    python benchmarks/bench_video.py [--seconds 6] [--deface /tmp/deface-venv/bin/deface] [--skip-open]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from shared_data import shared_root  # noqa: E402 - the tests' one way to ../shared ($FACELAB_SHARED honoured)
from video_scenes import YUNET as _YUNET  # noqa: E402

YUNET = shared_root() / _YUNET
GREEN = (0, 255, 0)
BLACK = (0, 0, 0)


def build_scene(seconds: float):
    from video_scenes import Actor, Scene, linear, photo

    fps, w, h = 30.0, 1280, 720
    n = int(round(seconds * fps))
    half = n // 2
    q = n // 10
    actors = [
        # shot 1: A pans right and zooms in; B enters from the right; C is small and still
        Actor("A", photo("A"), linear(0, half - 1, (200, 260, 130), (760, 240, 180)), shot=0),
        Actor("B", photo("B"), linear(q, half - 1, (w + 80, 470, 120), (1010, 480, 125)), shot=0),
        Actor("C", photo("C"), linear(0, half - 1, (1150, 110, 60), (1140, 115, 60)), shot=0),
        # shot 2: D enters from the left and crosses; A small at the far right; B leaves at the bottom
        Actor("D", photo("D"), linear(half, n - 1, (-70, 300, 140), (620, 320, 150)), shot=1),
        Actor("A", photo("A", 3), linear(half, n - 1, (1120, 200, 55), (1110, 205, 58)), shot=1),
        Actor("B", photo("B", 2), linear(half + q, n - 1, (300, 560, 110), (330, h + 90, 110)), shot=1),
    ]
    occl_mid = half // 2
    a_mid = linear(0, half - 1, (200, 260, 130), (760, 240, 180))(occl_mid)
    bar = (int(a_mid[0] - 140), 60, int(a_mid[0] + 140), 460)
    return Scene(w, h, fps, n, actors, cuts=[half], occluders=[(occl_mid - 2, occl_mid + 2, bar)])


def leaks(out_path: Path, truth, colour) -> tuple[int, int]:
    from video_scenes import decode_frames, leaked_frames

    frames = decode_frames(out_path)
    assert len(frames) == len(truth), (out_path, len(frames), len(truth))
    bad = leaked_frames(frames, truth, colour)
    return len({f for f, _, _ in bad}), len(bad)


def mot(boxes_json: Path, truth) -> dict[str, float] | None:
    try:
        import motmetrics as mm
    except ImportError:
        return None
    from facelab.ops.boxes import iou_matrix

    doc = json.loads(boxes_json.read_text())
    acc = mm.MOTAccumulator(auto_id=True)
    for faces, entry in zip(truth, doc["frames"]):
        gt = [f for f in faces if f.visible]
        hyp = {}
        for b in entry["boxes"]:
            if b["track_id"] is not None and b["track_id"] not in hyp:
                hyp[b["track_id"]] = b["box"]
        g = np.array([f.box for f in gt]).reshape(-1, 4)
        hb = np.array(list(hyp.values())).reshape(-1, 4)
        dist = 1.0 - iou_matrix(g, hb)
        dist[dist > 0.7] = np.nan  # IoU below 0.3: no match (MMOD truth vs other detectors' extents)
        acc.update([ord(f.person) for f in gt], list(hyp), dist)  # motmetrics wants numeric ids
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches"], name="x")
    return {k: float(summary[k].iloc[0]) for k in ("mota", "idf1", "num_switches")}


def audio_packets(path: Path):
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [(bytes(p), p.pts) for p in c.demux(c.streams.audio[0]) if p.size]


def run(cmd: list, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="clip length (two shots of half each)")
    parser.add_argument("--deface", default="/tmp/deface-venv/bin/deface", help="deface's console script")
    parser.add_argument("--skip-open", action="store_true", help="skip the open pack's own (slow) MMOD detector")
    parser.add_argument("--workdir", default=None, help="keep the clip and outputs here")
    args = parser.parse_args()

    from video_scenes import gt_analyzer, render, video_home, write_clip

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-video-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scene = build_scene(args.seconds)
    frames, truth = render(scene, gt_analyzer())
    clip = work / "clip720p.mp4"
    write_clip(clip, frames, scene.fps)
    n = len(frames)
    visible = sum(f.visible for faces in truth for f in faces)
    print(
        f"clip: {scene.width}x{scene.height}, {n} frames at {scene.fps:g} fps, {visible} visible true faces "
        f"({len({f.person for fs in truth for f in fs})} people, 1 cut, one 5-frame occlusion); "
        f"made in {time.perf_counter() - t0:.1f} s; CPU cores: {os.cpu_count()}, shared machine",
        flush=True,
    )
    env = {**os.environ, "FACELAB_HOME": str(video_home()), "PYTHONPATH": str(ROOT / "src")}
    facelab = [sys.executable, "-m", "facelab", "video", "anonymize"]
    rows = []
    detectors = [("YuNet", ["--detector", YUNET])]
    if not args.skip_open:
        detectors.append(("open pack default (MTCNN+MMOD)", []))
    for name, det in detectors:
        for every in (1, 3):
            out, boxes = work / f"fl_{name[:4]}_{every}.mp4", work / f"fl_{name[:4]}_{every}.json"
            cmd = [*facelab, clip, out, *det, "--detect-every", str(every), "--threads", "2", "--no-progress"]
            seconds = run([*cmd, "--mode", "solid", "--color", "0,255,0", "--boxes-out", boxes], env)
            lf, lff = leaks(out, truth, GREEN)
            rows.append(
                {
                    "tool": f"facelab {name}, --detect-every {every}",
                    "fps": n / seconds,
                    "leaked_frames": lf,
                    "leaked_faces": lff,
                    "mot": mot(boxes, truth),
                    "audio": audio_packets(out) == audio_packets(clip),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    if Path(args.deface).exists():
        out = work / "deface.mp4"
        seconds = run([args.deface, clip, "-o", out, "--replacewith", "solid", "--boxes"])
        lf, lff = leaks(out, truth, BLACK)
        rows.append(
            {
                "tool": "deface 1.5.0 (CenterFace, thresh 0.2, mask-scale 1.3, every frame)",
                "fps": n / seconds,
                "leaked_frames": lf,
                "leaked_faces": lff,
                "mot": None,
                "audio": bool(audio_packets(out)) and audio_packets(out) == audio_packets(clip),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    else:
        print(f"deface not found at {args.deface}; skipped", flush=True)

    print()
    head = f"| tool | fps (end to end) | leaked frames / {n} | leaked face-frames / {visible} | MOTA | IDF1 | ID sw. |"
    print(head + " audio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["mot"]
        mot_cells = "n/a | n/a | n/a" if m is None else f"{m['mota']:.3f} | {m['idf1']:.3f} | {int(m['num_switches'])}"
        audio = "bit-identical" if r["audio"] else "dropped"
        print(f"| {r['tool']} | {r['fps']:.1f} | {r['leaked_frames']} | {r['leaked_faces']} | {mot_cells} | {audio} |")


if __name__ == "__main__":
    main()
