"""General detection AP and recall for any box ground truth (PASCAL VOC style), plus dlib's XML reader.

Matching: all detections of the set are sorted by score (descending, stable); each is matched to
the ground-truth box of its image with the highest IoU. At IoU >= ``iou_thresh`` it is a true
positive if that box is not yet taken, a false positive if it is; a detection whose best box is
marked ``ignore`` counts as neither. Below the IoU it is a false positive. AP is the VOC all-point
area under the precision envelope. IoU uses continuous coordinates (no ``+1``).

Boxes are ``[x1, y1, x2, y2]`` pixels.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.eval.widerface import voc_ap
from facelab.ops.boxes import iou_matrix

__all__ = ["BoxGT", "read_dlib_xml", "DetectionAPResult", "detection_ap"]


@dataclass
class BoxGT:
    """Ground truth of one image.

    Attributes:
        boxes: ``(G, 4)`` ``float64`` ``[x1, y1, x2, y2]``.
        ignore: ``(G,)`` ``bool``: boxes that neither need to be found nor count against a detection.
    """

    boxes: np.ndarray
    ignore: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if self.ignore is None:
            self.ignore = np.zeros(len(self.boxes), bool)
        self.ignore = np.asarray(self.ignore, dtype=bool).reshape(-1)
        if len(self.ignore) != len(self.boxes):
            raise ConfigError("ignore flags must match the boxes")


def read_dlib_xml(path: str | os.PathLike) -> dict[str, BoxGT]:
    """Read a dlib imglab XML dataset (``<image file=...><box top left width height [ignore]/>``).

    Box corners are ``x1 = left``, ``y1 = top``, ``x2 = left + width``, ``y2 = top + height``.

    Returns:
        ``{image file (as written in the XML): BoxGT}``.

    Raises:
        ConfigError: missing or malformed file.
    """
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: no such XML file") from exc
    except ET.ParseError as exc:
        raise ConfigError(f"{p}: not valid XML: {exc}") from exc
    out: dict[str, BoxGT] = {}
    for image in root.iter("image"):
        name = image.get("file")
        if not name:
            raise ConfigError(f"{p}: <image> without a file attribute")
        boxes, ignore = [], []
        for box in image.findall("box"):
            try:
                top, left = float(box.get("top", "")), float(box.get("left", ""))
                width, height = float(box.get("width", "")), float(box.get("height", ""))
            except ValueError as exc:
                raise ConfigError(f"{p}: box of {name} lacks top/left/width/height") from exc
            boxes.append([left, top, left + width, top + height])
            ignore.append(box.get("ignore", "0").strip().lower() in ("1", "true"))
        out[name] = BoxGT(np.array(boxes).reshape(-1, 4), np.array(ignore, bool))
    return out


@dataclass
class DetectionAPResult:
    """Result of :func:`detection_ap`.

    Attributes:
        ap: VOC all-point average precision.
        recall: recall with every detection accepted.
        precision: precision with every detection accepted.
        n_gt: ground-truth boxes that count (not ignored).
        n_det: detections considered (those on ignored boxes excluded).
        tp: true positives with every detection accepted.
        recall_curve: ``(K,)`` recall after each detection in score order.
        precision_curve: ``(K,)`` precision after each detection.
        scores: ``(K,)`` the detections' scores in that order.
    """

    ap: float
    recall: float
    precision: float
    n_gt: int
    n_det: int
    tp: int
    recall_curve: np.ndarray = field(repr=False)
    precision_curve: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {
            "ap": self.ap,
            "recall": self.recall,
            "precision": self.precision,
            "n_gt": self.n_gt,
            "n_det": self.n_det,
            "tp": self.tp,
        }


def detection_ap(
    ground_truth: Mapping[str, BoxGT | np.ndarray],
    detections: Mapping[str, tuple[np.ndarray, np.ndarray] | np.ndarray],
    *,
    iou_thresh: float = 0.5,
) -> DetectionAPResult:
    """VOC-style AP, recall and precision of detections against any box ground truth.

    Args:
        ground_truth: ``{image: BoxGT or (G, 4) [x1, y1, x2, y2]}``.
        detections: ``{image: (boxes (N, 4), scores (N,))}`` or ``{image: (N, 5) [x1, y1, x2, y2, score]}``
            (a :class:`~facelab.structures.Detections` works through its ``det`` property).
            Images absent from ``detections`` have none; detections on images absent from the
            ground truth are all false positives.
        iou_thresh: IoU needed for a match.

    Returns:
        The :class:`DetectionAPResult`.

    Example:
        >>> gt = {"a": np.array([[0, 0, 10, 10], [20, 20, 30, 30]])}
        >>> det = {"a": np.array([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.8], [20, 20, 30, 30, 0.7]])}
        >>> r = detection_ap(gt, det)
        >>> round(r.ap, 4), r.recall, round(r.precision, 4)
        (0.8333, 1.0, 0.6667)
    """
    gts = {k: v if isinstance(v, BoxGT) else BoxGT(v) for k, v in ground_truth.items()}
    records = []  # (score, image, order-in-image, box)
    for image, det in detections.items():
        if isinstance(det, tuple):
            boxes = np.asarray(det[0], np.float64).reshape(-1, 4)
            scores = np.asarray(det[1], np.float64).reshape(-1)
        else:
            arr = np.asarray(getattr(det, "det", det), np.float64).reshape(-1, 5)
            boxes, scores = arr[:, :4], arr[:, 4]
        if len(boxes) != len(scores):
            raise ConfigError(f"{image}: {len(boxes)} boxes but {len(scores)} scores")
        for i in range(len(boxes)):
            records.append((float(scores[i]), image, boxes[i]))
    order = sorted(range(len(records)), key=lambda i: -records[i][0])
    taken = {k: np.zeros(len(v.boxes), bool) for k, v in gts.items()}
    n_gt = int(sum((~v.ignore).sum() for v in gts.values()))
    flags, kept_scores = [], []
    for i in order:
        score, image, box = records[i]
        gt = gts.get(image)
        if gt is None or len(gt.boxes) == 0:
            flags.append(0)
            kept_scores.append(score)
            continue
        iou = iou_matrix(box[None], gt.boxes)[0]
        j = int(np.argmax(iou))
        if iou[j] >= iou_thresh:
            if gt.ignore[j]:
                continue
            if not taken[image][j]:
                taken[image][j] = True
                flags.append(1)
            else:
                flags.append(0)
        else:
            flags.append(0)
        kept_scores.append(score)
    tp = np.cumsum(np.array(flags, dtype=np.float64))
    n = np.arange(1, len(flags) + 1, dtype=np.float64)
    recall = tp / n_gt if n_gt else np.zeros(len(flags))
    precision = tp / n if len(flags) else np.zeros(0)
    ap = voc_ap(recall, precision) if n_gt and len(flags) else 0.0
    total_tp = int(tp[-1]) if len(tp) else 0
    return DetectionAPResult(
        ap=ap,
        recall=total_tp / n_gt if n_gt else 0.0,
        precision=total_tp / len(flags) if flags else 0.0,
        n_gt=n_gt,
        n_det=len(flags),
        tp=total_tp,
        recall_curve=recall,
        precision_curve=precision,
        scores=np.array(kept_scores),
    )
