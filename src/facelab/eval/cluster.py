"""Clustering quality: pairwise and BCubed precision/recall/F, NMI, and same-photo violations.

The metrics follow ``yl-1993/learn-to-cluster:evaluation/metrics.py``. With ``c[i, j]`` the number
of faces of true identity ``i`` put into predicted cluster ``j`` and ``N`` faces:

* **pairwise**: ``tp = Σ c² − N`` (ordered same-cluster same-identity pairs), ``P = tp / (Σ_j
  |pred_j|² − N)``, ``R = tp / (Σ_i |true_i|² − N)``, ``F = 2PR / (P + R)``. A prediction with no
  pair has ``P = 1`` (it merges nothing wrongly); ground truth with no pair has ``R = 1``.
* **BCubed**: ``P = Σ c² / |pred_j| / N``, ``R = Σ c² / |true_i| / N`` (the per-face precision and
  recall averaged over faces), ``F = 2PR / (P + R)``.
* **NMI**: mutual information over the arithmetic mean of the two entropies (scikit-learn's
  ``normalized_mutual_info_score`` default); 1 when both labelings are a single cluster.

An unassigned face (predicted label ``-1``) is a cluster of its own.

Ground truth comes from :func:`load_labels`: a folder of identity sub-folders, a CSV of face →
label, or a ``master.csv``-style pair list whose positive pairs define identities (connected
components; images in no positive pair are identities of their own).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.eval.pairs import _find_column

__all__ = [
    "ClusterMetrics",
    "LabelledImages",
    "pairwise_prf",
    "bcubed_prf",
    "nmi",
    "same_image_violations",
    "cluster_metrics",
    "load_labels",
    "labels_from_folders",
    "labels_from_csv",
    "labels_from_pairs",
    "PhotoFaces",
    "embed_photos",
    "photo_cluster_metrics",
]

_logger = logging.getLogger(__name__)

_ITEM_COLUMNS = ("face", "image", "img", "path", "file", "filename", "item")
_LABEL_COLUMNS = ("label", "identity", "person", "name", "id", "class", "cluster")


def _codes(labels: Any, singletons: bool) -> np.ndarray:
    """Labels as ``0..K-1`` codes; with ``singletons``, every ``-1`` gets its own code."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ConfigError(f"labels must be 1-D, got shape {arr.shape}")
    if singletons and arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
        lone = arr < 0
        if lone.any():
            arr = arr.copy()
            arr[lone] = arr.max(initial=0) + 1 + np.arange(int(lone.sum()))
    return np.unique(arr, return_inverse=True)[1].astype(np.int64)


def _contingency(gt: Any, pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nonzero cells ``c``, their true class and predicted cluster."""
    g, p = _codes(gt, False), _codes(pred, True)
    if len(g) != len(p):
        raise ConfigError(f"{len(g)} true labels but {len(p)} predicted labels")
    if len(g) == 0:
        raise ConfigError("no faces to evaluate")
    key = g * (int(p.max()) + 1) + p
    cells, counts = np.unique(key, return_counts=True)
    return counts.astype(np.float64), cells // (int(p.max()) + 1), cells % (int(p.max()) + 1)


def pairwise_prf(gt: Any, pred: Any) -> tuple[float, float, float]:
    """Pairwise precision, recall and F (see the module docstring).

    Example:
        >>> [round(x, 4) for x in pairwise_prf([0, 0, 1, 1], [0, 0, 0, 1])]
        [0.3333, 0.5, 0.4]
    """
    c, gi, pj = _contingency(gt, pred)
    n = c.sum()
    tp = np.sum(c**2) - n
    pred_pairs = np.sum(np.bincount(pj, weights=c) ** 2) - n
    true_pairs = np.sum(np.bincount(gi, weights=c) ** 2) - n
    precision = float(tp / pred_pairs) if pred_pairs > 0 else 1.0
    recall = float(tp / true_pairs) if true_pairs > 0 else 1.0
    return precision, recall, _f(precision, recall)


def bcubed_prf(gt: Any, pred: Any) -> tuple[float, float, float]:
    """BCubed precision, recall and F (see the module docstring).

    Example:
        >>> [round(x, 4) for x in bcubed_prf([0, 0, 1, 1], [0, 0, 0, 1])]
        [0.6667, 0.75, 0.7059]
    """
    c, gi, pj = _contingency(gt, pred)
    n = c.sum()
    pred_size = np.bincount(pj, weights=c)
    true_size = np.bincount(gi, weights=c)
    precision = float(np.sum(c**2 / pred_size[pj]) / n)
    recall = float(np.sum(c**2 / true_size[gi]) / n)
    return precision, recall, _f(precision, recall)


def nmi(gt: Any, pred: Any) -> float:
    """Normalised mutual information, arithmetic-mean normalisation.

    Example:
        >>> round(nmi([0, 0, 1, 1], [1, 1, 0, 0]), 6)
        1.0
    """
    c, gi, pj = _contingency(gt, pred)
    n = c.sum()
    a = np.bincount(gi, weights=c)
    b = np.bincount(pj, weights=c)
    if len(a) == len(b) == 1:
        return 1.0
    mi = float(np.sum(c / n * np.log(c * n / (a[gi] * b[pj]))))
    h_gt = float(-np.sum(a / n * np.log(a / n)))
    h_pred = float(-np.sum(b / n * np.log(b / n)))
    denom = (h_gt + h_pred) / 2.0
    return max(0.0, min(1.0, mi / denom)) if denom > 0 else 1.0


def _f(p: float, r: float) -> float:
    return 2.0 * p * r / (p + r) if p + r > 0 else 0.0


def same_image_violations(pred: Any, image_ids: Any) -> tuple[int, int]:
    """Pairs of faces of one photo that share a predicted person.

    Args:
        pred: ``(N,)`` predicted labels (``-1``: unassigned, never a violation).
        image_ids: ``(N,)`` photo of each face.

    Returns:
        ``(pairs, photos)``: violating face pairs and photos with at least one.

    Example:
        >>> same_image_violations([0, 0, 1, 0], ["a", "a", "a", "b"])
        (1, 1)
    """
    pred = np.asarray(pred, np.int64)
    images = np.unique(np.asarray(image_ids), return_inverse=True)[1]
    if len(pred) != len(images):
        raise ConfigError(f"{len(pred)} labels but {len(images)} image ids")
    keep = pred >= 0
    key, counts = np.unique(images[keep] * (int(pred.max(initial=0)) + 1) + pred[keep], return_counts=True)
    bad = counts > 1
    pairs = int(np.sum(counts[bad] * (counts[bad] - 1) // 2))
    photos = len(np.unique(key[bad] // (int(pred.max(initial=0)) + 1)))
    return pairs, photos


@dataclass
class ClusterMetrics:
    """All clustering metrics of one prediction.

    Attributes:
        faces: labelled faces evaluated.
        identities: true identities among them.
        clusters: predicted clusters among them (an unassigned face counts as one).
        unassigned: labelled faces left unassigned.
        pairwise_precision, pairwise_recall, pairwise_f: pairwise metrics.
        bcubed_precision, bcubed_recall, bcubed_f: BCubed metrics.
        nmi: normalised mutual information.
        same_image_pairs: pairs of faces of one photo in one predicted person (over every face
            given, labelled or not); ``None`` when no photo ids were given.
        same_image_photos: photos with such a pair.
    """

    faces: int
    identities: int
    clusters: int
    unassigned: int
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    nmi: float
    same_image_pairs: int | None = None
    same_image_photos: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a JSON-ready dictionary."""
        return asdict(self)


def cluster_metrics(gt: Any, pred: Any, *, all_pred: Any = None, image_ids: Any = None) -> ClusterMetrics:
    """Every metric of a prediction against ground truth.

    Args:
        gt: ``(N,)`` true labels of the labelled faces.
        pred: ``(N,)`` predicted labels of the same faces (``-1``: unassigned).
        all_pred: ``(M,)`` predicted labels of every face clustered (labelled or not), for the
            same-photo count; default ``pred``.
        image_ids: ``(M,)`` photo of each face of ``all_pred`` (or of ``pred``).

    Returns:
        The :class:`ClusterMetrics`.
    """
    pred_arr = np.asarray(pred)
    p = pairwise_prf(gt, pred_arr)
    b = bcubed_prf(gt, pred_arr)
    pairs = photos = None
    if image_ids is not None:
        pairs, photos = same_image_violations(pred_arr if all_pred is None else all_pred, image_ids)
    unassigned = int(np.sum(pred_arr < 0)) if pred_arr.dtype.kind in "iu" else 0
    return ClusterMetrics(
        faces=len(pred_arr),
        identities=len(np.unique(np.asarray(gt))),
        clusters=int(_codes(pred_arr, True).max()) + 1,
        unassigned=unassigned,
        pairwise_precision=p[0],
        pairwise_recall=p[1],
        pairwise_f=p[2],
        bcubed_precision=b[0],
        bcubed_recall=b[1],
        bcubed_f=b[2],
        nmi=nmi(gt, pred_arr),
        same_image_pairs=pairs,
        same_image_photos=photos,
    )


@dataclass
class LabelledImages:
    """Photos with the identity of their (main) face.

    Attributes:
        items: image paths.
        labels: ``(N,)`` identity label of each (strings).
        source: where the labels came from.
    """

    items: list[str]
    labels: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)


def labels_from_folders(root: str | os.PathLike) -> LabelledImages:
    """``root/<identity>/<image>``: the sub-folder name is the label.

    Raises:
        ConfigError: not a folder, or no image in any sub-folder.
    """
    from facelab.eval.pairs import IMAGE_EXTENSIONS

    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder")
    items, labels = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
            items.append(str(f))
            labels.append(sub.name)
    if not items:
        raise ConfigError(f"{root}: no images in identity sub-folders")
    return LabelledImages(items, np.array(labels), f"folders:{root}")


def labels_from_csv(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    item: str | None = None,
    label: str | None = None,
) -> LabelledImages:
    """A CSV with one row per face: an image column and a label column.

    Columns are found case-insensitively (image: ``face/image/img/path/file/...``; label:
    ``label/identity/person/name/...``) unless named. Relative paths are under ``image_root``
    (default: the CSV's folder).

    Raises:
        ConfigError: missing file or columns, an empty list, or one image with two labels.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such CSV file")
    root = Path(image_root) if image_root is not None else path.parent
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        icol = item or _find_column(columns, _ITEM_COLUMNS)
        lcol = label or _find_column(columns, _LABEL_COLUMNS)
        if icol is None or lcol is None or icol not in columns or lcol not in columns:
            raise ConfigError(f"{path}: needs an image column and a label column (columns: {columns})")
        seen: dict[str, str] = {}
        for row_no, row in enumerate(reader, start=2):
            name, lab = (row.get(icol) or "").strip(), (row.get(lcol) or "").strip()
            if not name:
                continue
            if not lab:
                raise ConfigError(f"{path}: line {row_no}: empty label")
            full = name if os.path.isabs(name) else str(root / name)
            if seen.get(full, lab) != lab:
                raise ConfigError(f"{path}: line {row_no}: {name} has two labels ({seen[full]!r}, {lab!r})")
            seen[full] = lab
    if not seen:
        raise ConfigError(f"{path}: no rows")
    return LabelledImages(list(seen), np.array(list(seen.values())), f"csv:{path}")


def labels_from_pairs(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> LabelledImages:
    """Identities from a pair list: connected components of its positive pairs.

    Args:
        path: a CSV pair list (``file_x,file_y,Decision``, see
            :func:`facelab.eval.pairs.read_csv_pairs`) or LFW ``pairs.txt``.
        image_root: image folder (default: the list's folder).

    Returns:
        One entry per image of the list; the label names the component (its first image's file name).

    Raises:
        ConfigError: an unreadable list, or a negative pair inside one component (the list
            contradicts itself).
    """
    from facelab.eval.pairs import load_pairs
    from facelab.gallery.cluster._graph import components

    pairs = load_pairs(path, image_root)
    same = pairs.issame
    roots = components(len(pairs.items), pairs.pairs[same, 0], pairs.pairs[same, 1]).tolist()
    for (a, b), positive in zip(pairs.pairs.tolist(), same.tolist()):
        if not positive and roots[a] == roots[b]:
            raise ConfigError(
                f"{path}: {pairs.items[a]} and {pairs.items[b]} are a negative pair but linked by positive pairs"
            )
    items = [str(i) for i in pairs.items]
    labels = np.array([Path(items[r]).name for r in roots])
    return LabelledImages(items, labels, f"pairs:{path}")


def load_labels(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> LabelledImages:
    """Ground truth from a folder of identity folders, a face → label CSV, or a pair list.

    A CSV with two image columns and a same/different column is read as pairs; a CSV with an
    image and a label column as face labels; ``.txt`` as LFW ``pairs.txt``.

    Raises:
        ConfigError: the path does not exist or matches no format.
    """
    path = Path(path)
    if path.is_dir():
        return labels_from_folders(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
        from facelab.eval.pairs import _LABEL_COLUMNS as PAIR_LABELS
        from facelab.eval.pairs import _LEFT_COLUMNS, _RIGHT_COLUMNS

        if (
            _find_column(header, _LEFT_COLUMNS)
            and _find_column(header, _RIGHT_COLUMNS)
            and _find_column(header, PAIR_LABELS)
        ):
            return labels_from_pairs(path, image_root)
        return labels_from_csv(path, image_root)
    return labels_from_pairs(path, image_root)


@dataclass
class PhotoFaces:
    """Every face of a list of photos, embedded.

    Attributes:
        paths: the photos.
        image: ``(N,)`` int64 index into ``paths`` of each face.
        embeddings: ``(N, D)`` float32 raw embeddings.
        boxes: ``(N, 4)`` float32 ``[x1, y1, x2, y2]`` pixels.
        main: ``(N,)`` bool, the photo's main face (largest and most central: the face
            ``FaceAnalyzer.analyze(photo, max_num=1)`` returns, the one a photo-level label names).
    """

    paths: list[str]
    image: np.ndarray
    embeddings: np.ndarray
    boxes: np.ndarray
    main: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def face_set(self) -> Any:
        """The faces as a :class:`~facelab.gallery.cluster.FaceSet` (face id = row, image id = photo index)."""
        from facelab.gallery.cluster import FaceSet

        return FaceSet(np.arange(len(self.image)), self.embeddings, self.image)


def embed_photos(analyzer: Any, paths: Sequence[str], batch: int = 8, progress: bool = False) -> PhotoFaces:
    """Detect and embed every face of every photo with a :class:`~facelab.pipeline.FaceAnalyzer`.

    Photos without a face contribute nothing (logged); the main face of each photo is marked.

    Raises:
        ConfigError: the analyser has no recogniser, or no face in any photo.
    """
    from facelab.io import load_image
    from facelab.ops.boxes import select_max_num

    if getattr(analyzer, "recognizer", None) is None:
        raise ConfigError("the analyser has no recognition model: clustering needs embeddings")
    image, emb, boxes, main = [], [], [], []
    paths = [str(p) for p in paths]
    iterator = range(0, len(paths), batch)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="embedding photos", unit="batch")
    for start in iterator:
        arrays = [load_image(p, max_pixels=getattr(analyzer, "max_pixels", None)) for p in paths[start : start + batch]]
        for offset, (array, faces) in enumerate(zip(arrays, analyzer.analyze_batch(arrays))):
            faces = [f for f in faces if f.embedding is not None]
            if not faces:
                _logger.info("%s: no face", paths[start + offset])
                continue
            b = np.stack([np.asarray(f.bbox, np.float32) for f in faces])
            first = int(select_max_num(b, array.shape, 1)[0])
            for j, f in enumerate(faces):
                image.append(start + offset)
                emb.append(np.asarray(f.embedding, np.float32))
                boxes.append(b[j])
                main.append(j == first)
    if not image:
        raise ConfigError("no face found in any photo")
    return PhotoFaces(paths, np.array(image, np.int64), np.stack(emb), np.stack(boxes), np.array(main))


def photo_cluster_metrics(labelled: LabelledImages, faces: PhotoFaces, pred: Any) -> tuple[ClusterMetrics, list[str]]:
    """Score a clustering of every face of labelled photos.

    Each labelled photo's label names its main face (:attr:`PhotoFaces.main`); the other faces
    of the photos (and faces of unlabelled context photos) are clustered too but not scored,
    except that the same-photo count covers every face.

    Args:
        labelled: the ground truth.
        faces: every face of the photos (``labelled.items`` must be among ``faces.paths``).
        pred: ``(len(faces),)`` predicted labels (``-1``: unassigned).

    Returns:
        ``(metrics, missing)``: the :class:`ClusterMetrics` and the labelled photos in which no
        face was found (left out of the scores).

    Raises:
        ConfigError: ``pred`` does not match ``faces``, or no labelled photo has a face.
    """
    pred = np.asarray(pred, np.int64)
    if len(pred) != len(faces):
        raise ConfigError(f"{len(pred)} predicted labels for {len(faces)} faces")
    main_row = {faces.paths[int(i)]: r for r, i in enumerate(faces.image) if faces.main[r]}
    rows, gt, missing = [], [], []
    for item, label in zip(labelled.items, labelled.labels):
        if item in main_row:
            rows.append(main_row[item])
            gt.append(label)
        else:
            missing.append(item)
    if not rows:
        raise ConfigError("no labelled photo has a detected face")
    metrics = cluster_metrics(np.array(gt), pred[rows], all_pred=pred, image_ids=faces.image)
    return metrics, missing
