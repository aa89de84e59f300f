"""GPU check: provider handling and batched recognition throughput, facelab vs insightface's per-face loop.

Meant for an NVIDIA machine with ``pip install facelab[gpu]`` (onnxruntime-gpu); it also runs to
completion on a CPU-only machine (it then says that CUDA was not granted and measures on CPU).

1. Providers: which execution providers this onnxruntime build offers; whether
   ``facelab.runtime.create_session(..., RuntimeOptions(providers=["cuda", "cpu"]))`` is granted
   ``CUDAExecutionProvider``; the warning logged when a provider is requested but not granted
   (TensorRT, ROCm; captured from the ``facelab.runtime.session`` logger); and that
   ``strict=True`` raises :class:`facelab.errors.ProviderError` instead.
2. Throughput: faces per second of an IResNet-50-shaped recogniser (112x112 -> 512, random
   weights, built by ``benchmarks/_iresnet_onnx.py``) on the same random aligned crops through
   ``facelab.recognition.create_recognizer(..., batch_size=B)`` for B in ``--batches`` versus
   insightface's ``model_zoo.get_model(path, providers=...)`` + ``get_feat(crop)`` one crop at a
   time (what ``FaceAnalysis.get`` does per face). Skipped for insightface when it is not installed.

Usage:
    python benchmarks/gpu_check.py                 # GPU machine: 1024 crops, batches 1, 32, 128
    python benchmarks/gpu_check.py --quick         # CPU smoke run: 48 crops, one timed pass
    python benchmarks/gpu_check.py --providers cpu --threads 2
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CUDA = "CUDAExecutionProvider"


class _Capture(logging.Handler):
    """Keep the log records of one logger (to show the provider warnings)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self, level: int = logging.WARNING) -> list[str]:
        out = [f"{r.levelname}: {r.getMessage()}" for r in self.records if r.levelno >= level]
        self.records.clear()
        return out


def _providers_part(model: Path, runtime_options: Callable[..., object], capture: _Capture) -> bool:
    """Part 1; returns whether CUDA was granted."""
    import onnxruntime as ort

    from facelab.errors import ProviderError
    from facelab.runtime.session import available_providers, create_session

    print("== 1. execution providers")
    print(f"onnxruntime {ort.__version__} ({ort.get_device()}), offered: {available_providers()}")
    session = create_session(model, runtime_options(providers=["cuda", "cpu"]))
    granted = CUDA in session.providers
    print(f'create_session(providers=["cuda", "cpu"]) granted {session.providers}')
    print(f"CUDAExecutionProvider granted: {'YES' if granted else 'NO'}")
    for line in capture.take():
        print(f"  log {line}")
    for request in (["tensorrt", "cuda", "cpu"], ["rocm", "cpu"]):
        session = create_session(model, runtime_options(providers=request))
        print(f"create_session(providers={request}) granted {session.providers}; warnings logged:")
        lines = capture.take()
        for line in lines or ["(none: everything requested was granted)"]:
            print(f"  log {line}")
    try:
        create_session(model, runtime_options(providers=["rocm", "cpu"], strict=True))
    except ProviderError as exc:
        print(f'strict=True, providers=["rocm", "cpu"]: raised ProviderError: {exc}')
    else:
        print('strict=True, providers=["rocm", "cpu"]: no error (ROCm was granted)')
    capture.take()
    return granted


def _time(fn: Callable[[], object], repeat: int) -> float:
    """Median wall seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _throughput_part(model: Path, args: argparse.Namespace, runtime_options: Callable[..., object]) -> None:
    from facelab.recognition import create_recognizer

    providers = [p.strip() for p in args.providers.split(",")]
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (args.faces, 112, 112, 3), dtype=np.uint8)  # aligned BGR crops
    rows: list[tuple[str, str, float]] = []
    print(
        f"\n== 2. recognition throughput: {args.faces} random 112x112 crops, IResNet-50 shape, "
        f"median of {args.repeat} timed pass(es) after 1 warm-up"
    )
    reference = None
    for batch in args.batches:
        rec = create_recognizer(model, runtime_options(providers=providers), batch_size=batch)
        seconds = _time(lambda rec=rec: rec.embed(crops), args.repeat)
        rows.append((f"facelab create_recognizer(batch_size={batch}).embed", ",".join(rec.session.providers), seconds))
        if reference is None:
            reference = rec.embed(crops[:4])
    try:
        from insightface.model_zoo import get_model
    except ImportError as exc:
        print(f"insightface not importable ({exc}); its per-face loop is skipped")
    else:
        names = [p if p.endswith("ExecutionProvider") else _alias(p) for p in providers]
        ins = get_model(str(model), providers=names)
        ins.prepare(ctx_id=0 if CUDA in names else -1)

        def loop() -> None:
            for crop in crops:
                ins.get_feat(crop)

        seconds = _time(loop, args.repeat)
        granted = ",".join(ins.session.get_providers())
        rows.append(("insightface get_model(...).get_feat(crop) per face", granted, seconds))
        if reference is not None:
            theirs = np.concatenate([ins.get_feat(c) for c in crops[:4]])
            diff = float(np.abs(theirs - reference).max() / (np.abs(reference).max() + 1e-12))
            print(f"same embeddings check (first 4 crops): max relative difference {diff:.2e}")
    width = max(len(r[0]) for r in rows)
    print(f"\n{'path'.ljust(width)} | {'providers'.ljust(36)} | {'faces/s':>9} | ms/face")
    print(f"{'-' * width}-|-{'-' * 36}-|-{'-' * 9}-|--------")
    for label, granted, seconds in rows:
        rate, per_face = args.faces / seconds, 1e3 * seconds / args.faces
        print(f"{label.ljust(width)} | {granted.ljust(36)} | {rate:9.1f} | {per_face:.2f}")


def _detector_training_part(args: argparse.Namespace) -> None:
    """Part 3: detector training throughput (torch on CUDA when available, else CPU)."""
    names = [n for n in args.detector_train.split(",") if n]
    if not names:
        return
    try:
        import torch
    except ImportError as exc:
        print(f"\n== 3. detector training: torch not importable ({exc}); skipped")
        return
    from bench_train_detect import time_training_steps

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    batch, size, steps = (2, 320, 1) if args.quick else (8, 640, 10 if cuda else 2)
    if args.quick and not cuda:
        names = names[:1]
    print(
        f"\n== 3. detector training throughput on {device}"
        f"{' (' + torch.cuda.get_device_name(0) + ')' if cuda else ' (CUDA NOT AVAILABLE: CPU numbers)'}: "
        f"batch {batch}, {size}x{size}, {'float16 autocast, ' if cuda else ''}median of {steps} step(s) after 2 warm-up"
    )
    print(f"{'variant':<24}{'s/step':>9}{'steps/s':>9}{'images/s':>10}{'peak GPU MiB':>14}")
    for name in names:
        r = time_training_steps(name, batch, size, steps, 2, device, amp=cuda)
        peak = f"{r['peak_mb']:>14.0f}" if "peak_mb" in r else f"{'-':>14}"
        print(f"{name:<24}{r['seconds_per_step']:>9.3f}{r['steps_per_s']:>9.2f}{r['images_per_s']:>10.1f}{peak}")


def _alias(name: str) -> str:
    from facelab.runtime.session import resolve_providers

    return resolve_providers([name])[0][0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts for a CPU smoke run (48 crops, 1 pass)")
    parser.add_argument("--faces", type=int, default=None, help="number of crops (default 1024; 48 with --quick)")
    parser.add_argument("--batches", default="1,32,128", help="facelab batch sizes, comma separated")
    parser.add_argument("--repeat", type=int, default=None, help="timed passes (default 5; 1 with --quick)")
    parser.add_argument("--providers", default="cuda,cpu", help="providers for part 2 (default cuda,cpu)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads for facelab")
    parser.add_argument(
        "--detector-train",
        default="scrfd_500m_kps,scrfd_2.5g_kps,scrfd_10g_kps,retinaface_mnet025,retinaface_r50",
        help="detector variants for part 3 (comma separated; empty to skip)",
    )
    args = parser.parse_args(argv)
    args.faces = args.faces or (48 if args.quick else 1024)
    args.repeat = args.repeat or (1 if args.quick else 5)
    args.batches = [int(b) for b in args.batches.split(",")]

    from _iresnet_onnx import build_iresnet50

    from facelab.runtime.session import RuntimeOptions

    def runtime_options(**kwargs: object) -> RuntimeOptions:
        return RuntimeOptions(intra_op_threads=args.threads, **kwargs)  # type: ignore[arg-type]

    capture = _Capture()
    session_logger = logging.getLogger("facelab.runtime.session")
    session_logger.addHandler(capture)
    session_logger.setLevel(logging.INFO)
    session_logger.propagate = False
    print(f"machine: {platform.platform()}, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "iresnet50_random.onnx"
        build_iresnet50(str(model))
        granted = _providers_part(model, runtime_options, capture)
        if not granted:
            print("CUDA NOT GRANTED: part 2 below runs on CPU (numbers are CPU numbers, not GPU ones)")
        _throughput_part(model, args, runtime_options)
    _detector_training_part(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
