"""``facelab train``: train from a YAML config, export a checkpoint to ONNX, or list backbones.

Forms::

    facelab train CONFIG.yaml [key=value ...]
    facelab train export CHECKPOINT OUT.onnx --license LICENCE [--name NAME] [--train-data NAME] [--opset N]
    facelab train info [NETWORK|DETECTOR ...]
    facelab train export-retinaface PTH OUT.onnx [--variant mobilenet0.25|RFB|slim] [--name NAME] [--opset N]
    facelab train detect CONFIG.yaml [key=value ...]          # SCRFD / RetinaFace (facelab.train.detection)
    facelab train landmarks CONFIG.yaml [key=value ...]       # 2D landmarks (facelab.train.landmarks)
    facelab train export-detector RUN OUT.onnx --license LICENCE [--name NAME] [--train-data NAME] [--opset N]
    facelab train export-landmarks RUN OUT.onnx --license LICENCE [--name NAME] [--train-data NAME] [--opset N]
    facelab train augment-preview CONFIG.yaml OUT_DIR [--per-image N] [key=value ...]

torch is imported only when one of these runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="train a recognition model (needs the 'train' extra), or 'export' / 'info'",
        description=(
            "facelab train CONFIG [key=value ...] | facelab train export CHECKPOINT OUT.onnx --license L | "
            "facelab train info [NETWORK ...] | facelab train export-retinaface PTH OUT.onnx | "
            "facelab train detect CONFIG [key=value ...] | facelab train landmarks CONFIG [key=value ...] | "
            "facelab train export-detector RUN OUT.onnx --license L | "
            "facelab train export-landmarks RUN OUT.onnx --license L | "
            "facelab train augment-preview CONFIG OUT_DIR"
        ),
    )
    p.add_argument(
        "target",
        metavar="CONFIG|export|info|export-retinaface|detect|landmarks|export-detector|export-landmarks|augment-preview",
        help="a YAML config (recognition), or one of the words above",
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help="key=value overrides, or the export/info arguments")
    p.set_defaults(func=_run)


@dataclass(frozen=True)
class _CheckpointExport:
    """A ``facelab train export*`` word that turns a training checkpoint into ONNX + card."""

    module: str  #: where the exporter lives
    function: str  #: its name; called as ``f(checkpoint, out, license=, name=, train_data=, opset=)``
    description: str
    checkpoint_help: str
    name_help: str


_CHECKPOINT_EXPORTS = {
    "export": _CheckpointExport(
        "facelab.train.export",
        "export_onnx",
        "Export a training checkpoint to ONNX + model card.",
        "model.pt written by facelab train, or its run folder",
        "model card name (default NETWORK.STEM)",
    ),
    **{
        f"export-{kind}": _CheckpointExport(
            module,
            function,
            f"Export a facelab train {kind} run to ONNX + model card.",
            "the run folder or its model.pt",
            "model card name",
        )
        for kind, module, function in (
            ("detector", "facelab.train.detection.export", "export_detector"),
            ("landmarks", "facelab.train.landmarks.export", "export_landmarks"),
        )
    },
}


def _export_parser(target: str) -> argparse.ArgumentParser:
    spec = _CHECKPOINT_EXPORTS[target]
    p = argparse.ArgumentParser(prog=f"facelab train {target}", description=spec.description)
    p.add_argument("checkpoint", help=spec.checkpoint_help)
    p.add_argument("out", help="the .onnx file to write (the card goes beside it as .json)")
    p.add_argument(
        "--license", "--licence", dest="license", required=True, help="licence of the weights (stored in the card)"
    )
    p.add_argument("--name", default=None, help=spec.name_help)
    p.add_argument("--train-data", default=None, help="training data name for the card")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 13)")
    return p


def _export_retinaface_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facelab train export-retinaface",
        description=(
            "Export a biubug6 RetinaFace-MobileNet0.25 / RFB / Slim state_dict "
            "(Face-Detector-1MB-with-landmark, MIT) to ONNX + model card."
        ),
    )
    p.add_argument("pth", help="the .pth state_dict (mobilenet0.25_Final.pth, RBF_Final.pth or slim_Final.pth)")
    p.add_argument("out", help="the .onnx file to write (the card goes beside it as .json)")
    p.add_argument("--variant", default=None, help="mobilenet0.25, RFB or slim (default: recognised from the keys)")
    p.add_argument("--name", default=None, help="model card name (default per variant)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 13)")
    return p


def _split_overrides(rest: list[str]) -> tuple[str, list[str]]:
    if not rest or "=" in rest[0]:
        raise SystemExit("facelab train: give the config file first, then key=value overrides")
    return rest[0], list(rest[1:])


def _print_summary(result: Any, scores: str) -> None:
    """The last line of a training run (rank 0 only): steps, final loss, run folder and the scores."""
    if os.environ.get("RANK", "0") != "0":
        return
    final = f"{result.losses[-1]:.4f}" if result.losses else "- (nothing left to train)"
    sys.stdout.write(
        f"trained {result.steps} steps; final loss {final}; checkpoints in {result.output}"
        f"{'; ' + scores if scores else ''}\n"
    )


def _leave_world() -> None:
    """Every rank of a torchrun job leaves the process group together once its training has succeeded."""
    from facelab.train.loop import leave_world

    leave_world()


def _run_detect(rest: list[str]) -> int:
    from facelab.train.config import load_config
    from facelab.train.detection.engine import DetectConfig, train_detector

    path, overrides = _split_overrides(rest)
    result = train_detector(load_config(path, overrides, cls=DetectConfig))
    _leave_world()
    metrics = "; ".join(
        f"{k}: " + ", ".join(f"{m} {v:.4f}" for m, v in vals.items()) for k, vals in result.metrics.items()
    )
    _print_summary(result, metrics)
    return 0


def _run_landmarks(rest: list[str]) -> int:
    from facelab.train.config import load_config
    from facelab.train.landmarks.engine import LandmarkConfig, train_landmarks

    path, overrides = _split_overrides(rest)
    result = train_landmarks(load_config(path, overrides, cls=LandmarkConfig))
    _leave_world()
    _print_summary(result, "; ".join(f"{k}: NME {v['nme']:.4f}" for k, v in result.metrics.items() if "nme" in v))
    return 0


def _run_preview(rest: list[str]) -> int:
    p = argparse.ArgumentParser(prog="facelab train augment-preview", description="Draw augmented detection samples.")
    p.add_argument("config")
    p.add_argument("out_dir")
    p.add_argument("--per-image", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="key=value")
    ns = p.parse_intermixed_args(rest)
    from facelab.train.config import load_config
    from facelab.train.detection.augment import draw_augmented_samples
    from facelab.train.detection.engine import DetectConfig, load_records, training_augmentation

    cfg = load_config(ns.config, ns.overrides, cls=DetectConfig)
    records = load_records(cfg.train_ann, cfg.train_format, cfg.train_root, cfg.min_size)
    pipeline = training_augmentation(cfg)
    files = draw_augmented_samples(records, pipeline, ns.out_dir, per_image=ns.per_image, seed=cfg.seed)
    sys.stdout.write(f"wrote {len(files)} samples to {ns.out_dir}\n")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.target == "detect":
        return _run_detect(list(args.rest))
    if args.target == "landmarks":
        return _run_landmarks(list(args.rest))
    if args.target == "augment-preview":
        return _run_preview(list(args.rest))
    if args.target in _CHECKPOINT_EXPORTS:
        ns = _export_parser(args.target).parse_args(args.rest)
        spec = _CHECKPOINT_EXPORTS[args.target]
        exporter = getattr(importlib.import_module(spec.module), spec.function)
        card = exporter(
            ns.checkpoint, ns.out, license=ns.license, name=ns.name, train_data=ns.train_data, opset=ns.opset
        )
        sys.stdout.write(f"wrote {ns.out} and its card {card.name}\n")
        return 0
    if args.target == "export-retinaface":
        ns = _export_retinaface_parser().parse_args(args.rest)
        from facelab.train.detectors.retinaface_mnet import export_retinaface

        card = export_retinaface(ns.pth, ns.out, variant=ns.variant, name=ns.name, opset=ns.opset)
        sys.stdout.write(f"wrote {ns.out} and its card {card.name}\n")
        return 0
    if args.target == "info":
        from facelab.train.backbones import info_table, list_backbones
        from facelab.train.detection.variants import DETECTOR_VARIANTS
        from facelab.train.detection.variants import info_table as detector_table

        names = list(args.rest)
        detectors = [n for n in names if n in DETECTOR_VARIANTS]
        networks = [n for n in names if n not in DETECTOR_VARIANTS]
        unknown = [n for n in networks if n not in list_backbones(aliases=True)]
        if unknown:
            from facelab.errors import ConfigError

            raise ConfigError(
                f"unknown network or detector {unknown[0]!r}; detectors: {', '.join(DETECTOR_VARIANTS.names())}"
            )
        if networks or not names:
            sys.stdout.write(info_table(networks or None) + "\n")
        if detectors or not names:
            sys.stdout.write(("\n" if not names else "") + detector_table(detectors or None) + "\n")
        return 0
    from facelab.train.config import load_config
    from facelab.train.engine import train

    cfg = load_config(args.target, list(args.rest))
    result = train(cfg)
    _leave_world()
    _print_summary(result, ", ".join(f"{k} {v['acc']:.4f}" for k, v in result.verification.items()))
    return 0
