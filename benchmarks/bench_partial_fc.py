"""Partial FC vs full FC on CPU: step time and peak memory of the classification layer.

For each (identities, sample_rate) a fresh subprocess builds facelab's PartialFC (512-d, batch
64, CosFace margin), allocates the centres' gradient, and then runs forward + backward steps.
Reported:

- ``step ms``: median wall time of one forward + backward (after one warm-up step),
- ``step MB``: peak RSS during the timed steps (``VmHWM`` after a reset through
  ``/proc/self/clear_refs``) minus RSS before them, with glibc's mmap threshold fixed so freed
  tensors leave RSS — the memory a step adds on top of the centres and their gradient (logits,
  softmax, their gradients, normalised/sampled centre copies and the gradients through them),
- ``logits MB``: one float32 ``(batch, sampled classes)`` logit matrix.

Usage: ``python benchmarks/bench_partial_fc.py [--classes 100000 1000000] [--rates 1.0 0.1] [--steps 3]``
(``--device cuda`` measures with ``torch.cuda.max_memory_allocated`` instead of RSS).

Whole training step (the issue's GPU check): ``--backbone iresnet50 --fp16 --batch 256 --device cuda
--classes 1000000 10000000 --rates 0.1 1.0`` times backbone forward/backward + Partial FC + SGD
under autocast with a grad scaler, on synthetic 112×112 input, and reports samples/s and the
peak memory of the whole step (``step MB`` then includes the backbone's activations).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # "5" resets VmHWM (Linux >= 4.0)
        fh.write("5")


def _one(
    classes: int, rate: float, steps: int, batch: int, dim: int, device: str, backbone: str = "", fp16: bool = False
) -> dict:
    import torch

    from facelab.train.margins import CombinedMarginLoss
    from facelab.train.partial_fc import PartialFC

    torch.manual_seed(0)
    pfc = PartialFC(CombinedMarginLoss(64.0, 1.0, 0.0, 0.4), dim, classes, sample_rate=rate).to(device)
    pfc.weight.grad = torch.zeros_like(pfc.weight)
    emb = torch.randn(batch, dim, device=device, requires_grad=True)
    labels = torch.randint(0, classes, (batch,), device=device)
    if backbone:
        from facelab.train.backbones import create_backbone

        net = create_backbone(backbone, num_features=dim, fp16=fp16).to(device)
        pfc.fp16 = fp16
        images = torch.randn(batch, 3, 112, 112, device=device)
        opt = torch.optim.SGD([*net.parameters(), pfc.weight], lr=0.01, momentum=0.9, weight_decay=5e-4)
        scaler = torch.amp.GradScaler(device, enabled=fp16 and device == "cuda")

        def step() -> None:
            loss = pfc(net(images), labels)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=False)
            if device == "cuda":
                torch.cuda.synchronize()
    else:

        def step() -> None:
            pfc.weight.grad.zero_()
            loss = pfc(emb, labels)
            loss.backward()
            if device == "cuda":
                torch.cuda.synchronize()

    step()  # warm-up: lazy initialisation is not part of the step's memory
    base = _status_mb("VmRSS")
    _reset_peak_rss()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2**20
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    if device == "cuda":
        step_mb = torch.cuda.max_memory_allocated() / 2**20 - base_cuda
    else:
        step_mb = _status_mb("VmHWM") - base
    sampled = len(pfc.last_index)
    return {
        "classes": classes,
        "rate": rate,
        "step_ms": 1000 * statistics.median(times),
        "step_mb": step_mb,
        "logits_mb": batch * sampled * 4 / 2**20,
        "sampled": sampled,
        "centres_mb": pfc.weight.numel() * 4 / 2**20,
        "samples_per_s": batch / statistics.median(times),
        "peak_total_mb": (torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else _status_mb("VmHWM"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--rates", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--backbone", default="", help="time a whole training step with this backbone (e.g. iresnet50)")
    ap.add_argument("--fp16", action="store_true", help="autocast fp16 + grad scaler (CUDA)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        res = _one(
            args.classes[0], args.rates[0], args.steps, args.batch, args.dim, args.device, args.backbone, args.fp16
        )
        sys.stdout.write(json.dumps(res) + "\n")
        return
    rows = []
    for classes in args.classes:
        for rate in args.rates:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                "--classes",
                str(classes),
                "--rates",
                str(rate),
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--dim",
                str(args.dim),
                "--device",
                args.device,
                "--threads",
                str(args.threads),
                *(["--backbone", args.backbone] if args.backbone else []),
                *(["--fp16"] if args.fp16 else []),
            ]
            # a fixed mmap threshold makes freed large tensors leave RSS at once, so RSS tracks live memory
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:  # e.g. out of memory: report and go on
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"# {classes:,} identities, sample_rate {rate}: failed ({tail[:200]})")
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    what = f"{args.backbone} + PFC + SGD{' fp16' if args.fp16 else ''}" if args.backbone else "PFC forward + backward"
    print(f"batch {args.batch}, {args.dim}-d, device {args.device}, CosFace margin; step = {what}")
    print(
        "| identities | sample_rate | sampled | step ms | samples/s | step MB | peak MB | logits MB | centres MB "
        "| step MB / full FC |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        full = next((f for f in rows if f["classes"] == r["classes"] and f["rate"] == 1.0), None)
        ratio = f"{r['step_mb'] / full['step_mb']:.3f}" if full and full["step_mb"] > 0 else "-"
        print(
            f"| {r['classes']:,} | {r['rate']} | {r['sampled']:,} | {r['step_ms']:.1f} | {r['samples_per_s']:.1f} "
            f"| {r['step_mb']:.0f} | {r['peak_total_mb']:.0f} | "
            f"{r['logits_mb']:.1f} | {r['centres_mb']:.0f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
