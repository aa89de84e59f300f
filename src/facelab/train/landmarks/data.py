"""Landmark annotations (iBUG ``.pts``, 300-W, WFLW) and the cropped, augmented training samples.

Formats (:data:`LANDMARK_FORMATS`, :func:`load_landmark_records`):

* ``pts`` — a folder (or one ``.pts`` file) of iBUG point files, each beside its image of the same
  stem (``.jpg``, ``.jpeg``, ``.png``, ``.ppm``, ``.bmp``); read with
  :func:`facelab.eval.landmarks.read_pts` (points as written, MATLAB's 1-based pixels unless
  ``zero_based``).
* ``300w`` — the 300-W layout: ``.pts`` files searched recursively under the root (``afw/``,
  ``helen/trainset/``, ``lfpw/trainset/``, ``ibug/``, ``01_Indoor/`` …), optionally restricted to
  ``subsets`` (sub-folders); 68 points.
* ``wflw`` — ``list_98pt_rect_attr_{train,test}.txt``: per line 196 coordinates ``x0 y0 … x97 y97``,
  the face rectangle ``x1 y1 x2 y2``, six attribute flags and the image path (relative to
  ``WFLW_images/``, the default root beside the ``WFLW_annotations`` folder); 98 points.

Training samples (:class:`LandmarkDataset`) follow InsightFace's ``Landmark`` model input: a
square crop of side ``S`` (192) centred on the face box with ``S / (1.5·max(w, h))`` pixels per
image pixel (:func:`facelab.alignment.transform.bbox_crop_transform` — the crop the runner makes),
jittered in scale, rotation and centre, optionally mirrored (with the layout's left/right
permutation) and photometrically distorted. Targets are the points in the crop divided by
``S / 2`` minus 1, i.e. in ``[−1, 1]``; the runner maps outputs back with ``(v + 1)·(S // 2)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facelab.errors import ConfigError
from facelab.registry import Registry

__all__ = [
    "LandmarkRecord",
    "LandmarkAugment",
    "LANDMARK_FORMATS",
    "FLIP_PAIRS",
    "flip_permutation",
    "load_landmark_records",
    "LandmarkDataset",
    "crop_sample",
    "assign_detector_boxes",
]

_logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")

#: Left/right point pairs for horizontal flips, by point count (iBUG 68; WFLW 98).
FLIP_PAIRS: dict[int, tuple[tuple[int, int], ...]] = {
    68: tuple((i, 16 - i) for i in range(8))
    + ((17, 26), (18, 25), (19, 24), (20, 23), (21, 22))
    + ((31, 35), (32, 34))
    + ((36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46))
    + ((48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)),
    98: tuple((i, 32 - i) for i in range(16))
    + ((33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47))
    + ((60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73))
    + ((55, 59), (56, 58), (76, 82), (77, 81), (78, 80), (87, 83), (86, 84), (88, 92), (89, 91), (95, 93), (96, 97)),
}


def flip_permutation(num_points: int, pairs: Sequence[Sequence[int]] | None = None) -> np.ndarray | None:
    """Index order of the points after a horizontal flip, or ``None`` when the layout's pairs are unknown."""
    pairs = FLIP_PAIRS.get(num_points) if pairs is None else pairs
    if pairs is None:
        return None
    perm = np.arange(num_points)
    for a, b in pairs:
        if not (0 <= a < num_points and 0 <= b < num_points):
            raise ConfigError(f"flip pair ({a}, {b}) outside 0..{num_points - 1}")
        perm[a], perm[b] = b, a
    return perm


@dataclass
class LandmarkRecord:
    """One annotated face.

    Attributes:
        path: the image.
        points: ``(K, 2)`` ``float32`` image pixels.
        box: ``(4,)`` ``float32`` ``[x1, y1, x2, y2]`` face box, or ``None`` (then the points' box).
        source: ``file:line`` of the annotation, for messages.
    """

    path: Path
    points: np.ndarray
    box: np.ndarray | None = None
    source: str = ""

    def face_box(self) -> np.ndarray:
        """The box the crop is centred on: :attr:`box`, else the bounding box of the points."""
        if self.box is not None:
            return self.box
        p = self.points
        return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()], np.float32)


def _image_beside(pts: Path) -> Path:
    for suffix in _IMAGE_SUFFIXES:
        for cand in (pts.with_suffix(suffix), pts.with_suffix(suffix.upper())):
            if cand.is_file():
                return cand
    raise ConfigError(f"{pts}: no image beside it (looked for {', '.join(_IMAGE_SUFFIXES)})")


def _read_pts_files(files: Sequence[Path], zero_based: bool) -> list[LandmarkRecord]:
    from facelab.eval.landmarks import read_pts

    out = []
    for f in files:
        pts = read_pts(f, zero_based=zero_based).astype(np.float32)
        out.append(LandmarkRecord(_image_beside(f), pts, None, str(f)))
    return out


def _read_pts(
    path: Path, root: Path | None, zero_based: bool = False, subsets: Sequence[str] = ()
) -> list[LandmarkRecord]:
    files = [path] if path.is_file() else sorted(path.glob("*.pts"))
    if not files:
        raise ConfigError(f"{path}: no .pts files")
    return _read_pts_files(files, zero_based)


def _read_300w(
    path: Path, root: Path | None, zero_based: bool = False, subsets: Sequence[str] = ()
) -> list[LandmarkRecord]:
    if not path.is_dir():
        raise ConfigError(f"{path}: the 300-W format needs the dataset folder")
    folders = [path / s for s in subsets] if subsets else [path]
    files: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: no such 300-W subset folder")
        files.extend(sorted(folder.rglob("*.pts")))
    if not files:
        raise ConfigError(f"{path}: no .pts files under {[str(f) for f in folders]}")
    records = _read_pts_files(files, zero_based)
    bad = [r.source for r in records if len(r.points) != 68]
    if bad:
        raise ConfigError(f"300-W files must have 68 points; {bad[0]} has {len(records[0].points)}")
    return records


def _read_wflw(
    path: Path, root: Path | None, zero_based: bool = False, subsets: Sequence[str] = ()
) -> list[LandmarkRecord]:
    if root is None:
        guess = path.parent.parent / "WFLW_images"
        root = guess if guess.is_dir() else path.parent
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such WFLW annotation file") from None
    for number, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 207:
            raise ConfigError(
                f"{path}:{number}: a WFLW line has 196 coordinates, 4 box values, 6 flags and a path; "
                f"got {len(tokens)} tokens"
            )
        try:
            values = np.array([float(t) for t in tokens[:200]], np.float32)
        except ValueError:
            raise ConfigError(f"{path}:{number}: not numbers before the image path: {line[:60]!r}...") from None
        out.append(
            LandmarkRecord(Path(root) / tokens[206], values[:196].reshape(98, 2), values[196:200], f"{path}:{number}")
        )
    return out


#: Readers by format: ``(path, image root, zero_based, subsets) -> [LandmarkRecord]``.
LANDMARK_FORMATS: Registry[Callable[..., list[LandmarkRecord]]] = Registry("landmark format")
LANDMARK_FORMATS.register("pts")(_read_pts)
LANDMARK_FORMATS.register("300w")(_read_300w)
LANDMARK_FORMATS.register("wflw")(_read_wflw)


def load_landmark_records(
    path: str | os.PathLike,
    fmt: str = "auto",
    image_root: str | os.PathLike | None = None,
    *,
    zero_based: bool = False,
    subsets: Sequence[str] = (),
) -> list[LandmarkRecord]:
    """Read landmark annotations.

    Args:
        path: a ``.pts`` file or folder (``pts``), the 300-W root (``300w``) or a WFLW list file (``wflw``).
        fmt: ``"pts"``, ``"300w"``, ``"wflw"`` or ``"auto"`` (``.txt`` → wflw; a folder with
            ``.pts`` files directly in it → pts; any other folder → 300w; a ``.pts`` file → pts).
        image_root: WFLW image folder (default ``WFLW_images`` beside the annotation folder).
        zero_based: subtract 1 from ``.pts`` coordinates (iBUG files use 1-based pixels).
        subsets: 300-W sub-folders to read (default all).

    Raises:
        ConfigError: missing or malformed files (the message names the file and line), or
            records with different point counts.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such landmark annotation file or folder")
    if fmt == "auto":
        if p.is_file():
            fmt = "wflw" if p.suffix.lower() == ".txt" else "pts"
        else:
            fmt = "pts" if any(p.glob("*.pts")) else "300w"
    if fmt not in LANDMARK_FORMATS:
        raise ConfigError(f"unknown landmark format {fmt!r}; known: {LANDMARK_FORMATS.names()} or 'auto'")
    records = LANDMARK_FORMATS.get(fmt)(p, Path(image_root) if image_root else None, zero_based, tuple(subsets))
    counts = {len(r.points) for r in records}
    if len(counts) != 1:
        raise ConfigError(f"{p}: records have different point counts {sorted(counts)}")
    missing = [str(r.path) for r in records if not r.path.is_file()]
    if missing:
        raise ConfigError(f"{p}: {len(missing)} images not found (first: {missing[0]})")
    return records


def assign_detector_boxes(records: list[LandmarkRecord], detector: object, min_iou: float = 0.3) -> int:
    """Replace each record's box by the detector's box of that face, as the landmark model will see it at inference.

    The detection with the highest IoU with the record's current box (or its points' box) is taken
    when the IoU reaches ``min_iou``; other records keep their box.

    Args:
        records: changed in place.
        detector: a facelab :class:`~facelab.detection.base.Detector` (``detect(path)``).
        min_iou: smallest accepted IoU.

    Returns:
        How many records got a detector box.
    """
    from facelab.ops.boxes import iou_matrix

    done = 0
    for rec in records:
        dets = detector.detect(str(rec.path))  # type: ignore[attr-defined]
        if len(dets) == 0:
            continue
        iou = iou_matrix(rec.face_box()[None].astype(np.float64), dets.boxes.astype(np.float64))[0]
        best = int(np.argmax(iou))
        if iou[best] >= min_iou:
            rec.box = dets.boxes[best].astype(np.float32)
            done += 1
    _logger.info("detector boxes for %d of %d faces", done, len(records))
    return done


# ----------------------------------------------------------------------------------- samples


@dataclass
class LandmarkAugment:
    """Jitter of the training crops (all off = the runner's exact crop).

    Attributes:
        scale: the crop scale is multiplied by ``U(1 − scale, 1 + scale)``.
        rotation: degrees; ``U(−rotation, rotation)`` with probability ``rotation_prob``.
        rotation_prob: probability of a rotation.
        shift: the centre moves by ``U(−shift, shift)`` box sides in x and y.
        flip_prob: probability of a horizontal flip (needs the layout's flip pairs).
        photometric: brightness ±32 and contrast ×[0.5, 1.5] with probability 0.5 each.
    """

    scale: float = 0.0
    rotation: float = 0.0
    rotation_prob: float = 0.6
    shift: float = 0.0
    flip_prob: float = 0.0
    photometric: bool = False


def crop_sample(
    image: np.ndarray,
    record: LandmarkRecord,
    size: int,
    expand: float = 1.5,
    rng: np.random.Generator | None = None,
    augment: LandmarkAugment | None = None,
    flip_perm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``(S, S, 3)`` ``uint8`` BGR crop of a face, its points in ``[−1, 1]`` and the image→crop matrix.

    Without ``augment`` the crop is exactly the runner's (:func:`~facelab.alignment.transform.bbox_crop_transform`).
    """
    import cv2

    from facelab.alignment.transform import bbox_crop_transform, crop_transform, transform_points

    box = record.face_box().astype(np.float64)
    points = record.points.astype(np.float64)
    if augment is None or rng is None:
        matrix = bbox_crop_transform(box.astype(np.float32), size, expand)
    else:
        w, h = box[2] - box[0], box[3] - box[1]
        side = max(w, h)
        center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        center += rng.uniform(-augment.shift, augment.shift, 2) * side
        scale = size / (side * expand) * rng.uniform(1 - augment.scale, 1 + augment.scale)
        rot = rng.uniform(-augment.rotation, augment.rotation) if rng.random() < augment.rotation_prob else 0.0
        matrix = crop_transform(center, size, scale, rot)
    crop = cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)
    pts = transform_points(points, matrix)
    if augment is not None and rng is not None:
        if flip_perm is not None and rng.random() < augment.flip_prob:
            crop = np.ascontiguousarray(crop[:, ::-1])
            pts = pts[flip_perm].copy()
            pts[:, 0] = size - pts[:, 0]
            flip = np.array([[-1.0, 0.0, size], [0.0, 1.0, 0.0]])
            matrix = flip @ np.vstack([matrix, [0, 0, 1]])
        if augment.photometric:
            img = crop.astype(np.float32)
            if rng.random() < 0.5:
                img += np.float32(rng.uniform(-32, 32))
            if rng.random() < 0.5:
                img *= np.float32(rng.uniform(0.5, 1.5))
            crop = np.clip(img, 0, 255).astype(np.uint8)
    target = (pts / (size / 2.0) - 1.0).astype(np.float32)
    return crop, target, matrix


class LandmarkDataset(torch.utils.data.Dataset):
    """Cropped training faces: items ``(crop (S, S, 3) uint8 BGR tensor, target (K, 2) float32 in [−1, 1])``.

    Sample ``i`` of epoch ``e`` is drawn with the generator ``(seed, e, i)``. Images are decoded
    once and kept (``cache``) — landmark sets for fine-tuning are small; pass ``cache=False`` for
    large ones.
    """

    def __init__(
        self,
        records: list[LandmarkRecord],
        size: int = 192,
        expand: float = 1.5,
        augment: LandmarkAugment | None = None,
        seed: int = 0,
        flip_pairs: Sequence[Sequence[int]] | None = None,
        cache: bool = True,
    ) -> None:
        if not records:
            raise ConfigError("no landmark training records")
        self.records, self.size, self.expand, self.augment, self.seed = records, size, expand, augment, int(seed)
        self.num_points = len(records[0].points)
        self.flip_perm = flip_permutation(self.num_points, flip_pairs)
        if augment is not None and augment.flip_prob > 0 and self.flip_perm is None:
            raise ConfigError(
                f"flips need the left/right pairs of the {self.num_points}-point layout; "
                "give flip_pairs or set flip_prob=0"
            )
        self.epoch = 0
        self.cache = cache
        self._images: dict[Path, np.ndarray] = {}

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation is drawn."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, path: Path) -> np.ndarray:
        from facelab.io.image import load_image

        if path in self._images:
            return self._images[path]
        img = load_image(path)
        if self.cache:
            self._images[path] = img
        return img

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rec = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        crop, target, _ = crop_sample(
            self._image(rec.path), rec, self.size, self.expand, rng, self.augment, self.flip_perm
        )
        return torch.from_numpy(crop), torch.from_numpy(target)
