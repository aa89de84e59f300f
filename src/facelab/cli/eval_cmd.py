"""``facelab eval``: verify, calibrate, ijb, widerface, nme and cluster sub-commands.

The only model-specific code is :func:`build_embedders`, which turns ``--pack`` / ``--model``
into the two callables the framework-agnostic evaluators take.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError

__all__ = ["register", "build_embedders", "Embedders"]

_logger = logging.getLogger("facelab.cli.eval")


@dataclass
class Embedders:
    """What the evaluators need from a model.

    Attributes:
        embed: ``(N, S, S, 3)`` uint8 BGR aligned crops → ``(N, D)`` raw embeddings.
        embed_image: BGR photo → raw embedding of its largest, most central face (``None``
            without a face); ``None`` when only a recognition file was given.
        input_size: the recogniser's crop side ``S``.
    """

    embed: Callable[[np.ndarray], np.ndarray]
    embed_image: Callable[[np.ndarray], np.ndarray | None] | None
    input_size: int = 112


def build_embedders(
    pack: str | None = None,
    model: str | None = None,
    *,
    offline: bool = False,
    providers: str = "auto",
    batch_size: int = 32,
) -> Embedders:
    """Embedders for the evaluators from a pack or a recognition ONNX file.

    Args:
        pack: pack name or folder (default pack when both are ``None``).
        model: a recognition ``.onnx`` file (aligned crops only; photos then need ``pack``).
        offline: never download pack files.
        providers: ONNX Runtime providers (``"auto"`` or a comma-separated list).
        batch_size: recogniser batch size.

    Returns:
        The :class:`Embedders`; photos are embedded with ``FaceAnalyzer.analyze(image, max_num=1)``
        (the largest, most central face).
    """
    from facelab.runtime.session import RuntimeOptions

    prov: Any = providers if providers == "auto" else [p.strip() for p in providers.split(",")]
    runtime = RuntimeOptions(providers=prov)
    if model is not None:
        from facelab.recognition.arcface import ArcFaceRecognizer, default_recognizer_card

        card = default_recognizer_card(model)
        recognizer = ArcFaceRecognizer.from_card(card, model, runtime, batch_size=batch_size)
        embed_image = None
        if pack is not None:
            embed_image = build_embedders(
                pack, None, offline=offline, providers=providers, batch_size=batch_size
            ).embed_image
        return Embedders(lambda crops: np.asarray(recognizer.embed(crops)), embed_image, int(recognizer.input_size))

    from facelab.pipeline import FaceAnalyzer

    analyzer = FaceAnalyzer(
        pack, runtime=runtime, download=not offline, batch_size=batch_size, modules=["detection", "recognition"]
    )
    rec = analyzer.recognizer
    if rec is None:
        raise ConfigError(f"pack {analyzer.pack_name!r} has no recognition model")

    def embed_image(image: np.ndarray) -> np.ndarray | None:
        faces = analyzer.analyze(image, max_num=1)
        if not faces or faces[0].embedding is None:
            return None
        return np.asarray(faces[0].embedding, np.float64)

    return Embedders(lambda crops: np.asarray(rec.embed(crops)), embed_image, int(rec.input_size))


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pack", default=None, help="model pack name or folder (default: the open pack)")
    p.add_argument("--model", default=None, help="recognition ONNX file (for aligned crops)")
    p.add_argument("--providers", default="auto", help="ONNX Runtime providers, comma separated")
    p.add_argument("--offline", action="store_true", help="never download model files")
    p.add_argument("--batch-size", type=int, default=32, help="crops per recogniser call")


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")


def _verify_result(args: argparse.Namespace) -> Any:
    from facelab.eval.pairs import load_pairs
    from facelab.eval.verification import verify

    kwargs: dict[str, Any] = {}
    if getattr(args, "impostors", None) is not None:
        kwargs["n_impostors"] = args.impostors
    pairs = load_pairs(args.pairs, args.images, **kwargs)
    models = build_embedders(
        args.pack, args.model, offline=args.offline, providers=args.providers, batch_size=args.batch_size
    )
    if not pairs.aligned and models.embed_image is None:
        _logger.warning("--model without --pack: treating the images of %s as aligned crops", args.pairs)
    return verify(
        pairs,
        models.embed,
        embed_image=models.embed_image,
        flip=not args.no_flip,
        batch_size=args.batch_size,
        image_size=models.input_size,
        n_folds=args.folds,
        progress=sys.stderr.isatty(),
    )


def _cmd_verify(args: argparse.Namespace) -> int:
    from facelab.eval.report import format_table, plot_verification, verification_rows, write_json

    result = _verify_result(args)
    data = result.to_dict(include_scores=args.save_scores)
    data["pairs_file"] = str(args.pairs)
    if args.json:
        write_json(args.json, data)
    if args.plot:
        plot_verification(
            result.scores, result.issame, args.plot, title=Path(args.pairs).name, threshold=result.best_threshold_cosine
        )
    _print(format_table(verification_rows(data), header=["metric", "value"]))
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import json

    from facelab.eval.calibration import calibrate, save_calibration
    from facelab.eval.report import format_table

    if args.scores:
        data = json.loads(Path(args.scores).read_text())
        if "scores" not in data or "issame" not in data:
            raise ConfigError(
                f"{args.scores}: needs 'scores' and 'issame' lists (write it with 'eval verify --save-scores')"
            )
        scores, issame = np.asarray(data["scores"], float), np.asarray(data["issame"], bool)
    elif args.pairs:
        result = _verify_result(args)
        scores, issame = result.scores, result.issame
    else:
        raise ConfigError("give --pairs (images to embed) or --scores (a verify JSON with scores)")
    cal = calibrate(scores, issame, args.far, n_boot=args.n_boot, seed=args.seed)
    save_calibration(cal, args.out)
    ci = cal.ci
    rows = [
        ["threshold (cosine, accept >=)", cal.threshold],
        ["FAR", cal.far],
        ["FRR", cal.frr],
        ["pairs", f"{cal.n_genuine} genuine, {cal.n_impostor} impostor"],
    ]
    if ci:
        rows.append(
            [f"{int(ci['level'] * 100)}% CI threshold", f"[{ci['threshold'][0]:.4f}, {ci['threshold'][1]:.4f}]"]
        )
        rows.append([f"{int(ci['level'] * 100)}% CI FRR", f"[{ci['frr'][0]:.4f}, {ci['frr'][1]:.4f}]"])
    _print(format_table(rows, header=["calibration", "value"]))
    _print(f"written to {args.out}")
    return 0


def _cmd_ijb(args: argparse.Namespace) -> int:
    from facelab.eval.ijb import (
        evaluate_ijb_1n,
        evaluate_ijb_11,
        ijb_face_features,
        load_ijb_meta,
        template_features,
        template_pair_scores,
    )
    from facelab.eval.report import format_table, write_json

    meta = load_ijb_meta(args.root, args.target)
    if args.features:
        feats = np.load(args.features, mmap_mode="r")
        if len(feats) != len(meta.names):
            raise ConfigError(f"{args.features}: {len(feats)} feature rows but the meta lists {len(meta.names)} faces")
    else:
        models = build_embedders(
            args.pack, args.model, offline=args.offline, providers=args.providers, batch_size=args.batch_size
        )
        feats = ijb_face_features(
            meta,
            models.embed,
            batch_size=args.batch_size,
            flip=not args.no_flip,
            image_size=models.input_size,
            progress=sys.stderr.isatty(),
        )
        if args.save_features:
            np.save(args.save_features, feats)
    faceness = meta.faceness if not args.no_detector_score else None
    templates, tfeats = template_features(feats, meta.templates, meta.medias, faceness)
    out: dict[str, Any] = {"target": meta.target}
    rows = []
    if meta.pairs is not None:
        t1, t2, label = meta.pairs
        scores = template_pair_scores(templates, tfeats, t1, t2, progress=sys.stderr.isatty())
        out["1:1"] = evaluate_ijb_11(scores, label)
        rows += [[f"1:1 TAR @ FAR={k}", v] for k, v in out["1:1"]["tar_at_far"].items()]
    if meta.galleries and meta.probes is not None:
        out["1:N"] = evaluate_ijb_1n(templates, tfeats, meta.galleries, meta.probes)
        for g, r in out["1:N"].items():
            rows += [[f"1:N {g} rank-{k}", v] for k, v in r["rank"].items()]
            rows += [[f"1:N {g} TPIR @ FPIR={k}", v] for k, v in r["tpir_at_fpir"].items()]
    if args.json:
        write_json(args.json, out)
    _print(format_table(rows, header=[meta.target, "value"]))
    return 0


def _cmd_widerface(args: argparse.Namespace) -> int:
    from facelab.eval.report import format_table, write_json
    from facelab.eval.widerface import evaluate_widerface

    result = evaluate_widerface(args.pred, args.gt, iou_thresh=args.iou)
    if args.json:
        write_json(args.json, result.to_dict())
    _print(format_table([[k, v] for k, v in result.ap.items()], header=["WIDER FACE", "AP"]))
    return 0


def _pts_files(path: Path) -> dict[str, Path]:
    if path.is_dir():
        return {p.stem: p for p in sorted(path.glob("*.pts"))}
    return {path.stem: path}


def _cmd_nme(args: argparse.Namespace) -> int:
    from facelab.eval.landmarks import ced_auc, nme, read_pts
    from facelab.eval.report import format_table, write_json

    pred, gt = _pts_files(Path(args.pred)), _pts_files(Path(args.gt))
    names = sorted(set(pred) & set(gt))
    if not names:
        raise ConfigError(f"no .pts file names in common between {args.pred} and {args.gt}")
    missing = sorted(set(gt) - set(pred))
    if missing:
        _logger.warning("%d ground-truth files have no prediction (first: %s)", len(missing), missing[0])
    errors = np.array([nme(read_pts(pred[n]), read_pts(gt[n]), args.norm)[0] for n in names])
    auc, failure = ced_auc(errors, args.threshold)
    out = {
        "norm": args.norm,
        "nme": float(errors.mean()),
        "auc": auc,
        "failure_rate": failure,
        "threshold": args.threshold,
        "n": len(names),
        "per_file": dict(zip(names, errors.tolist())),
    }
    if args.json:
        write_json(args.json, out)
    _print(
        format_table(
            [
                ["NME", out["nme"]],
                [f"AUC@{args.threshold:g}", auc],
                [f"failure rate @{args.threshold:g}", failure],
                ["files", len(names)],
            ],
            header=[args.norm, "value"],
        )
    )
    return 0


def _cmd_cluster(args: argparse.Namespace) -> int:
    from facelab.cli.cluster_cmd import _params
    from facelab.eval.cluster import cluster_metrics, embed_photos, load_labels, photo_cluster_metrics
    from facelab.eval.pairs import IMAGE_EXTENSIONS
    from facelab.eval.report import format_table, write_json

    labelled = load_labels(args.labels, args.images)
    params = _params(args.param)
    out: dict[str, Any] = {"labels": labelled.source, "photos": len(labelled)}
    if args.pred:
        from facelab.eval.cluster import labels_from_csv

        pred = labels_from_csv(args.pred, args.images or Path(args.labels).parent)
        found = dict(zip(pred.items, pred.labels))
        keep = [i for i, item in enumerate(labelled.items) if item in found]
        if not keep:
            raise ConfigError(f"{args.pred}: names none of the labelled images")
        codes = np.unique(np.array([found[labelled.items[i]] for i in keep]), return_inverse=True)[1]
        metrics = cluster_metrics(labelled.labels[keep], codes)
        kept = set(keep)
        out["missing"] = [labelled.items[i] for i in range(len(labelled)) if i not in kept]
    else:
        from facelab.gallery.cluster import recluster
        from facelab.pipeline import FaceAnalyzer
        from facelab.runtime.session import RuntimeOptions

        prov: Any = args.providers if args.providers == "auto" else [p.strip() for p in args.providers.split(",")]
        analyzer = FaceAnalyzer(
            args.pack,
            runtime=RuntimeOptions(providers=prov),
            download=not args.offline,
            batch_size=args.batch_size,
            modules=["detection", "recognition"],
        )
        threshold = args.threshold if args.threshold is not None else analyzer.threshold
        paths = list(labelled.items)
        if args.context:
            folder = Path(args.context)
            extra = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            labelled_paths = set(paths)
            paths += [p for p in extra if p not in labelled_paths]
        faces = embed_photos(analyzer, paths, progress=sys.stderr.isatty())
        result = recluster(faces.face_set(), algorithm=args.algorithm, threshold=threshold, params=params)
        metrics, missing = photo_cluster_metrics(labelled, faces, result.labels())
        out.update(
            pack=analyzer.pack_name,
            threshold=threshold,
            faces_clustered=len(faces),
            photos_clustered=len(paths),
            algorithm=result.info["params"],
            knn=result.info["knn"],
            missing=missing,
        )
        if missing:
            _logger.warning("%d labelled photos without a face were left out (first: %s)", len(missing), missing[0])
    out["metrics"] = metrics.to_dict()
    if args.json:
        write_json(args.json, out)
    rows = [[k, v] for k, v in metrics.to_dict().items()]
    _print(format_table(rows, header=["clustering", "value"]))
    return 0


def register(subparsers: Any) -> None:
    """Add ``eval`` and its sub-commands to the top-level parser."""
    parser = subparsers.add_parser("eval", help="evaluate recognition, detection and landmark accuracy")
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    p = sub.add_parser("verify", help="1:1 verification on a pair list (.bin, LFW pairs.txt, CSV or identity folders)")
    p.add_argument(
        "--pairs", required=True, help=".bin file, LFW pairs.txt, CSV pair list, or folder of identity folders"
    )
    p.add_argument("--images", default=None, help="image root for pairs.txt / CSV (default: the list's folder)")
    _model_options(p)
    p.add_argument("--folds", type=int, default=10, help="accuracy folds when the list has none (default 10)")
    p.add_argument("--no-flip", action="store_true", help="do not add the mirrored crop's embedding")
    p.add_argument("--impostors", type=int, default=None, help="impostor pairs sampled from identity folders")
    p.add_argument("--json", default=None, help="write the results as JSON")
    p.add_argument("--save-scores", action="store_true", help="include per-pair scores in the JSON (for calibrate)")
    p.add_argument("--plot", default=None, help="write ROC (and _det, _hist) PNGs; needs matplotlib")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("calibrate", help="threshold for a target FAR on your own labelled pairs")
    p.add_argument("--pairs", default=None, help="pair list or identity folders to embed")
    p.add_argument("--scores", default=None, help="a verify JSON written with --save-scores, instead of --pairs")
    p.add_argument("--images", default=None, help="image root for pairs.txt / CSV")
    _model_options(p)
    p.add_argument("--far", type=float, default=1e-3, help="target false-accept rate (default 1e-3)")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--folds", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--no-flip", action="store_true", help="do not add the mirrored crop's embedding")
    p.add_argument("--impostors", type=int, default=None, help="impostor pairs sampled from identity folders")
    p.add_argument("--out", required=True, help="calibration JSON to write")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("ijb", help="IJB-B / IJB-C 1:1 and 1:N from the official meta files")
    p.add_argument("--root", required=True, help="dataset folder with meta/ and loose_crop/")
    p.add_argument("--target", default="IJBC", choices=["IJBB", "IJBC"])
    p.add_argument("--features", default=None, help=".npy of (faces, D) features in meta order (skips embedding)")
    p.add_argument("--save-features", default=None, help="save the computed face features to this .npy")
    _model_options(p)
    p.add_argument("--no-flip", action="store_true", help="do not add the mirrored crop's embedding")
    p.add_argument("--no-detector-score", action="store_true", help="do not weight faces by the faceness score")
    p.add_argument("--json", default=None, help="write the results as JSON")
    p.set_defaults(func=_cmd_ijb)

    p = sub.add_parser("widerface", help="WIDER FACE val easy/medium/hard AP")
    p.add_argument("--pred", required=True, help="prediction folder (event/image.txt)")
    p.add_argument("--gt", required=True, help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default 0.5)")
    p.add_argument("--json", default=None, help="write {easy, medium, hard} as JSON")
    p.set_defaults(func=_cmd_widerface)

    p = sub.add_parser("nme", help="landmark NME, CED AUC and failure rate from .pts files")
    p.add_argument("--pred", required=True, help="predicted .pts file or folder")
    p.add_argument("--gt", required=True, help="ground-truth .pts file or folder (matched by file name)")
    p.add_argument("--norm", default="inter_ocular", choices=["inter_ocular", "inter_pupil", "box", "diagonal"])
    p.add_argument("--threshold", type=float, default=0.08, help="CED AUC / failure threshold (default 0.08)")
    p.add_argument("--json", default=None, help="write the results as JSON")
    p.set_defaults(func=_cmd_nme)

    p = sub.add_parser(
        "cluster", help="cluster labelled photos into people: pairwise / BCubed P, R, F, NMI, same-photo merges"
    )
    p.add_argument(
        "--labels", required=True, help="identity folders, a CSV of image,label, or a pair list (positive pairs)"
    )
    p.add_argument("--images", default=None, help="image root for CSV lists (default: the list's folder)")
    p.add_argument("--pred", default=None, help="score this CSV of image,cluster instead of clustering")
    p.add_argument("--context", default=None, help="also cluster every photo in this folder (unlabelled)")
    p.add_argument("--algorithm", default="default", help="clustering algorithm (default: the library default)")
    p.add_argument("--param", action="append", help="algorithm parameter NAME=VALUE (repeatable)")
    p.add_argument("--threshold", type=float, default=None, help="same-person cosine threshold (default: the pack's)")
    _model_options(p)
    p.add_argument("--json", default=None, help="write the results as JSON")
    p.set_defaults(func=_cmd_cluster)
