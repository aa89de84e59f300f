"""``facelab train detect``: the detector training config, dataset and run.

:class:`DetectConfig` extends the loop settings (:class:`~facelab.train.loop.LoopConfig`) with
the model, the data, the augmentation, the loss constants and the evaluation; YAML files and
``key=value`` overrides go through :func:`facelab.train.config.load_config` (``cls=DetectConfig``),
so ``configs/detection/scrfd_2.5g_kps.yaml`` is ``_base_: scrfd_base.yaml`` plus a few keys.

:func:`train_detector` builds the variant (optionally from pretrained weights), the
:class:`DetectionDataset` over the training annotations, the family's criterion
(:class:`~facelab.train.detection.losses.ScrfdCriterion` or
:class:`~facelab.train.detection.losses.RetinaFaceCriterion`) and runs
:func:`facelab.train.loop.run_loop`. Evaluation (every ``eval_every`` steps and at the end) runs
facelab's own detector class (:class:`facelab.detection.SCRFD` / :class:`facelab.detection.RetinaFace`)
on the torch model through :class:`~facelab.train.torch_session.TorchSession` — the same
letterbox, decoding and NMS as the exported file — and scores it with
:func:`facelab.eval.detection_ap.detection_ap` on ``val_ann`` and, when given,
:func:`facelab.eval.widerface.evaluate_widerface` on WIDER FACE val.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelab.errors import ConfigError
from facelab.train.config import check_fields
from facelab.train.detection.annotations import ImageAnnotation, load_annotations, to_box_gt
from facelab.train.detection.augment import AugmentOptions, Sample, _Pipeline, build_augmentation
from facelab.train.detection.losses import RetinaFaceCriterion, ScrfdCriterion, Targets
from facelab.train.detection.variants import DETECTOR_VARIANTS, DetectorModel, export_signature, get_variant
from facelab.train.loop import LoopConfig, LoopResult, run_loop

__all__ = [
    "load_records",
    "training_augmentation",
    "DetectConfig",
    "DetectionDataset",
    "collate_detection",
    "train_detector",
    "make_runner",
    "evaluate_detector",
]

_logger = logging.getLogger(__name__)


@dataclass
class DetectConfig(LoopConfig):
    """Everything a detector training run needs (defaults: SCRFD-500M-kps as published)."""

    model: str = "scrfd_500m_kps"  #: a name of DETECTOR_VARIANTS
    model_width: float = 1.0  #: width multiplier (1.0 = published; smaller for CPU smoke runs)
    pretrained: str = ""  #: a biubug6 .pth state_dict or a facelab model.pt to start from
    freeze_bn: bool = False  #: batch norms in eval mode while training (small-batch fine-tuning)
    #: annotation file(s): label.txt, labelv2.txt, wider_face_*_bbx_gt.txt, COCO .json, dlib .xml
    train_ann: list[str] = field(default_factory=list)
    train_format: str = "auto"
    train_root: str = ""  #: image folder the annotation paths are relative to
    min_size: float = 0.0  #: faces smaller than this (pixels, either side) are ignored
    val_ann: list[str] = field(default_factory=list)  #: annotation file(s) scored with detection AP during training
    val_format: str = "auto"
    val_root: str = ""
    widerface_val_images: str = ""  #: WIDER_val/images (event folders) ...
    widerface_val_gt: str = ""  #: ... and the folder of wider_face_val.mat + wider_{easy,medium,hard}_val.mat
    input_size: int = 640  #: training crops are resized to input_size x input_size
    augment: str = ""  #: "scrfd", "retinaface" or "letterbox"; "" = the family's own
    crop_choice: list[float] = field(default_factory=list)  #: crop scales; [] = the pipeline's published ones
    flip_prob: float = 0.5
    photometric: bool = True
    eval_size: int = 640  #: evaluation letterbox side
    eval_score_thr: float = 0.02  #: score threshold of evaluation (SCRFD/RetinaFace test_cfg)
    eval_nms_thr: float = 0.4  #: NMS IoU of evaluation (facelab's runner default)
    # SCRFD loss (SCRFDHead / ATSSAssigner / mmdet losses)
    atss_topk: int = 9
    ignore_iof_thr: float = -1.0  #: ATSS: anchors with IoF above this to an ignored face are ignored (-1 = off)
    qfl_beta: float = 2.0
    bbox_loss_weight: float = 2.0
    kps_loss_weight: float = 0.1
    kps_beta: float = 0.1111111111111111
    # RetinaFace loss (MultiBoxLoss)
    match_thresh: float = 0.35
    neg_pos_ratio: int = 7
    loc_weight: float = 2.0

    def validate(self) -> DetectConfig:
        """Check ranges; returns ``self``. Raises :class:`~facelab.errors.ConfigError`."""
        self.check_loop()
        if self.model not in DETECTOR_VARIANTS:
            raise ConfigError(f"config: unknown model {self.model!r}; known: {', '.join(DETECTOR_VARIANTS.names())}")
        stride = 32 if DETECTOR_VARIANTS.get(self.model).family == "scrfd" else 1  # RetinaFace priors: any size
        checks = [
            (
                self.input_size >= 64 and self.input_size % stride == 0,
                f"input_size must be >= 64 and a multiple of {stride} (640)",
            ),
            (self.eval_size >= 64 and self.eval_size % stride == 0, f"eval_size must be a multiple of {stride}"),
            (0 < self.model_width <= 4, "model_width must be in (0, 4]"),
            (0 <= self.flip_prob <= 1, "flip_prob must be in [0, 1]"),
            (
                self.augment in ("", "scrfd", "retinaface", "letterbox"),
                "augment must be scrfd, retinaface or letterbox",
            ),
            (self.atss_topk >= 1 and self.neg_pos_ratio >= 1, "atss_topk and neg_pos_ratio must be >= 1"),
            (
                0 < self.match_thresh < 1 and 0 <= self.eval_nms_thr <= 1,
                "match_thresh and eval_nms_thr must be in (0, 1)",
            ),
            (
                bool(self.widerface_val_images) == bool(self.widerface_val_gt),
                "give both widerface_val_images and widerface_val_gt",
            ),
        ]
        check_fields(checks)
        return self


class DetectionDataset(torch.utils.data.Dataset):
    """Augmented training samples; sample ``i`` of epoch ``e`` is drawn with the generator ``(seed, e, i)``.

    Items are dicts: ``image`` ``(S, S, 3)`` ``float32`` BGR tensor and ``targets``
    (:class:`~facelab.train.detection.losses.Targets`). Faces left with no area after augmentation
    are dropped; ignored faces go to ``targets.ignore_boxes``.
    """

    def __init__(self, records: list[ImageAnnotation], pipeline: Any, seed: int = 0) -> None:
        if not records:
            raise ConfigError("no training images")
        self.records, self.pipeline, self.seed, self.epoch = records, pipeline, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation is drawn."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int) -> Sample:
        """The augmented :class:`~facelab.train.detection.augment.Sample` of ``index`` (this epoch)."""
        from facelab.io.image import load_image

        rec = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.pipeline(Sample.from_annotation(load_image(rec.path), rec), rng)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.sample(index)
        w = s.boxes[:, 2] - s.boxes[:, 0]
        h = s.boxes[:, 3] - s.boxes[:, 1]
        keep = (w > 0) & (h > 0)
        learn = keep & ~s.ignore
        targets = Targets(
            torch.from_numpy(np.ascontiguousarray(s.boxes[learn], np.float32)),
            torch.from_numpy(np.ascontiguousarray(s.keypoints[learn], np.float32)),
            torch.from_numpy(np.ascontiguousarray(s.boxes[keep & s.ignore], np.float32)),
        )
        return {"image": torch.from_numpy(np.ascontiguousarray(s.image, np.float32)), "targets": targets}


def collate_detection(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the images ``(N, S, S, 3)``; keep the targets as a list."""
    return {"images": torch.stack([it["image"] for it in items]), "targets": [it["targets"] for it in items]}


def _criterion(cfg: DetectConfig, model: DetectorModel) -> Any:
    v = model.variant
    if v.family == "scrfd":
        return ScrfdCriterion(
            v.strides,
            topk=cfg.atss_topk,
            ignore_iof_thr=cfg.ignore_iof_thr,
            beta=cfg.qfl_beta,
            bbox_weight=cfg.bbox_loss_weight,
            kps_weight=cfg.kps_loss_weight,
            kps_beta=cfg.kps_beta,
            use_kps=v.use_kps,
        )
    return RetinaFaceCriterion(
        v.min_sizes, v.steps, threshold=cfg.match_thresh, neg_pos=cfg.neg_pos_ratio, loc_weight=cfg.loc_weight
    )


def make_runner(
    model: DetectorModel, size: int, score_thr: float = 0.02, nms_thr: float = 0.4, device: Any = "cpu"
) -> Any:
    """The facelab detector class of the variant (SCRFD / RetinaFace) running the torch model through a TorchSession."""
    from facelab.detection import SCRFD, RetinaFace
    from facelab.train.torch_session import TorchSession

    inputs, outputs = export_signature(model.variant)
    session = TorchSession(model.export_form(), inputs, outputs, device)
    if model.variant.family == "scrfd":
        return SCRFD(session, det_size=(size, size), det_thresh=score_thr, nms_thresh=nms_thr)
    v = model.variant
    return RetinaFace(
        session,
        det_size=(size, size),
        det_thresh=score_thr,
        nms_thresh=nms_thr,
        min_sizes=v.min_sizes,
        steps=v.steps,
    )


def evaluate_detector(
    model: DetectorModel,
    records: list[ImageAnnotation],
    size: int = 640,
    score_thr: float = 0.02,
    nms_thr: float = 0.4,
    device: Any = "cpu",
) -> dict[str, float]:
    """Detection AP, recall and precision of ``model`` on annotated images (facelab's runner on the torch model)."""
    from facelab.eval.detection_ap import detection_ap

    runner = make_runner(model, size, score_thr, nms_thr, device)
    dets = {str(r.path): runner.detect(str(r.path)).det for r in records}
    result = detection_ap(to_box_gt(records), dets)
    return {"ap": result.ap, "recall": result.recall, "precision": result.precision, "n_gt": float(result.n_gt)}


def evaluate_widerface_val(
    model: DetectorModel,
    images_dir: str,
    gt_dir: str,
    size: int = 640,
    score_thr: float = 0.02,
    nms_thr: float = 0.4,
    device: Any = "cpu",
) -> dict[str, float]:
    """WIDER FACE val easy / medium / hard AP on ``images_dir/<event>/<image>.jpg``.

    Scored by :func:`facelab.eval.widerface.evaluate_widerface` against the ``.mat`` files in ``gt_dir``.
    """
    from facelab.eval.widerface import evaluate_widerface, load_widerface_gt

    gt = load_widerface_gt(gt_dir)
    runner = make_runner(model, size, score_thr, nms_thr, device)
    preds: dict[str, dict[str, np.ndarray]] = {}
    for event, names in zip(gt.events, gt.images):
        for name in names:
            path = Path(images_dir) / event / f"{name}.jpg"
            if not path.is_file():
                continue
            det = runner.detect(str(path)).det.astype(np.float64)
            det[:, 2:4] -= det[:, 0:2]
            preds.setdefault(event, {})[name] = det
    return dict(evaluate_widerface(preds, gt).ap)


def load_records(files: list[str], fmt: str = "auto", root: str = "", min_size: float = 0.0) -> list[ImageAnnotation]:
    """The images of several annotation files, in order (read with ``load_annotations``)."""
    return [rec for f in files for rec in load_annotations(f, fmt, root or None, min_size=min_size)]


def training_augmentation(cfg: DetectConfig) -> _Pipeline:
    """The augmentation pipeline of ``cfg``: ``cfg.augment``, or the model family's own, at ``cfg.input_size``."""
    options = AugmentOptions(cfg.input_size, tuple(cfg.crop_choice), cfg.flip_prob, cfg.photometric)
    return build_augmentation(cfg.augment or get_variant(cfg.model).family, options)


def train_detector(cfg: DetectConfig) -> LoopResult:
    """Train a detector with ``cfg``; the run folder gets the checkpoints and ``model.pt`` (see run_loop).

    Raises:
        ConfigError: bad settings or data.
        TrainingError: the loss became NaN/inf.
    """
    cfg.validate()
    if not cfg.train_ann:
        raise ConfigError("config: train_ann (the training annotation file) is required")
    variant = get_variant(cfg.model)
    torch.manual_seed(cfg.seed)
    model = DetectorModel(variant, cfg.model_width, cfg.freeze_bn)
    if cfg.pretrained:
        model.load_pretrained(cfg.pretrained)
        _logger.info("initialised %s from %s", cfg.model, cfg.pretrained)
    records = load_records(cfg.train_ann, cfg.train_format, cfg.train_root, cfg.min_size)
    dataset = DetectionDataset(records, training_augmentation(cfg), cfg.seed)
    criterion = _criterion(cfg, model)
    norm = variant.normalization
    val = load_records(cfg.val_ann, cfg.val_format, cfg.val_root) if cfg.val_ann else []

    def loss_fn(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        from facelab.train.data import normalize_batch

        images = batch["images"].to(device, non_blocking=True)
        x = normalize_batch(images, norm)
        outputs = model(x)
        targets = [t.to(device) for t in batch["targets"]]
        return criterion(outputs, targets, (x.shape[2], x.shape[3]))

    def evaluate(m: torch.nn.Module) -> dict[str, dict[str, float]]:
        device = next(m.parameters()).device
        metrics: dict[str, dict[str, float]] = {}
        if val:
            metrics["+".join(Path(f).stem for f in cfg.val_ann)] = evaluate_detector(
                model, val, cfg.eval_size, cfg.eval_score_thr, cfg.eval_nms_thr, device
            )
        if cfg.widerface_val_images:
            metrics["WIDER_val"] = evaluate_widerface_val(
                model,
                cfg.widerface_val_images,
                cfg.widerface_val_gt,
                cfg.eval_size,
                cfg.eval_score_thr,
                cfg.eval_nms_thr,
                device,
            )
        return metrics

    info = {"variant": variant.name, "width": cfg.model_width, "input_size": cfg.input_size}
    return run_loop(
        cfg,
        model,
        dataset,
        collate_detection,
        loss_fn,
        evaluate=evaluate if (val or cfg.widerface_val_images) else None,
        model_info=info,
        kind="detection",
    )
