"""Anchors, assignment and losses of SCRFD (ATSS + QFL + DIoU + smooth-L1) and RetinaFace (IoU match + OHEM).

SCRFD (InsightFace ``detection/scrfd``: ``SCRFDHead.loss``, ``ATSSAssigner``, mmdet losses):

* anchors: per stride ``s`` and cell ``(x, y)`` two square anchors of side ``base·scale``
  (``base_sizes`` 16, 64, 256 for strides 8, 16, 32; scales 1, 2) centred on ``(x·s, y·s)``;
* ATSS (top-k 9, mode 0): per level the 9 anchors whose centres are closest to the face centre
  are candidates; those with IoU ≥ mean + std of the candidates' IoUs and whose centre lies inside
  the face (distance to the nearest side over ``sqrt(area)`` > 0.001) are positives; an anchor
  claimed by several faces goes to the one of highest IoU. Anchors overlapping an ignored face by
  IoF > ``ignore_iof_thr`` (off at the published −1) are neither positive nor negative;
* quality focal loss (β = 2) against the IoU of the decoded prediction with its face, over all
  anchors, divided by the number of positives (at least one per image);
* DIoU loss (weight 2) and smooth-L1 keypoint loss (β = 1/9, weight 0.1, times the keypoint
  annotation weight) on positives, weighted by the predicted score and divided by the sum of
  those weights; boxes and keypoints in units of the stride.

RetinaFace (biubug6/Pytorch_Retinaface ``MultiBoxLoss``, ``utils/box_utils.match``):

* priors: :func:`facelab.detection._decode.prior_boxes`;
* matching: IoU of every face with every prior; faces whose best prior has IoU < 0.2 do not claim
  it; every other face's best prior is forced to it; a prior takes the face of highest IoU and
  is a positive at IoU ≥ 0.35; boxes encoded with variances (0.1, 0.2), landmarks likewise;
* losses: smooth-L1 on boxes of positives and on landmarks of positives whose face has landmarks,
  and cross-entropy on positives plus the hardest negatives (OHEM, 7 per positive); box and
  class losses divided by the number of positives, the landmark loss by the number of positives
  with landmarks; total ``2·loc + conf + landm``. Priors overlapping an ignored face at IoU ≥ 0.35
  are left out of the negatives.

Normalisers are summed over the distributed ranks, so each rank's loss is its share of the
global batch's loss and the summed gradients equal those of one process with the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "scrfd_anchors",
    "atss_assign",
    "quality_focal_loss",
    "diou_loss",
    "bbox_overlaps",
    "ScrfdCriterion",
    "RetinaFaceCriterion",
    "match_priors",
    "global_sum",
    "Targets",
]

INF = 1e8


def _full(t: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs (AMP) promoted to float32; float32 / float64 kept."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the distributed ranks (a detached copy; itself in one process)."""
    import torch.distributed as dist

    out = value.detach().clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out)
    return out


@dataclass
class Targets:
    """Ground truth of one training image, in network-input pixels.

    Attributes:
        boxes: ``(G, 4)`` ``[x1, y1, x2, y2]`` of faces to learn.
        keypoints: ``(G, 5, 3)`` ``(x, y, weight)``.
        ignore_boxes: ``(I, 4)`` faces to ignore.
    """

    boxes: torch.Tensor
    keypoints: torch.Tensor
    ignore_boxes: torch.Tensor

    def to(self, device: torch.device) -> Targets:
        """The same on ``device``."""
        return Targets(self.boxes.to(device), self.keypoints.to(device), self.ignore_boxes.to(device))


def bbox_overlaps(
    a: torch.Tensor, b: torch.Tensor, mode: str = "iou", aligned: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """IoU (or IoF = intersection over the area of ``a``) of ``[x1, y1, x2, y2]`` boxes, continuous coordinates.

    Returns ``(A, B)``, or ``(A,)`` with ``aligned``.
    """
    if not aligned:  # every pair: (A, 1, 4) against (1, B, 4)
        a, b = a[:, None], b[None]
    lt = torch.max(a[..., :2], b[..., :2])
    rb = torch.min(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a if mode == "iof" else area_a + area_b - inter
    return inter / union.clamp(min=eps)


# ----------------------------------------------------------------------------------------- SCRFD


def scrfd_anchors(
    sizes: Sequence[tuple[int, int]],
    strides: Sequence[int] = (8, 16, 32),
    base_sizes: Sequence[int] = (16, 64, 256),
    scales: Sequence[float] = (1.0, 2.0),
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """SCRFD's anchors as mmdet's ``AnchorGenerator`` makes them (``center_offset=0``, ratio 1), in output row order.

    Args:
        sizes: ``(rows, cols)`` of each level's feature map.
        strides: stride of each level.
        base_sizes: base anchor side of each level.
        scales: anchor scales (sides ``base · scale``).
        device: where the tensors go.

    Returns:
        ``(anchors (P, 4) [x1, y1, x2, y2], stride per anchor (P,), anchors per level)``; rows in
        ``(level, row, col, anchor)`` order.
    """
    boxes, per_anchor_stride, counts = [], [], []
    for (rows, cols), stride, base in zip(sizes, strides, base_sizes):
        ys, xs = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
        cx = (xs.reshape(-1).float() * stride)[:, None]
        cy = (ys.reshape(-1).float() * stride)[:, None]
        half = torch.tensor([base * s / 2 for s in scales], device=device)[None, :]
        level = torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1).reshape(-1, 4)
        boxes.append(level)
        per_anchor_stride.append(torch.full((len(level),), float(stride), device=device))
        counts.append(len(level))
    return torch.cat(boxes), torch.cat(per_anchor_stride), counts


def atss_assign(
    anchors: torch.Tensor,
    level_counts: Sequence[int],
    gt: torch.Tensor,
    ignore: torch.Tensor | None = None,
    topk: int = 9,
    ignore_iof_thr: float = -1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InsightFace's ``ATSSAssigner`` (mode 0) for one image.

    Args:
        anchors: ``(P, 4)``.
        level_counts: anchors per level (in order).
        gt: ``(G, 4)`` faces.
        ignore: ``(I, 4)`` ignored faces.
        topk: candidates per level and face.
        ignore_iof_thr: anchors with IoF above this with an ignored face are ignored (``<= 0``: off).

    Returns:
        ``(assigned (P,) long: 0 negative, −1 ignored, g + 1 for face g; max IoU (P,))``.
    """
    num_gt, num_anchors = len(gt), len(anchors)
    assigned = anchors.new_zeros(num_anchors, dtype=torch.long)
    if num_gt == 0 or num_anchors == 0:
        if ignore is not None and len(ignore) and ignore_iof_thr > 0 and num_anchors:
            iof = bbox_overlaps(anchors, ignore, mode="iof").max(dim=1).values
            assigned[iof > ignore_iof_thr] = -1
        return assigned, anchors.new_zeros(num_anchors)
    overlaps = bbox_overlaps(anchors, gt)
    gt_c = (gt[:, :2] + gt[:, 2:]) / 2
    gt_side = torch.sqrt(((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])).clamp(min=1e-4))
    an_c = (anchors[:, :2] + anchors[:, 2:]) / 2
    distances = (an_c[:, None, :] - gt_c[None, :, :]).pow(2).sum(-1).sqrt()
    if ignore is not None and len(ignore) and ignore_iof_thr > 0:
        iof = bbox_overlaps(anchors, ignore, mode="iof").max(dim=1).values
        ignored = iof > ignore_iof_thr
        distances[ignored, :] = INF
        assigned[ignored] = -1
    candidates = []
    start = 0
    for count in level_counts:
        k = min(topk, count)
        _, idx = distances[start : start + count].topk(k, dim=0, largest=False)
        candidates.append(idx + start)
        start += count
    cand = torch.cat(candidates, dim=0)  # (K, G)
    cols = torch.arange(num_gt, device=anchors.device)
    cand_iou = overlaps[cand, cols]
    thr = cand_iou.mean(0) + cand_iou.std(0)
    is_pos = cand_iou >= thr[None, :]
    cx, cy = an_c[cand, 0], an_c[cand, 1]  # (K, G)
    dist_min = (
        torch.stack([cx - gt[:, 0], cy - gt[:, 1], gt[:, 2] - cx, gt[:, 3] - cy], dim=0).min(dim=0).values / gt_side
    )
    is_pos &= dist_min > 0.001
    # an anchor claimed by several faces goes to the one of highest IoU
    flat = torch.full((num_gt * num_anchors,), -INF, device=anchors.device, dtype=overlaps.dtype)
    index = (cand + cols[None, :] * num_anchors)[is_pos]
    flat[index] = overlaps.t().reshape(-1)[index]
    max_iou, argmax = flat.view(num_gt, num_anchors).t().max(dim=1)
    pos = max_iou != -INF
    assigned[pos] = argmax[pos] + 1
    return assigned, torch.where(pos, max_iou, torch.zeros_like(max_iou))


def quality_focal_loss(
    logits: torch.Tensor, positive: torch.Tensor, score: torch.Tensor, beta: float = 2.0
) -> torch.Tensor:
    """Quality focal loss (GFL) of single-class logits, per anchor.

    Args:
        logits: ``(P,)`` score logits.
        positive: ``(P,)`` bool.
        score: ``(P,)`` IoU targets of the positives (ignored elsewhere).
        beta: focusing exponent.

    Returns:
        ``(P,)`` losses: negatives ``BCE(x, 0)·σ(x)^β``, positives ``BCE(x, q)·|q − σ(x)|^β``.
    """
    sig = logits.sigmoid()
    target = torch.where(positive, score, torch.zeros_like(score))
    factor = torch.where(positive, (score - sig).abs(), sig).pow(beta)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * factor


def diou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Distance-IoU loss ``1 − IoU + ρ²/c²`` of aligned ``[x1, y1, x2, y2]`` boxes, per box."""
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    ap = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    ag = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    ious = overlap / (ap + ag - overlap + eps)
    enclose = (torch.max(pred[:, 2:], target[:, 2:]) - torch.min(pred[:, :2], target[:, :2])).clamp(min=0)
    c2 = enclose[:, 0] ** 2 + enclose[:, 1] ** 2 + eps
    rho2 = ((target[:, 0] + target[:, 2]) - (pred[:, 0] + pred[:, 2])) ** 2 / 4 + (
        (target[:, 1] + target[:, 3]) - (pred[:, 1] + pred[:, 3])
    ) ** 2 / 4
    return 1 - (ious - rho2 / c2)


def _distance2bbox(points: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [
            points[:, 0] - distance[:, 0],
            points[:, 1] - distance[:, 1],
            points[:, 0] + distance[:, 2],
            points[:, 1] + distance[:, 3],
        ],
        dim=-1,
    )


class ScrfdCriterion:
    """SCRFD's training loss (see the module doc).

    Args:
        strides / base_sizes / scales: anchor settings.
        topk: ATSS candidates per level.
        ignore_iof_thr: ATSS ignore threshold (published −1 = off).
        beta: QFL exponent.
        bbox_weight: DIoU loss weight.
        kps_weight: keypoint loss weight.
        kps_beta: smooth-L1 β of the keypoints.
        use_kps: train the keypoint branch.
    """

    def __init__(
        self,
        strides: Sequence[int] = (8, 16, 32),
        base_sizes: Sequence[int] = (16, 64, 256),
        scales: Sequence[float] = (1.0, 2.0),
        topk: int = 9,
        ignore_iof_thr: float = -1.0,
        beta: float = 2.0,
        bbox_weight: float = 2.0,
        kps_weight: float = 0.1,
        kps_beta: float = 1.0 / 9.0,
        use_kps: bool = True,
    ) -> None:
        self.strides, self.base_sizes, self.scales = tuple(strides), tuple(base_sizes), tuple(scales)
        self.topk, self.ignore_iof_thr, self.beta = topk, ignore_iof_thr, beta
        self.bbox_weight, self.kps_weight, self.kps_beta, self.use_kps = bbox_weight, kps_weight, kps_beta, use_kps
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, list[int]]] = {}

    def anchors(self, input_hw: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Anchors of a ``(H, W)`` input (cached)."""
        key = (input_hw, str(device))
        if key not in self._cache:
            sizes = [(math.ceil(input_hw[0] / s), math.ceil(input_hw[1] / s)) for s in self.strides]
            self._cache[key] = scrfd_anchors(sizes, self.strides, self.base_sizes, self.scales, device)
        return self._cache[key]

    def __call__(
        self,
        outputs: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]],
        targets: Sequence[Targets],
        input_hw: tuple[int, int],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """This rank's share of the loss and its parts (``loss_cls``, ``loss_bbox``, ``loss_kps``)."""
        scores = _full(torch.cat(outputs[0], dim=1)).squeeze(-1)  # (N, P)
        boxes = _full(torch.cat(outputs[1], dim=1))
        kps = _full(torch.cat(outputs[2], dim=1))
        device, dtype = scores.device, scores.dtype
        anchors, stride, counts = self.anchors(input_hw, device)
        anchors, stride = anchors.to(dtype), stride.to(dtype)
        targets = [Targets(t.boxes.to(dtype), t.keypoints.to(dtype), t.ignore_boxes.to(dtype)) for t in targets]
        if scores.shape[1] != len(anchors):
            raise ValueError(f"{scores.shape[1]} predictions but {len(anchors)} anchors for input {input_hw}")
        centers = (anchors[:, :2] + anchors[:, 2:]) / 2
        pos_mask, weights_cls, box_t, kps_t, kps_w = [], [], [], [], []
        num_pos = 0
        for t in targets:
            assigned, _ = atss_assign(anchors, counts, t.boxes, t.ignore_boxes, self.topk, self.ignore_iof_thr)
            pos = assigned > 0
            gi = (assigned - 1).clamp(min=0)
            pos_mask.append(pos)
            weights_cls.append((assigned >= 0).to(dtype))
            box_t.append(t.boxes[gi] if len(t.boxes) else anchors.new_zeros(len(anchors), 4))
            if len(t.boxes):
                kps_t.append(t.keypoints[gi, :, :2].reshape(-1, 10))
                kps_w.append(t.keypoints[gi, :, 2].mean(dim=1))
            else:
                kps_t.append(anchors.new_zeros(len(anchors), 10))
                kps_w.append(anchors.new_zeros(len(anchors)))
            num_pos += max(int(pos.sum()), 1)
        pos = torch.stack(pos_mask)  # (N, P)
        label_w = torch.stack(weights_cls)
        box_t_all = torch.stack(box_t)
        norm_cls = global_sum(torch.tensor(float(num_pos), device=device, dtype=dtype)).clamp(min=1.0)

        s = stride[None, :].expand_as(pos)
        c = (centers[None] / stride[None, :, None]).expand(pos.shape[0], -1, -1)
        p_idx = pos.nonzero(as_tuple=True)
        pos_centers = c[p_idx]
        pred_boxes = _distance2bbox(pos_centers, boxes[p_idx])
        tgt_boxes = box_t_all[p_idx] / s[p_idx][:, None]
        quality = torch.zeros_like(scores)
        if len(pos_centers):
            quality[p_idx] = bbox_overlaps(pred_boxes.detach(), tgt_boxes, aligned=True)
        loss_cls = (quality_focal_loss(scores, pos, quality, self.beta) * label_w).sum() / norm_cls

        weight = scores.detach().sigmoid()[p_idx]
        norm_box = global_sum(weight.sum()).clamp(min=1e-6)
        loss_bbox = self.bbox_weight * (diou_loss(pred_boxes, tgt_boxes) * weight).sum() / norm_box
        loss = loss_cls + loss_bbox
        parts = {"loss_cls": float(loss_cls.detach()), "loss_bbox": float(loss_bbox.detach())}
        if self.use_kps:
            kt = torch.stack(kps_t)[p_idx] / s[p_idx][:, None]
            kt = kt - pos_centers.repeat(1, 5)
            kw = (torch.stack(kps_w)[p_idx] * weight)[:, None]
            l1 = F.smooth_l1_loss(kps[p_idx], kt, reduction="none", beta=self.kps_beta)
            loss_kps = self.kps_weight * (l1 * kw).sum() / norm_box
            loss = loss + loss_kps
            parts["loss_kps"] = float(loss_kps.detach())
        if not len(pos_centers):
            loss = loss + 0.0 * (boxes.sum() + kps.sum())  # keep every output in the graph
        return loss, parts


# -------------------------------------------------------------------------------------- RetinaFace


def match_priors(
    truths: torch.Tensor, priors_xyxy: torch.Tensor, threshold: float = 0.35
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """biubug6's ``match`` for one image (normalised coordinates).

    Args:
        truths: ``(G, 4)`` faces ``[x1, y1, x2, y2]``.
        priors_xyxy: ``(P, 4)`` priors in corner form.
        threshold: IoU for a positive.

    Returns:
        ``(positive (P,) bool, face index (P,) long, best IoU (P,))``.
    """
    num_priors = len(priors_xyxy)
    if len(truths) == 0:
        zeros = torch.zeros(num_priors, dtype=torch.long, device=priors_xyxy.device)
        return zeros.bool(), zeros, priors_xyxy.new_zeros(num_priors)
    overlaps = bbox_overlaps(truths, priors_xyxy, eps=1e-12)  # (G, P)
    best_prior_overlap, best_prior_idx = overlaps.max(dim=1)
    valid = best_prior_overlap >= 0.2
    if not valid.any():
        zeros = torch.zeros(num_priors, dtype=torch.long, device=priors_xyxy.device)
        return zeros.bool(), zeros, priors_xyxy.new_zeros(num_priors)
    best_truth_overlap, best_truth_idx = overlaps.max(dim=0)
    best_truth_overlap = best_truth_overlap.clone()
    best_truth_overlap[best_prior_idx[valid]] = 2.0
    for j in range(len(truths)):  # every face keeps its best prior (the later face wins a shared one)
        best_truth_idx[best_prior_idx[j]] = j
    positive = best_truth_overlap >= threshold
    return positive, best_truth_idx, best_truth_overlap


def _encode(matched: torch.Tensor, priors: torch.Tensor, variances: Sequence[float]) -> torch.Tensor:
    g_cxcy = ((matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]) / (variances[0] * priors[:, 2:])
    g_wh = torch.log(((matched[:, 2:] - matched[:, :2]) / priors[:, 2:]).clamp(min=1e-8)) / variances[1]
    return torch.cat([g_cxcy, g_wh], dim=1)


def _encode_landm(matched: torch.Tensor, priors: torch.Tensor, variances: Sequence[float]) -> torch.Tensor:
    m = matched.reshape(-1, 5, 2)
    return ((m - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])).reshape(-1, 10)


class RetinaFaceCriterion:
    """biubug6's ``MultiBoxLoss(2, 0.35, True, 0, True, 7, 0.35, False)`` plus ``loc_weight`` (see the module doc).

    Args:
        min_sizes / steps / variances: the prior configuration.
        threshold: IoU for a positive (0.35).
        neg_pos: hard negatives per positive (7).
        loc_weight: box loss weight (2.0).
    """

    def __init__(
        self,
        min_sizes: Sequence[Sequence[int]],
        steps: Sequence[int],
        variances: Sequence[float] = (0.1, 0.2),
        threshold: float = 0.35,
        neg_pos: int = 7,
        loc_weight: float = 2.0,
    ) -> None:
        self.min_sizes = tuple(tuple(int(v) for v in level) for level in min_sizes)
        self.steps = tuple(int(s) for s in steps)
        self.variances = (float(variances[0]), float(variances[1]))
        self.threshold, self.neg_pos, self.loc_weight = threshold, neg_pos, loc_weight
        self._cache: dict[tuple, torch.Tensor] = {}

    def priors(self, input_hw: tuple[int, int], device: torch.device) -> torch.Tensor:
        """``(P, 4)`` ``(cx, cy, w, h)`` normalised priors of a ``(H, W)`` input (cached)."""
        from facelab.detection._decode import prior_boxes

        key = (input_hw, str(device))
        if key not in self._cache:
            self._cache[key] = torch.from_numpy(np.array(prior_boxes(input_hw, self.min_sizes, self.steps))).to(device)
        return self._cache[key]

    def __call__(
        self,
        outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        targets: Sequence[Targets],
        input_hw: tuple[int, int],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """This rank's share of the loss and its parts (``loss_loc``, ``loss_conf``, ``loss_landm``)."""
        loc, conf, landm = (_full(o) for o in outputs)
        device, dtype = loc.device, loc.dtype
        priors = self.priors(input_hw, device).to(dtype)
        targets = [Targets(t.boxes.to(dtype), t.keypoints.to(dtype), t.ignore_boxes.to(dtype)) for t in targets]
        if loc.shape[1] != len(priors):
            raise ValueError(f"{loc.shape[1]} predictions but {len(priors)} priors for input {input_hw}")
        corners = torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)
        h, w = input_hw
        scale = torch.tensor([w, h, w, h], dtype=dtype, device=device)
        pos_all, lm_pos_all, loc_t, landm_t, excluded = [], [], [], [], []
        for t in targets:
            truths = t.boxes / scale
            positive, idx, _ = match_priors(truths, corners, self.threshold)
            has_lm = (
                (t.keypoints[:, :, 2] > 0).all(dim=1)
                if len(t.boxes)
                else torch.zeros(0, dtype=torch.bool, device=device)
            )
            if len(t.boxes):
                loc_t.append(_encode(truths[idx], priors, self.variances))
                pts = (t.keypoints[idx, :, :2] / scale[:2]).reshape(-1, 10)
                landm_t.append(_encode_landm(pts, priors, self.variances))
                lm_pos_all.append(positive & has_lm[idx])
            else:
                loc_t.append(priors.new_zeros(len(priors), 4))
                landm_t.append(priors.new_zeros(len(priors), 10))
                lm_pos_all.append(torch.zeros_like(positive))
            pos_all.append(positive)
            if len(t.ignore_boxes):
                near = bbox_overlaps(t.ignore_boxes / scale, corners).max(dim=0).values >= self.threshold
                excluded.append(near & ~positive)
            else:
                excluded.append(torch.zeros_like(positive))
        pos = torch.stack(pos_all)
        lm_pos = torch.stack(lm_pos_all)
        n = global_sum(pos.sum().to(dtype)).clamp(min=1.0)
        n1 = global_sum(lm_pos.sum().to(dtype)).clamp(min=1.0)
        loss_l = F.smooth_l1_loss(loc[pos], torch.stack(loc_t)[pos], reduction="sum") / n
        loss_landm = F.smooth_l1_loss(landm[lm_pos], torch.stack(landm_t)[lm_pos], reduction="sum") / n1
        labels = pos.long()
        per_prior = torch.logsumexp(conf, dim=-1) - conf.gather(-1, labels[..., None]).squeeze(-1)
        mining = per_prior.detach().clone()
        mining[pos] = 0
        mining[torch.stack(excluded)] = -1.0  # never chosen as hard negatives
        _, order = mining.sort(dim=1, descending=True)
        _, rank = order.sort(dim=1)
        num_neg = (self.neg_pos * pos.sum(dim=1, keepdim=True)).clamp(max=pos.shape[1] - 1)
        neg = (rank < num_neg) & ~torch.stack(excluded)
        loss_c = F.cross_entropy(conf[pos | neg], labels[pos | neg], reduction="sum") / n
        loss = self.loc_weight * loss_l + loss_c + loss_landm
        if not pos.any():
            loss = loss + 0.0 * (loc.sum() + landm.sum())
        return loss, {
            "loss_loc": float(loss_l.detach()),
            "loss_conf": float(loss_c.detach()),
            "loss_landm": float(loss_landm.detach()),
        }
