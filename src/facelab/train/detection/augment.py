"""Training augmentation of SCRFD and RetinaFace, on numpy images (OpenCV; no torch).

Images are ``(H, W, 3)`` BGR (``uint8`` in, ``float32`` out), boxes ``(N, 4)`` ``[x1, y1, x2, y2]``
pixels, keypoints ``(N, 5, 3)`` ``(x, y, weight)`` and ignore flags ``(N,)``. Every random choice
is drawn from the ``numpy.random.Generator`` passed in, so a sample is a function of its seed
(the datasets seed it with ``(seed, epoch, index)``; resumed runs see the same augmentation).

Pipelines (:data:`AUGMENTATIONS`, built by :func:`build_augmentation`):

* ``"scrfd"`` — InsightFace SCRFD's ``train_pipeline`` (``configs/scrfd/*.py``):
  ``RandomSquareCrop`` with ``crop_choice`` ``[0.3, 0.45, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0]``
  (a square of side ``choice × long side`` placed at random, padded with 128 where it leaves the
  image; up to 250 placements per scale until the centre of a face falls inside; faces whose
  centre is outside are dropped, the others clipped), ``Resize`` to ``size × size`` without
  keeping the ratio (bilinear), ``RandomFlip`` 0.5 (boxes mirrored, keypoints mirrored and their
  left/right order swapped, :data:`~facelab.train.detection.annotations.FLIP_ORDER`), and
  mmdet's ``PhotoMetricDistortion`` (brightness ±32, contrast and saturation ×[0.5, 1.5], hue
  ±18°, contrast before or after the HSV steps, random channel swap; values not clipped).
* ``"retinaface"`` — biubug6/Pytorch_Retinaface ``data/data_augment.py``: a random square crop
  of ``scale × short side`` (scales ``[0.3, 0.45, 0.6, 0.8, 1.0]``; kept when at least one face
  lies fully inside and one centre is in it, up to 250 tries, else the image is padded to a square
  with the mean colour ``(104, 117, 123)``), photometric distortion on ``uint8`` (brightness ±32,
  contrast, saturation ×[0.5, 1.5], hue ±18 on OpenCV's 0..180 scale, clipped), horizontal flip
  0.5 with the keypoint swap, and a resize to ``size`` with one of five interpolations at random.
* ``"letterbox"`` — the inference preprocessing (:func:`facelab.ops.boxes.letterbox`: keep the
  ratio, top-left on a black canvas) plus an optional flip; for fine-tuning and overfitting runs.

:func:`draw_augmented_samples` writes augmented samples as PNG files with their boxes and
keypoints drawn, to check a pipeline by eye.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.registry import Registry
from facelab.train.detection.annotations import FLIP_ORDER, ImageAnnotation

__all__ = [
    "AUGMENTATIONS",
    "SCRFD_CROP_CHOICE",
    "RETINAFACE_CROP_SCALES",
    "RETINAFACE_MEAN_BGR",
    "Sample",
    "build_augmentation",
    "random_square_crop",
    "retinaface_crop",
    "resize_sample",
    "flip_sample",
    "photometric_distortion",
    "retinaface_distortion",
    "letterbox_sample",
    "draw_augmented_samples",
    "draw_sample",
    "AugmentOptions",
]

_logger = logging.getLogger(__name__)

#: SCRFD's ``RandomSquareCrop`` ``crop_choice`` (side as a fraction of the long image side).
SCRFD_CROP_CHOICE = (0.3, 0.45, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
#: biubug6 RetinaFace's crop scales (side as a fraction of the short image side).
RETINAFACE_CROP_SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)
#: biubug6 RetinaFace's mean colour (BGR), used as padding and subtracted at normalisation.
RETINAFACE_MEAN_BGR = (104.0, 117.0, 123.0)


@dataclass
class Sample:
    """An image with its faces, as it moves through a pipeline.

    Attributes:
        image: ``(H, W, 3)`` BGR, ``uint8`` or ``float32``.
        boxes: ``(N, 4)`` ``float32`` ``[x1, y1, x2, y2]``.
        keypoints: ``(N, 5, 3)`` ``float32`` ``(x, y, weight)``.
        ignore: ``(N,)`` ``bool``.
        flipped: whether a horizontal flip was applied.
        matrix: ``(3, 3)`` map from original image coordinates to this sample's (continuous
            coordinates: pixel ``j`` spans ``[j, j + 1)``), composed over the geometric steps.
    """

    image: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray
    ignore: np.ndarray
    flipped: bool = False
    matrix: np.ndarray = field(default_factory=lambda: np.eye(3))

    @classmethod
    def from_annotation(cls, image: np.ndarray, ann: ImageAnnotation) -> Sample:
        """The sample of a loaded image and its annotation (arrays copied)."""
        return cls(image, ann.boxes.copy(), ann.keypoints.copy(), ann.ignore.copy())

    def select(self, mask: np.ndarray) -> Sample:
        """The faces where ``mask`` is true."""
        return Sample(self.image, self.boxes[mask], self.keypoints[mask], self.ignore[mask], self.flipped, self.matrix)

    def then(
        self, image: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, step: np.ndarray, flipped: bool | None = None
    ) -> Sample:
        """A new sample after a geometric step ``step`` (``(3, 3)``)."""
        return Sample(
            image, boxes, keypoints, self.ignore, self.flipped if flipped is None else flipped, step @ self.matrix
        )


def _centers_inside(boxes: np.ndarray, patch: Sequence[float]) -> np.ndarray:
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    return (c[:, 0] > patch[0]) & (c[:, 1] > patch[1]) & (c[:, 0] < patch[2]) & (c[:, 1] < patch[3])


def _paste(image: np.ndarray, patch: np.ndarray, fill: float | Sequence[float]) -> np.ndarray:
    """The ``patch = [x1, y1, x2, y2]`` region of ``image``; parts outside the image are ``fill``."""
    x1, y1, x2, y2 = (int(v) for v in patch)
    out = np.empty((y2 - y1, x2 - x1, 3), image.dtype)
    out[...] = np.asarray(fill, dtype=image.dtype)
    sx1, sy1 = max(0, x1), max(0, y1)
    sx2, sy2 = min(image.shape[1], x2), min(image.shape[0], y2)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    return out


def _shift_clip(sample: Sample, mask: np.ndarray, patch: np.ndarray, image: np.ndarray) -> Sample:
    s = sample.select(mask)
    boxes = s.boxes.copy()
    boxes[:, 2:] = np.minimum(boxes[:, 2:], patch[2:])
    boxes[:, :2] = np.maximum(boxes[:, :2], patch[:2])
    boxes -= np.tile(patch[:2], 2).astype(np.float32)
    kps = s.keypoints.copy()
    kps[:, :, :2] = np.clip(kps[:, :, :2], patch[:2], patch[2:]) - patch[:2]
    step = np.array([[1.0, 0.0, -patch[0]], [0.0, 1.0, -patch[1]], [0.0, 0.0, 1.0]])
    return s.then(image, boxes.astype(np.float32), kps.astype(np.float32), step)


def random_square_crop(
    sample: Sample, rng: np.random.Generator, crop_choice: Sequence[float] = SCRFD_CROP_CHOICE, fill: float = 128.0
) -> Sample:
    """SCRFD's ``RandomSquareCrop``: a square of side ``int(choice × long side)`` at a random place.

    Each try draws a scale from ``crop_choice`` (after the first try, when no choice exceeds 1,
    the previous scale grows by 1.2) and up to 250 placements; a placement is accepted when the
    centre of at least one non-ignored face is strictly inside. Faces whose centre is outside are
    dropped; the rest are clipped to the square. Areas outside the image are ``fill``.
    """
    img = sample.image
    h, w = img.shape[:2]
    choices = np.asarray(crop_choice, np.float64)
    max_scale = float(choices.max())
    wanted = sample.boxes[~sample.ignore]
    scale = float(rng.choice(choices))
    for attempt in range(1000):
        if attempt > 0:
            scale = float(rng.choice(choices)) if max_scale > 1.0 else scale * 1.2
        for _ in range(250):
            cw = ch = int(scale * max(w, h))
            left = 0 if w == cw else int(rng.integers(min(0, w - cw), max(0, w - cw) + 1))
            top = 0 if h == ch else int(rng.integers(min(0, h - ch), max(0, h - ch) + 1))
            patch = np.array([left, top, left + cw, top + ch], np.int64)
            if len(wanted) and not _centers_inside(wanted, patch).any():
                continue
            mask = _centers_inside(sample.boxes, patch)
            return _shift_clip(sample, mask, patch, _paste(img, patch, fill))
    raise ConfigError("random_square_crop: no placement keeps a face centre inside the crop")  # pragma: no cover


def retinaface_crop(
    sample: Sample,
    rng: np.random.Generator,
    scales: Sequence[float] = RETINAFACE_CROP_SCALES,
    size: int = 640,
) -> tuple[Sample, bool]:
    """biubug6's ``_crop``: a random square of ``scale × short side`` inside the image.

    A try is kept when at least one face lies fully inside the square, at least one face centre
    is strictly inside, and some kept face is still wider and taller than 0 pixels at the training
    ``size``. Up to 250 tries.

    Returns:
        ``(sample, pad)``; ``pad`` is true when no try succeeded (the sample is unchanged and is to
        be padded to a square).
    """
    img = sample.image
    height, width = img.shape[:2]
    for _ in range(250):
        scale = float(rng.choice(np.asarray(scales, np.float64)))
        side = int(scale * min(width, height))
        left = 0 if width == side else int(rng.integers(0, width - side))
        top = 0 if height == side else int(rng.integers(0, height - side))
        roi = np.array([left, top, left + side, top + side], np.int64)
        b = sample.boxes
        inside = (b[:, 0] >= roi[0]) & (b[:, 1] >= roi[1]) & (b[:, 2] <= roi[2]) & (b[:, 3] <= roi[3])
        if not inside.any():
            continue
        mask = _centers_inside(b, roi)
        if not mask.any():
            continue
        out = _shift_clip(sample, mask, roi, img[roi[1] : roi[3], roi[0] : roi[2]])
        bw = (out.boxes[:, 2] - out.boxes[:, 0] + 1) / side * size
        bh = (out.boxes[:, 3] - out.boxes[:, 1] + 1) / side * size
        keep = np.minimum(bw, bh) > 0.0
        if not keep.any():
            continue
        return out.select(keep), False
    return sample, True


def resize_sample(sample: Sample, size: int, interpolation: int | None = None) -> Sample:
    """Resize to ``size × size`` (aspect ratio not kept); boxes clipped to the new image, keypoints scaled."""
    import cv2

    h, w = sample.image.shape[:2]
    sx, sy = size / w, size / h
    image = cv2.resize(
        sample.image, (size, size), interpolation=cv2.INTER_LINEAR if interpolation is None else interpolation
    )
    boxes = sample.boxes * np.array([sx, sy, sx, sy], np.float32)
    boxes = np.clip(boxes, 0, size).astype(np.float32)
    kps = sample.keypoints.copy()
    kps[:, :, 0] *= sx
    kps[:, :, 1] *= sy
    return sample.then(image, boxes, kps, np.diag([sx, sy, 1.0]))


def flip_sample(sample: Sample) -> Sample:
    """Mirror horizontally: ``x → W − x`` for boxes and keypoints, keypoint order :data:`FLIP_ORDER`."""
    w = sample.image.shape[1]
    image = np.ascontiguousarray(sample.image[:, ::-1])
    boxes = sample.boxes.copy()
    boxes[:, 0], boxes[:, 2] = w - sample.boxes[:, 2], w - sample.boxes[:, 0]
    kps = sample.keypoints[:, list(FLIP_ORDER)].copy()
    kps[:, :, 0] = np.where(kps[:, :, 2] > 0, w - kps[:, :, 0], kps[:, :, 0])
    step = np.array([[-1.0, 0.0, w], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return sample.then(image, boxes, kps, step, not sample.flipped)


def photometric_distortion(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness_delta: float = 32.0,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: float = 18.0,
) -> np.ndarray:
    """The ``PhotoMetricDistortion`` of mmdet on a ``float32`` BGR image (each step with probability 0.5).

    Brightness ``+U(−δ, δ)``; contrast ``×U(range)`` before (mode 1) or after (mode 0) the HSV steps;
    in OpenCV's float HSV (hue in degrees) saturation ``×U(range)`` and hue ``+U(−18, 18)`` wrapped
    to ``[0, 360]``; then a random permutation of the channels. Values are not clipped.
    """
    import cv2

    img = image.astype(np.float32, copy=True)
    if rng.integers(2):
        img += np.float32(rng.uniform(-brightness_delta, brightness_delta))
    mode = int(rng.integers(2))
    if mode == 1 and rng.integers(2):
        img *= np.float32(rng.uniform(*contrast_range))
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    if rng.integers(2):
        hsv[..., 1] *= np.float32(rng.uniform(*saturation_range))
    if rng.integers(2):
        hue = hsv[..., 0] + np.float32(rng.uniform(-hue_delta, hue_delta))
        hue[hue > 360] -= 360
        hue[hue < 0] += 360
        hsv[..., 0] = hue
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0 and rng.integers(2):
        img *= np.float32(rng.uniform(*contrast_range))
    if rng.integers(2):
        img = img[..., rng.permutation(3)]
    return np.ascontiguousarray(img, dtype=np.float32)


def retinaface_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """biubug6's ``_distort`` on a ``uint8`` BGR image (values clipped to 0..255 after each step)."""
    import cv2

    def convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> None:
        values[...] = np.clip(values.astype(np.float64) * alpha + beta, 0, 255)

    img = np.ascontiguousarray(image, dtype=np.uint8).copy()
    contrast_first = bool(rng.integers(2))
    if rng.integers(2):
        convert(img, beta=float(rng.uniform(-32, 32)))
    if contrast_first and rng.integers(2):
        convert(img, alpha=float(rng.uniform(0.5, 1.5)))
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    if rng.integers(2):
        convert(hsv[:, :, 1], alpha=float(rng.uniform(0.5, 1.5)))
    if rng.integers(2):
        hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + int(rng.integers(-18, 19))) % 180
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if not contrast_first and rng.integers(2):
        convert(img, alpha=float(rng.uniform(0.5, 1.5)))
    return img


def letterbox_sample(sample: Sample, size: int) -> tuple[Sample, float]:
    """The inference preprocessing (:func:`facelab.ops.boxes.letterbox`) applied to a sample; ``(sample, scale)``.

    Boxes and keypoints are multiplied by the letterbox ``scale`` on both axes, the inverse of
    what the runners do to their detections.
    """
    from facelab.ops.boxes import letterbox

    canvas, scale = letterbox(np.ascontiguousarray(sample.image), (size, size))
    kps = sample.keypoints.copy()
    kps[:, :, :2] *= scale
    return sample.then(canvas, sample.boxes * np.float32(scale), kps, np.diag([scale, scale, 1.0])), scale


# ----------------------------------------------------------------------------- pipelines


@dataclass
class AugmentOptions:
    """Settings shared by the pipelines (from the training config).

    Attributes:
        size: output side in pixels.
        crop_choice: crop scales (empty: the pipeline's published ones).
        flip_prob: probability of a horizontal flip.
        photometric: whether to apply the photometric distortion.
    """

    size: int = 640
    crop_choice: tuple[float, ...] = ()
    flip_prob: float = 0.5
    photometric: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class _Pipeline:
    name = ""

    def __init__(self, options: AugmentOptions) -> None:
        if options.size < 32:
            raise ConfigError(f"augmentation size must be at least 32, got {options.size}")
        if not 0.0 <= options.flip_prob <= 1.0:
            raise ConfigError(f"flip_prob must be in [0, 1], got {options.flip_prob}")
        self.options = options

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Augment ``sample``; the result's image is ``(size, size, 3)`` ``float32`` BGR."""
        raise NotImplementedError


#: Augmentation pipelines by name: classes built from :class:`AugmentOptions`.
AUGMENTATIONS: Registry[type[_Pipeline]] = Registry("augmentation pipeline")


@AUGMENTATIONS.register("scrfd")
class ScrfdPipeline(_Pipeline):
    """SCRFD: random square crop → resize (no ratio) → flip → photometric distortion."""

    name = "scrfd"

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """See :class:`_Pipeline`."""
        o = self.options
        s = Sample(sample.image.astype(np.float32), sample.boxes, sample.keypoints, sample.ignore, matrix=sample.matrix)
        s = random_square_crop(s, rng, o.crop_choice or SCRFD_CROP_CHOICE)
        s = resize_sample(s, o.size)
        if rng.random() < o.flip_prob:
            s = flip_sample(s)
        if o.photometric:
            s.image = photometric_distortion(s.image, rng)
        s.image = s.image.astype(np.float32, copy=False)
        return s


@AUGMENTATIONS.register("retinaface")
class RetinaFacePipeline(_Pipeline):
    """biubug6 RetinaFace: crop → distort → pad to square on failure → flip → resize (random interpolation)."""

    name = "retinaface"

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """See :class:`_Pipeline`."""
        import cv2

        o = self.options
        s, pad = retinaface_crop(sample, rng, o.crop_choice or RETINAFACE_CROP_SCALES, o.size)
        image = retinaface_distortion(s.image, rng) if o.photometric else np.asarray(s.image, np.uint8)
        if pad:
            h, w = image.shape[:2]
            image = _paste(image, np.array([0, 0, max(h, w), max(h, w)]), RETINAFACE_MEAN_BGR)
        s = Sample(image, s.boxes, s.keypoints, s.ignore, s.flipped, s.matrix)
        if rng.random() < o.flip_prob:
            s = flip_sample(s)
        methods = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)
        s = resize_sample(s, o.size, methods[int(rng.integers(len(methods)))])
        s.image = s.image.astype(np.float32)
        return s


@AUGMENTATIONS.register("letterbox")
class LetterboxPipeline(_Pipeline):
    """The inference letterbox plus an optional flip (no crop, no colour change)."""

    name = "letterbox"

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """See :class:`_Pipeline`."""
        s, _ = letterbox_sample(sample, self.options.size)
        if rng.random() < self.options.flip_prob:
            s = flip_sample(s)
        if self.options.photometric:
            s.image = photometric_distortion(s.image.astype(np.float32), rng)
        s.image = s.image.astype(np.float32, copy=False)
        return s


def build_augmentation(name: str, options: AugmentOptions) -> _Pipeline:
    """The pipeline registered as ``name`` (``"scrfd"``, ``"retinaface"``, ``"letterbox"``).

    Raises:
        ConfigError: unknown name or bad options.
    """
    if name not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {name!r}; known: {AUGMENTATIONS.names()}")
    return AUGMENTATIONS.get(name)(options)


# ----------------------------------------------------------------------------- drawing

_LEFT, _RIGHT, _NOSE = (0, 200, 0), (0, 0, 230), (230, 120, 0)
_KPS_COLOURS = (_LEFT, _RIGHT, _NOSE, _LEFT, _RIGHT)


def draw_sample(sample: Sample) -> np.ndarray:
    """A ``uint8`` BGR picture of a sample.

    Boxes yellow (ignored ones grey); keypoints: left eye and mouth corner green, right ones red, nose blue.
    """
    import cv2

    canvas = np.clip(sample.image, 0, 255).astype(np.uint8).copy()
    for box, kps, ign in zip(sample.boxes, sample.keypoints, sample.ignore):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (128, 128, 128) if ign else (0, 220, 255), 1)
        for (x, y, wt), colour in zip(kps, _KPS_COLOURS):
            if wt > 0:
                cv2.circle(canvas, (int(round(float(x))), int(round(float(y)))), 2, colour, -1)
    return canvas


def draw_augmented_samples(
    records: Sequence[ImageAnnotation],
    pipeline: _Pipeline,
    out_dir: str | os.PathLike,
    *,
    per_image: int = 2,
    seed: int = 0,
) -> list[Path]:
    """Augment every image ``per_image`` times and write each result as a PNG with its faces drawn.

    Args:
        records: annotated images (:func:`~facelab.train.detection.annotations.load_annotations`).
        pipeline: from :func:`build_augmentation`.
        out_dir: folder for ``<stem>_<k>.png`` files (created).
        per_image: samples per image.
        seed: sample ``k`` of image ``i`` uses the generator seeded ``(seed, i, k)``.

    Returns:
        The written files.
    """
    import cv2

    from facelab.io.image import load_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, rec in enumerate(records):
        image = load_image(rec.path)
        for k in range(per_image):
            sample = pipeline(Sample.from_annotation(image, rec), np.random.default_rng([seed, i, k]))
            path = out / f"{rec.path.stem}_{k}.png"
            if not cv2.imwrite(str(path), draw_sample(sample)):
                raise ConfigError(f"could not write {path}")
            written.append(path)
    _logger.info("wrote %d augmented samples to %s", len(written), out)
    return written
