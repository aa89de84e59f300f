"""``facelab train``: train from a YAML config, export a checkpoint to ONNX, or list backbones.

Forms::

    facelab train CONFIG.yaml [key=value ...]
    facelab train export CHECKPOINT OUT.onnx --license LICENCE [--name NAME] [--train-data NAME] [--opset N]
    facelab train info [NETWORK ...]
    facelab train export-retinaface PTH OUT.onnx [--variant mobilenet0.25|RFB|slim] [--name NAME] [--opset N]

torch is imported only when one of these runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="train a recognition model (needs the 'train' extra), or 'export' / 'info'",
        description=(
            "facelab train CONFIG [key=value ...] | facelab train export CHECKPOINT OUT.onnx --license L | "
            "facelab train info [NETWORK ...] | facelab train export-retinaface PTH OUT.onnx"
        ),
    )
    p.add_argument(
        "target",
        metavar="CONFIG|export|info|export-retinaface",
        help="a YAML config, or the word 'export', 'info' or 'export-retinaface'",
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help="key=value overrides, or the export/info arguments")
    p.set_defaults(func=_run)


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facelab train export", description="Export a training checkpoint to ONNX + model card."
    )
    p.add_argument("checkpoint", help="model.pt written by facelab train, or its run folder")
    p.add_argument("out", help="the .onnx file to write (the card goes beside it as .json)")
    p.add_argument(
        "--license", "--licence", dest="license", required=True, help="licence of the weights (stored in the card)"
    )
    p.add_argument("--name", default=None, help="model card name (default NETWORK.STEM)")
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


def _run(args: argparse.Namespace) -> int:
    if args.target == "export-retinaface":
        ns = _export_retinaface_parser().parse_args(args.rest)
        from facelab.train.detectors.retinaface_mnet import export_retinaface

        card = export_retinaface(ns.pth, ns.out, variant=ns.variant, name=ns.name, opset=ns.opset)
        sys.stdout.write(f"wrote {ns.out} and its card {card.name}\n")
        return 0
    if args.target == "export":
        ns = _export_parser().parse_args(args.rest)
        from facelab.train.export import export_onnx

        card = export_onnx(
            ns.checkpoint, ns.out, license=ns.license, name=ns.name, train_data=ns.train_data, opset=ns.opset
        )
        sys.stdout.write(f"wrote {ns.out} and its card {card.name}\n")
        return 0
    if args.target == "info":
        from facelab.train.backbones import info_table

        sys.stdout.write(info_table(args.rest or None) + "\n")
        return 0
    from facelab.train.config import load_config
    from facelab.train.engine import train

    cfg = load_config(args.target, list(args.rest))
    result = train(cfg)
    if os.environ.get("RANK", "0") != "0":
        return 0
    scores = ", ".join(f"{k} {v['acc']:.4f}" for k, v in result.verification.items())
    final = f"{result.losses[-1]:.4f}" if result.losses else "- (nothing left to train)"
    sys.stdout.write(
        f"trained {result.steps} steps; final loss {final}; checkpoints in {result.output}"
        f"{'; ' + scores if scores else ''}\n"
    )
    return 0
