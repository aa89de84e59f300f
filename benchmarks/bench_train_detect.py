"""Detector training throughput per published variant: steps/s, images/s, peak memory, FLOPs ours vs published.

One training step = forward, the family's loss (SCRFD: ATSS + QFL + DIoU + keypoints; RetinaFace:
IoU matching + OHEM + smooth-L1), backward and an SGD step, on a batch of real photos (dlib's
face photos from ``../shared``, augmented once with the variant's own pipeline at the given size).
Every variant runs in its own subprocess, so its peak memory (``ru_maxrss`` of that process on
CPU; ``torch.cuda.max_memory_allocated`` on CUDA) is its own; the import-only baseline of such a
process is printed too. Timing: median of ``--steps`` steps after ``--warmup`` steps.

Usage:
    python benchmarks/bench_train_detect.py                        # CPU, batch 8, 640x640, all variants
    python benchmarks/bench_train_detect.py --quick                # batch 2, 320x320, 1 timed step
    python benchmarks/bench_train_detect.py --device cuda --amp    # on a GPU (see also gpu_check.py)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("FACELAB_SHARED", ROOT.parent / "shared"))


def make_batch(model, batch: int, size: int):
    """A batch of real photos augmented by the variant's pipeline: ``(images (N, S, S, 3) float32, targets)``."""
    from facelab.train.detection.augment import AugmentOptions, build_augmentation
    from facelab.train.detection.engine import DetectionDataset, collate_detection, load_records

    folder = SHARED / "data" / "detection" / "dlib_faces"
    records = load_records([str(folder / "training.xml"), str(folder / "testing.xml")])
    data = DetectionDataset(records, build_augmentation(model.variant.family, AugmentOptions(size)), seed=0)
    items = [data[i % len(data)] for i in range(batch)]
    return collate_detection(items)


def time_training_steps(
    name: str, batch: int = 8, size: int = 640, steps: int = 3, warmup: int = 1, device: str = "cpu", amp: bool = False
) -> dict[str, object]:
    """Build variant ``name`` and time SGD training steps on one fixed real batch.

    Returns:
        ``{"variant", "seconds_per_step", "steps_per_s", "images_per_s", "loss", "peak_mb"?}``.
    """
    import torch

    from facelab.train.data import normalize_batch
    from facelab.train.detection.engine import DetectConfig, _criterion
    from facelab.train.detection.variants import build_detector

    torch.manual_seed(0)
    model = build_detector(name).to(device).train()
    criterion = _criterion(DetectConfig(model=name), model)
    data = make_batch(model, batch, size)
    images = data["images"].to(device)
    targets = [t.to(torch.device(device)) for t in data["targets"]]
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.startswith("cuda"))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        x = normalize_batch(images, model.variant.normalization)
        with torch.autocast(
            device.split(":")[0], dtype=torch.float16 if device.startswith("cuda") else torch.bfloat16, enabled=amp
        ):
            loss, _ = criterion(model(x), targets, (size, size))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    times, loss = [], 0.0
    for _ in range(steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    sec = statistics.median(times)
    out: dict[str, object] = {
        "variant": name,
        "seconds_per_step": sec,
        "steps_per_s": 1.0 / sec,
        "images_per_s": batch / sec,
        "loss": loss,
    }
    if device.startswith("cuda"):
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _child(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    if args.variant == "_baseline":
        from facelab.train.detection import engine  # noqa: F401  (what every run imports)

        result: dict[str, object] = {"variant": "_baseline"}
    else:
        result = time_training_steps(
            args.variant, args.batch, args.size, args.steps, args.warmup, args.device, args.amp
        )
    if "peak_mb" not in result:
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print("RESULT " + json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="", help="comma separated (default: all registered)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 8; 2 with --quick)")
    parser.add_argument("--size", type=int, default=None, help="input side (default 640; 320 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3; 1 with --quick)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="float16 autocast on CUDA (bfloat16 on CPU)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    args.batch = args.batch or (2 if args.quick else 8)
    args.size = args.size or (320 if args.quick else 640)
    args.steps = args.steps or (1 if args.quick else 3)
    if args.variant:
        return _child(args)

    sys.path.insert(0, str(ROOT / "src"))
    from facelab.train.detection.variants import DETECTOR_VARIANTS, info_table

    names = [v for v in args.variants.split(",") if v] or DETECTOR_VARIANTS.names()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(
        f"device {args.device}, threads {args.threads}, batch {args.batch}, "
        f"input {args.size}x{args.size}, amp {args.amp}"
    )
    print("\n" + info_table(names) + "\n")
    rows = []
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["OMP_NUM_THREADS"] = str(args.threads)
    for name in ["_baseline", *names]:
        cmd = [sys.executable, __file__, "--variant", name, "--batch", str(args.batch), "--size", str(args.size)]
        cmd += [
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
        ]
        cmd += ["--amp"] if args.amp else []
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
        if run.returncode != 0 or not line:
            print(f"{name}: failed\n{run.stderr[-2000:]}")
            continue
        rows.append(json.loads(line[-1][len("RESULT ") :]))
        print(f"  done {name}", flush=True)
    base = next((r["peak_mb"] for r in rows if r["variant"] == "_baseline"), 0.0)
    mem = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print(f"\n{'variant':<24}{'s/step':>9}{'steps/s':>9}{'images/s':>10}{mem:>14}{'loss':>9}")
    for r in rows:
        if r["variant"] == "_baseline":
            print(f"{'(import-only process)':<24}{'':>9}{'':>9}{'':>10}{r['peak_mb']:>14.0f}")
            continue
        print(
            f"{r['variant']:<24}{r['seconds_per_step']:>9.2f}{r['steps_per_s']:>9.3f}{r['images_per_s']:>10.2f}"
            f"{r['peak_mb']:>14.0f}{r['loss']:>9.3f}"
        )
    if not args.device.startswith("cuda"):
        print(f"(peak RSS includes the {base:.0f} MiB of an import-only process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
