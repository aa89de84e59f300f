"""WIDER FACE validation AP (easy / medium / hard), computed as the official toolkit's Python port does.

The procedure (InsightFace ``detection/scrfd/mmdet/core/evaluation/widerface.py``, itself a port of
the official MATLAB toolkit):

1. Scores of **all** predictions of the whole set are min-max normalised to ``[0, 1]``.
2. For each setting (easy, medium, hard) and image, ground-truth boxes (``x y w h``, turned into
   corners as ``x + w``, ``y + h``) outside the setting's keep list are *ignored*. Predictions,
   in descending score order, are matched to the ground-truth box of highest IoU (``+1`` pixel
   area convention); at IoU >= 0.5 a prediction on an ignored box is dropped (neither true nor
   false positive), on a kept box it recalls it once (later ones are false positives).
3. For 1000 thresholds ``1 - (t + 1) / 1000`` the valid proposals and recalled faces at or above
   the threshold are summed over images; precision and recall (over every kept face of the set)
   give a PR curve and its VOC all-point AP.

Deliberate differences, each on inputs where the port misbehaves: predictions of an image are
sorted by score (the port assumes they are); when every score is equal the normalised scores
are 1 (the port divides by zero); an image without a prediction file counts as having no
detections (the port raises ``KeyError``).

Predictions are given in memory as ``{event: {image_name: (N, 5) [x, y, w, h, score]}}`` or read
from the official submission layout: ``<pred_dir>/<event>/<image_name>.txt`` holding the image
name, the box count, then one ``x y w h score`` line per box.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError

__all__ = [
    "SETTINGS",
    "WiderFaceGT",
    "load_widerface_gt",
    "read_widerface_predictions",
    "write_widerface_predictions",
    "normalize_scores",
    "voc_ap",
    "WiderFaceResult",
    "evaluate_widerface",
]

_logger = logging.getLogger(__name__)

#: The three WIDER FACE difficulty settings, in report order.
SETTINGS = ("easy", "medium", "hard")

Predictions = Mapping[str, Mapping[str, np.ndarray]]


@dataclass
class WiderFaceGT:
    """WIDER FACE ground truth.

    Attributes:
        events: event folder names (``"0--Parade"``...), in file order.
        images: per event, the image names without extension.
        boxes: per event, per image, ``(G, 4)`` ``float64`` ``[x, y, w, h]`` boxes.
        keep: per setting name, per event, per image, ``(K,)`` ``int64`` **0-based** indices of the
            boxes that count in that setting (the others are ignored).
    """

    events: list[str]
    images: list[list[str]]
    boxes: list[list[np.ndarray]]
    keep: dict[str, list[list[np.ndarray]]]

    @property
    def n_images(self) -> int:
        """Number of images."""
        return sum(len(x) for x in self.images)

    def as_predictions(self, score: float | None = None) -> dict[str, dict[str, np.ndarray]]:
        """All ground-truth boxes as predictions ``[x, y, w, h, score]`` (score 1, or ``score``)."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for e, event in enumerate(self.events):
            out[event] = {}
            for name, b in zip(self.images[e], self.boxes[e]):
                s = np.full((len(b), 1), 1.0 if score is None else score)
                out[event][name] = np.hstack([b, s])
        return out


def _mat_str(cell: Any) -> str:
    arr = np.asarray(cell)
    while arr.dtype == object and arr.size == 1:
        arr = np.asarray(arr.reshape(-1)[0])
    return str(arr.reshape(-1)[0]) if arr.ndim else str(arr)


def load_widerface_gt(gt_dir: str | os.PathLike) -> WiderFaceGT:
    """Read ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` from ``gt_dir`` (needs SciPy).

    Raises:
        ConfigError: a file is missing or malformed.
        ImportError: SciPy is not installed (``pip install facelab[eval]``).
    """
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading WIDER FACE .mat files needs SciPy: pip install 'facelab[eval]'") from exc
    root = Path(gt_dir)
    files = {"face": root / "wider_face_val.mat", **{s: root / f"wider_{s}_val.mat" for s in SETTINGS}}
    for path in files.values():
        if not path.is_file():
            raise ConfigError(
                f"WIDER FACE ground truth file {path} not found "
                "(need wider_face_val.mat and wider_{easy,medium,hard}_val.mat)"
            )
    try:
        face = loadmat(str(files["face"]))
        events_cell, files_cell, boxes_cell = face["event_list"], face["file_list"], face["face_bbx_list"]
    except (KeyError, ValueError, OSError) as exc:
        raise ConfigError(f"{files['face']}: not a WIDER FACE ground-truth .mat: {exc}") from exc
    events, images, boxes = [], [], []
    for i in range(len(events_cell)):
        events.append(_mat_str(events_cell[i][0]))
        names = files_cell[i][0]
        bbs = boxes_cell[i][0]
        images.append([_mat_str(names[j][0]) for j in range(len(names))])
        boxes.append([np.asarray(bbs[j][0], dtype=np.float64).reshape(-1, 4) for j in range(len(bbs))])
    keep: dict[str, list[list[np.ndarray]]] = {}
    for setting in SETTINGS:
        try:
            gt_list = loadmat(str(files[setting]))["gt_list"]
        except (KeyError, ValueError, OSError) as exc:
            raise ConfigError(f"{files[setting]}: not a WIDER FACE setting .mat: {exc}") from exc
        if len(gt_list) != len(events):
            raise ConfigError(f"{files[setting]}: {len(gt_list)} events, but wider_face_val.mat has {len(events)}")
        keep[setting] = [
            [np.asarray(gt_list[i][0][j][0], dtype=np.int64).reshape(-1) - 1 for j in range(len(gt_list[i][0]))]
            for i in range(len(events))
        ]
    return WiderFaceGT(events, images, boxes, keep)


def _image_key(name: str) -> str:
    base = name.replace("\\", "/").split("/")[-1]
    stem, ext = os.path.splitext(base)
    return stem if ext.lower() in (".jpg", ".jpeg", ".png") else base


def read_widerface_predictions(pred_dir: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read predictions in the official submission layout.

    Args:
        pred_dir: folder of event folders, each with one ``.txt`` per image: first line the image
            name (a path is allowed), second the number of boxes, then ``x y w h score`` lines.

    Returns:
        ``{event: {image_name_without_extension: (N, 5) float64}}``.

    Raises:
        ConfigError: missing folder or a malformed file.
    """
    root = Path(pred_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: prediction folder not found")
    out: dict[str, dict[str, np.ndarray]] = {}
    for event_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        current: dict[str, np.ndarray] = {}
        for txt in sorted(event_dir.glob("*.txt")):
            lines = [ln.strip() for ln in txt.read_text().splitlines()]
            if len(lines) < 2:
                raise ConfigError(f"{txt}: expected an image-name line and a count line")
            try:
                count = int(float(lines[1])) if lines[1] else 0
                rows = [[float(v) for v in ln.split()[:5]] for ln in lines[2:] if ln]
            except ValueError as exc:
                raise ConfigError(f"{txt}: unreadable number: {exc}") from exc
            if any(len(r) != 5 for r in rows):
                raise ConfigError(f"{txt}: every box line needs 'x y w h score'")
            if count != len(rows):
                _logger.warning("%s: count line says %d boxes, found %d", txt, count, len(rows))
            key = _image_key(lines[0]) if lines[0] else txt.stem
            current[key] = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        out[event_dir.name] = current
    return out


def write_widerface_predictions(pred_dir: str | os.PathLike, predictions: Predictions) -> None:
    """Write ``{event: {image: (N, 5) [x, y, w, h, score]}}`` in the official submission layout."""
    root = Path(pred_dir)
    for event, images in predictions.items():
        folder = root / event
        folder.mkdir(parents=True, exist_ok=True)
        for name, boxes in images.items():
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
            lines = [f"{name}.jpg", str(len(b))] + [" ".join(f"{v:.10g}" for v in r) for r in b]
            (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")


def normalize_scores(predictions: Predictions) -> dict[str, dict[str, np.ndarray]]:
    """Copy of the predictions with scores min-max normalised over the whole set (see module doc)."""
    lo, hi = np.inf, -np.inf
    for images in predictions.values():
        for v in images.values():
            v = np.asarray(v)
            if len(v):
                lo = min(lo, float(np.min(v[:, 4])))
                hi = max(hi, float(np.max(v[:, 4])))
    out: dict[str, dict[str, np.ndarray]] = {}
    for event, images in predictions.items():
        out[event] = {}
        for name, v in images.items():
            v = np.array(v, dtype=np.float64).reshape(-1, 5)
            if len(v):
                v[:, 4] = (v[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
            out[event][name] = v
    return out


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP: area under the monotone precision envelope, with sentinels (0, 0) and (1, 0).

    NaN precision (no proposal at a threshold) only occurs at zero recall and does not contribute.

    Example:
        >>> voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]))
        0.75
    """
    mrec = np.concatenate(([0.0], np.asarray(recall, np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.nan_to_num(np.asarray(precision, np.float64), nan=0.0), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou_plus_one(pred_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """``(P, G)`` IoU with the ``+1`` pixel convention of the port; zero where the overlap is empty."""
    w = (
        np.minimum(pred_xyxy[:, None, 2], gt_xyxy[None, :, 2])
        - np.maximum(pred_xyxy[:, None, 0], gt_xyxy[None, :, 0])
        + 1
    )
    h = (
        np.minimum(pred_xyxy[:, None, 3], gt_xyxy[None, :, 3])
        - np.maximum(pred_xyxy[:, None, 1], gt_xyxy[None, :, 1])
        + 1
    )
    inter = w * h
    area_p = (pred_xyxy[:, 2] - pred_xyxy[:, 0] + 1) * (pred_xyxy[:, 3] - pred_xyxy[:, 1] + 1)
    area_g = (gt_xyxy[:, 2] - gt_xyxy[:, 0] + 1) * (gt_xyxy[:, 3] - gt_xyxy[:, 1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_p[:, None] + area_g[None, :] - inter)
    iou[(w <= 0) | (h <= 0)] = 0.0
    return iou


@dataclass
class WiderFaceResult:
    """AP per setting plus the PR curves.

    Attributes:
        ap: ``{"easy": ..., "medium": ..., "hard": ...}``.
        precision: per setting, ``(T,)`` precision at each threshold (NaN where nothing is proposed).
        recall: per setting, ``(T,)`` recall at each threshold.
        thresholds: ``(T,)`` normalised-score thresholds.
        n_faces: per setting, the number of kept faces.
        missing_images: images of the ground truth without predictions.
    """

    ap: dict[str, float]
    precision: dict[str, np.ndarray] = field(repr=False)
    recall: dict[str, np.ndarray] = field(repr=False)
    thresholds: np.ndarray = field(repr=False)
    n_faces: dict[str, int] = field(default_factory=dict)
    missing_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with ``easy``, ``medium``, ``hard`` AP at the top level."""
        return {**self.ap, "n_faces": self.n_faces, "missing_images": self.missing_images}


def evaluate_widerface(
    predictions: Predictions | str | os.PathLike,
    gt: WiderFaceGT | str | os.PathLike,
    *,
    iou_thresh: float = 0.5,
    thresh_num: int = 1000,
) -> WiderFaceResult:
    """Easy / medium / hard AP of predictions on WIDER FACE val.

    Args:
        predictions: ``{event: {image: (N, 5) [x, y, w, h, score]}}`` or the submission folder.
        gt: a :class:`WiderFaceGT` or the folder of the four ``.mat`` files.
        iou_thresh: IoU for a match (0.5).
        thresh_num: number of score thresholds (1000).

    Returns:
        The :class:`WiderFaceResult`.
    """
    if not isinstance(predictions, Mapping):
        predictions = read_widerface_predictions(predictions)
    if not isinstance(gt, WiderFaceGT):
        gt = load_widerface_gt(gt)
    preds = normalize_scores(predictions)
    thresholds = 1 - (np.arange(thresh_num) + 1) / thresh_num
    missing = 0
    # Per image: scores sorted descending, best-IoU gt index and its IoU per prediction.
    matches: list[list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]] = []
    for e, event in enumerate(gt.events):
        event_preds = preds.get(event, {})
        row: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
        for name, boxes in zip(gt.images[e], gt.boxes[e]):
            p = event_preds.get(name)
            if p is None:
                missing += 1
                p = np.zeros((0, 5))
            if len(boxes) == 0 or len(p) == 0:
                row.append(None)
                continue
            p = p[np.argsort(-p[:, 4], kind="stable")]
            pxy = p[:, :4].copy()
            pxy[:, 2] += pxy[:, 0]
            pxy[:, 3] += pxy[:, 1]
            gxy = boxes.copy()
            gxy[:, 2] += gxy[:, 0]
            gxy[:, 3] += gxy[:, 1]
            iou = _iou_plus_one(pxy, gxy)
            row.append((p[:, 4], iou.argmax(axis=1), iou.max(axis=1)))
        matches.append(row)
    if missing:
        _logger.warning(
            "%d of %d ground-truth images have no predictions (counted as no detections)", missing, gt.n_images
        )
    ap: dict[str, float] = {}
    prec: dict[str, np.ndarray] = {}
    rec: dict[str, np.ndarray] = {}
    n_faces: dict[str, int] = {}
    for setting in SETTINGS:
        pr = np.zeros((thresh_num, 2))
        count_face = 0
        for e in range(len(gt.events)):
            for j, m in enumerate(matches[e]):
                keep = gt.keep[setting][e][j]
                count_face += len(keep)
                if m is None:
                    continue
                scores, best, best_iou = m
                counted = np.zeros(len(gt.boxes[e][j]), dtype=bool)
                counted[keep] = True
                state = np.zeros(len(counted), dtype=np.int8)  # 0 untouched, 1 recalled, -1 hit while ignored
                proposal = np.ones(len(scores), dtype=np.int64)
                pred_recall = np.zeros(len(scores), dtype=np.int64)
                recalled = 0
                for h, (g, o) in enumerate(zip(best.tolist(), best_iou.tolist())):
                    if o >= iou_thresh:
                        if not counted[g]:
                            state[g] = -1
                            proposal[h] = 0
                        elif state[g] == 0:
                            state[g] = 1
                            recalled += 1
                    pred_recall[h] = recalled
                n_above = np.searchsorted(-scores, -thresholds, side="right")  # predictions with score >= t
                valid = np.cumsum(proposal)
                has = n_above > 0
                idx = n_above[has] - 1
                pr[has, 0] += valid[idx]
                pr[has, 1] += pred_recall[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = pr[:, 1] / pr[:, 0]
            recall = pr[:, 1] / count_face if count_face else np.zeros(thresh_num)
        ap[setting] = voc_ap(recall, precision)
        prec[setting], rec[setting], n_faces[setting] = precision, recall, count_face
    return WiderFaceResult(ap, prec, rec, thresholds, n_faces, missing)
