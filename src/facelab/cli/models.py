"""``facelab models list|download|info|verify|convert-retinaface``."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


def _fmt_bytes(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def _register_packs() -> None:
    """Import the modules that add packs to the zoo (the ``open`` pack registers on import)."""
    from facelab.pipeline import load_runners

    load_runners()


def _installed(state: dict) -> str:
    """``yes``, ``yes (insightface)`` (found in InsightFace's folder), ``partial`` or ``no``."""
    location = state.get("location") or "none"
    if location == "none":
        return "no"
    if not state.get("complete"):
        return "partial"
    return "yes" if location == "facelab" else f"yes ({location})"


def _cmd_list(args: argparse.Namespace) -> int:
    _register_packs()
    from facelab.zoo import list_packs, pack_info

    rows = [pack_info(name) for name in list_packs()]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'pack':12} {'installed':17} {'size':>8}  {'tasks':64} licence")
    for info in rows:
        installed = _installed(info["installed"])
        tasks = ",".join(info["tasks"])
        print(
            f"{info['name']:12} {installed:17} {_fmt_bytes(info.get('total_bytes')):>8}  {tasks:64} {info['license']}"
        )
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    _register_packs()
    from facelab.zoo import download_pack

    for name in args.packs:
        path = download_pack(name, force=args.force, progress=not args.no_progress and sys.stderr.isatty())
        print(f"{name}: ready in {path}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    _register_packs()
    from facelab.zoo import pack_info

    info = pack_info(args.pack, hashes=args.hashes)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']}: {info['notes']}")
    print(f"licence: {info['license']}")
    print(f"installed: {info['installed']['root']} ({'complete' if info['installed']['complete'] else 'incomplete'})")
    for model in info["models"]:
        size = model.get("input_size")
        print(
            f"  {model['task']:16} {model['name']:28} input={size} {model['color_order']} mean={model['mean'][0]} "
            f"std={model['std'][0]}" + (f" template={model['align_template']}" if model.get("align_template") else "")
        )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    _register_packs()
    from facelab.zoo import verify_pack

    failed = 0
    for name in args.packs:
        report = verify_pack(name)
        data = report.to_dict()
        if args.json:
            print(json.dumps(data))
        else:
            print(f"{name}: {'OK' if report.ok else 'PROBLEMS'} ({data.get('root')})")
            for f in data.get("files", []):
                print(f"  {'ok ' if f.get('ok') else 'BAD'} {f.get('filename')} {f.get('problem') or ''}".rstrip())
        failed += not report.ok
    return 1 if failed else 0


def _cmd_convert_retinaface(args: argparse.Namespace) -> int:
    from facelab.detection.retinaface_graph import convert_retinaface

    card = convert_retinaface(args.pth, args.out, variant=args.variant, name=args.name)
    print(f"wrote {args.out} and its card {card.name} (converted without torch)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``models`` with its sub-commands."""
    parser = subparsers.add_parser("models", help="list, download, describe and verify model packs")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="list the known packs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("download", help="download and verify packs")
    p.add_argument("packs", nargs="+", metavar="PACK")
    p.add_argument("--force", action="store_true", help="download again even when present")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_download)
    p = sub.add_parser("info", help="show a pack's models, preprocessing and licence")
    p.add_argument("pack")
    p.add_argument("--hashes", action="store_true", help="hash the installed files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("verify", help="check installed files against their pinned sha256 and size")
    p.add_argument("packs", nargs="+", metavar="PACK")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_verify)
    p = sub.add_parser(
        "convert-retinaface",
        help="convert a biubug6 RetinaFace / RFB / Slim .pth to ONNX + card without torch (needs onnx)",
    )
    p.add_argument("pth", help="mobilenet0.25_Final.pth, RBF_Final.pth or slim_Final.pth")
    p.add_argument("out", help="the .onnx file to write (the card goes beside it as .json)")
    p.add_argument("--variant", default=None, help="mobilenet0.25, RFB or slim (default: recognised from the keys)")
    p.add_argument("--name", default=None, help="model card name (default per variant)")
    p.set_defaults(func=_cmd_convert_retinaface)
