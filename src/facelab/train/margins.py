"""Margin-based softmax heads: combined margin ``cos(m1·θ + m2) − m3`` (ArcFace, CosFace, ...).

The losses here turn cosine logits into scaled, margin-penalised logits; the softmax
cross-entropy itself is done by :class:`~facelab.train.partial_fc.PartialFC` (possibly across
ranks). A label of ``-1`` marks a row whose target class is not among these logits (it lives on
another rank); such rows get no margin.
"""

from __future__ import annotations

import math

import torch

from facelab.errors import ConfigError

__all__ = ["CombinedMarginLoss", "margin_from_list", "subcenter_max"]


class CombinedMarginLoss(torch.nn.Module):
    """Apply ``s · (cos(m1·θ_y + m2) − m3)`` to the target logit and ``s · cos θ_j`` to the others.

    ``(m1, m2, m3) = (1, 0.5, 0)`` is ArcFace, ``(1, 0, 0.4)`` CosFace, ``(1, 0.3, 0.2)`` a combined
    margin, ``(1.35, 0, 0)`` SphereFace-like.

    The target is ``cos(m1·θ + m2) − m3`` only while ``m1·θ + m2 ≤ π`` (the curve is monotonic
    there); beyond it (``cos θ ≤ cos((π − m2)/m1)``) the target becomes ``cos θ − m3 − m2·sin(π − m2)``
    — InsightFace's ``th``/``mm`` rule. With ``easy_margin`` the margin is applied only where
    ``cos θ > 0``, the target staying ``cos θ`` elsewhere (InsightFace's ``easy_margin``).

    Args:
        s: scale (64 in arcface_torch).
        m1, m2, m3: multiplicative angular, additive angular and additive cosine margins.
        interclass_filtering_threshold: if > 0, non-target logits above this cosine are set to 0
            (with no gradient) — arcface_torch's inter-class filtering of likely label noise.
        easy_margin: see above.
        straight_through: if ``True``, the margin is computed without autograd and the backward
            pass sees only ``s · cos`` — exactly what arcface_torch's ``CombinedMarginLoss``
            ArcFace branch does (in-place under ``no_grad``). ``False`` (default) differentiates
            through the margin.
        threshold: apply the ``th``/``mm`` fallback above (default). ``False`` uses the plain
            ``cos(m1·θ + m2)`` for every angle, as arcface_torch's ``CombinedMarginLoss`` does;
            with ``straight_through=True`` that reproduces it exactly.
    """

    def __init__(
        self,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        interclass_filtering_threshold: float = 0.0,
        easy_margin: bool = False,
        straight_through: bool = False,
        threshold: bool = True,
    ) -> None:
        super().__init__()
        if s <= 0 or m1 <= 0 or m2 < 0 or m3 < 0 or m2 >= math.pi:
            raise ConfigError(f"margin: need s > 0, m1 > 0, 0 <= m2 < pi, m3 >= 0; got s={s}, m=({m1}, {m2}, {m3})")
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.interclass_filtering_threshold = float(interclass_filtering_threshold)
        self.easy_margin = bool(easy_margin)
        self.straight_through = bool(straight_through)
        self.use_threshold = bool(threshold)
        self.threshold = math.cos((math.pi - self.m2) / self.m1) if self.m1 >= 1.0 else -1.0
        self.mm = math.sin(math.pi - self.m2) * self.m2

    def extra_repr(self) -> str:
        """Settings shown in ``repr``."""
        return f"s={self.s}, m=({self.m1}, {self.m2}, {self.m3}), filter={self.interclass_filtering_threshold}"

    def target(self, cos: torch.Tensor) -> torch.Tensor:
        """Margin-penalised target cosine for a 1-D tensor of target cosines (no scale)."""
        if self.m1 == 1.0:
            sin = torch.sqrt(torch.clamp(1.0 - cos * cos, min=1e-12))
            marg = cos * math.cos(self.m2) - sin * math.sin(self.m2)
        else:
            theta = torch.acos(torch.clamp(cos, -1.0 + 1e-7, 1.0 - 1e-7))
            marg = torch.cos(self.m1 * theta + self.m2)
        marg = marg - self.m3
        if (self.m1 == 1.0 and self.m2 == 0.0) or not (self.use_threshold or self.easy_margin):
            return marg  # CosFace has no angular part; or the guard is switched off
        if self.easy_margin:
            return torch.where(cos > 0, marg, cos)
        return torch.where(cos > self.threshold, marg, cos - self.m3 - self.mm)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return scaled logits.

        Args:
            logits: ``(B, C)`` float cosines in ``[-1, 1]``.
            labels: ``(B,)`` int64 column of each row's target in ``logits``, or ``-1``.

        Returns:
            ``(B, C)`` float logits (a new tensor; ``logits`` is not modified).
        """
        rows = torch.nonzero(labels != -1, as_tuple=True)[0]
        cols = labels[rows]
        if self.interclass_filtering_threshold > 0:
            with torch.no_grad():
                dirty = logits > self.interclass_filtering_threshold
                dirty[rows, cols] = False
                keep = (~dirty).to(logits.dtype)
            logits = logits * keep
        target = logits[rows, cols]
        if self.straight_through:
            with torch.no_grad():
                delta = self.target(target) - target
            new_target = target + delta
        else:
            new_target = self.target(target)
        logits = logits.index_put((rows, cols), new_target)
        return logits * self.s


def margin_from_list(
    margin_list: tuple[float, float, float] | list[float], s: float = 64.0, **kwargs: object
) -> CombinedMarginLoss:
    """Build a :class:`CombinedMarginLoss` from arcface_torch's ``margin_list = (m1, m2, m3)``."""
    if len(margin_list) != 3:
        raise ConfigError(f"margin_list must have 3 values (m1, m2, m3), got {list(margin_list)}")
    m1, m2, m3 = (float(v) for v in margin_list)
    return CombinedMarginLoss(s, m1, m2, m3, **kwargs)  # type: ignore[arg-type]


def subcenter_max(cos: torch.Tensor, k: int) -> torch.Tensor:
    """Sub-center ArcFace pooling: ``(B, C·K)`` cosines (class-major) → ``(B, C)`` max over the K sub-centres."""
    if k == 1:
        return cos
    b, ck = cos.shape
    if ck % k:
        raise ConfigError(f"{ck} columns are not a multiple of {k} sub-centres")
    return cos.view(b, ck // k, k).amax(dim=2)
