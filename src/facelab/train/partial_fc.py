"""Partial FC: a model-parallel classification layer with sampled negatives and a distributed softmax.

Class centres are sharded across the ranks of the process group: rank ``r`` of ``W`` holds
``C // W + (r < C % W)`` consecutive classes. Each step every rank

1. all-gathers the embeddings and labels of the global batch (the gather's backward sums the
   gradients of every shard and returns each rank its own slice — the exact gradient of the
   global loss; see :func:`all_gather_with_grad`),
2. picks the classes of the step: every positive class of the global batch plus negatives drawn
   uniformly at ``sample_rate``. The draw is a *global* one — random scores for all ``C`` classes
   from a generator seeded by ``(seed, step)``, positives forced to the top, then the top
   ``max(int(sample_rate · C), #positives)`` — so every rank computes the same global set and
   takes its own part of it, and the set does not depend on the world size,
3. computes cosine logits with its sampled centres, applies the margin, and runs a softmax
   cross-entropy whose max and denominator are all-reduced over the ranks
   (:class:`DistSoftmaxCrossEntropy`).

With ``sample_rate = 1`` this is exactly full-softmax cross-entropy. With one process no
collective is called. The backbone's gradients must then be summed over ranks (not averaged):
:func:`allreduce_gradients` does that.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from facelab.errors import ConfigError
from facelab.train.margins import CombinedMarginLoss, subcenter_max

__all__ = [
    "PartialFC",
    "DistSoftmaxCrossEntropy",
    "all_gather_with_grad",
    "allreduce_gradients",
    "shard_range",
    "world_info",
]

_logger = logging.getLogger(__name__)


def world_info(group: Any = None) -> tuple[int, int]:
    """``(rank, world_size)`` of ``group``, or ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, count)`` of the classes rank ``rank`` holds: the first ``C % W`` ranks hold one more."""
    base, extra = divmod(num_classes, world_size)
    return base * rank + min(rank, extra), base + (1 if rank < extra else 0)


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:  # type: ignore[override]
        """Scalar mean loss; see the class docstring."""
        rank, world = world_info(group)
        ctx.rank, ctx.group, ctx.n = rank, group, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


def all_gather_with_grad(tensor: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Concatenate ``tensor`` (equal first dimension on every rank) from all ranks, in rank order.

    The backward pass sums the incoming gradient over ranks and returns this rank's rows, so each
    rank gets the gradient of the *sum* of all ranks' losses with respect to its own rows. Without
    an initialised process group this is the identity.
    """
    if world_info(group)[1] == 1:
        return tensor
    return _AllGather.apply(tensor, group)


def _gather_plain(tensor: torch.Tensor, group: Any) -> torch.Tensor:
    if world_info(group)[1] == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_info(group)[1])]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, 0)


class DistSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over logits whose columns are split across ranks.

    Forward inputs: ``logits`` ``(N, C_local)`` float32, ``labels`` ``(N,)`` int64 local column or
    ``-1`` (target on another rank), ``group``. Each row's target must be on exactly one rank.
    Returns the scalar ``mean_i(log Σ_j exp z_ij − z_i,y_i)`` over the whole row set.
    Backward: ``(softmax − onehot) / N``. Unlike arcface_torch (which takes ``-log(max(p, 1e-30))``)
    the loss is computed in log space without a clamp, so rows with a target probability below
    1e-30 (loss > 69) count with their true value.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, labels: torch.Tensor, group: Any) -> torch.Tensor:  # type: ignore[override]
        """Scalar mean loss; see the class docstring."""
        world = world_info(group)[1]
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        row_max = logits.max(dim=1, keepdim=True).values
        if world > 1:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        exp = torch.exp(logits - row_max)
        denom = exp.sum(dim=1, keepdim=True)
        if world > 1:
            dist.all_reduce(denom, op=dist.ReduceOp.SUM, group=group)
        rows = torch.nonzero(labels != -1, as_tuple=True)[0]
        target = torch.zeros(logits.shape[0], 1, dtype=logits.dtype, device=logits.device)
        target[rows, 0] = logits[rows, labels[rows]] - row_max[rows, 0]
        if world > 1:
            dist.all_reduce(target, op=dist.ReduceOp.SUM, group=group)
        loss = (torch.log(denom) - target).mean()
        softmax = exp / denom
        ctx.save_for_backward(softmax, labels)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        """``(softmax − onehot) / N · grad_out`` for the logits."""
        softmax, labels = ctx.saved_tensors
        grad = softmax.clone()
        rows = torch.nonzero(labels != -1, as_tuple=True)[0]
        grad[rows, labels[rows]] -= 1.0
        grad *= grad_out / softmax.shape[0]
        return grad, None, None


def allreduce_gradients(module: torch.nn.Module, group: Any = None) -> None:
    """Sum the gradients of ``module``'s parameters over the ranks (no-op in one process).

    Use it on the backbone after ``loss.backward()`` when the loss is a :class:`PartialFC` loss:
    each rank's backward already yields its share of the *global* loss's gradient.
    """
    if world_info(group)[1] == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


class PartialFC(torch.nn.Module):
    """Model-parallel, sampled classification layer with a margin softmax loss.

    Args:
        margin_loss: maps ``(N, C_sel)`` cosines and local labels to scaled logits.
        embedding_size: ``D``.
        num_classes: total number of classes ``C`` over all ranks.
        sample_rate: fraction of classes used per step (positives always kept); ``1`` = all.
            ``0`` uses positives only.
        num_subcenters: ``K`` sub-centres per class (Sub-center ArcFace); the class cosine is the
            max over its sub-centres.
        seed: seed of the negative sampling (combined with the step counter).
        fp16: compute the logits' matmul under autocast (``autocast_dtype``) — on CUDA, and also on
            CPU for ``bfloat16``.
        autocast_dtype: ``torch.float16`` or ``torch.bfloat16``.
        group: process group (default: the world, if initialised).
        vpl: enable Variational Prototype Learning: each class keeps a memory of the last
            normalised feature seen for it (and the step it was seen); from step
            ``vpl_start_iters`` on, a class seen within the last ``vpl_allowed_delta`` steps uses
            the prototype ``normalize((1 − λ)·normalize(w_c) + λ·memory_c)`` with
            ``λ = vpl_lambda`` (constants and rule of InsightFace's ``recognition/vpl``).
        vpl_start_iters / vpl_allowed_delta / vpl_lambda: see ``vpl`` (8000 / 200 / 0.15 there).

    Attributes:
        weight: ``(num_local · K, D)`` float32 parameter — this rank's class centres, class-major.
        class_start / num_local: the classes this rank holds.
        step: int64 buffer counting forward calls in training mode (drives the sampling).
    """

    def __init__(
        self,
        margin_loss: CombinedMarginLoss | torch.nn.Module,
        embedding_size: int,
        num_classes: int,
        sample_rate: float = 1.0,
        num_subcenters: int = 1,
        seed: int = 2048,
        fp16: bool = False,
        autocast_dtype: torch.dtype = torch.float16,
        group: Any = None,
        vpl: bool = False,
        vpl_start_iters: int = 8000,
        vpl_allowed_delta: int = 200,
        vpl_lambda: float = 0.15,
    ) -> None:
        super().__init__()
        if num_classes < 1 or embedding_size < 1:
            raise ConfigError(
                f"PartialFC: num_classes and embedding_size must be >= 1, got {num_classes}, {embedding_size}"
            )
        if not 0.0 <= sample_rate <= 1.0:
            raise ConfigError(f"PartialFC: sample_rate must be in [0, 1], got {sample_rate}")
        if num_subcenters < 1:
            raise ConfigError(f"PartialFC: num_subcenters must be >= 1, got {num_subcenters}")
        self.group = group
        self.rank, self.world_size = world_info(group)
        if num_classes < self.world_size:
            raise ConfigError(f"PartialFC: {num_classes} classes cannot be sharded over {self.world_size} ranks")
        self.margin_loss = margin_loss
        self.embedding_size = int(embedding_size)
        self.num_classes = int(num_classes)
        self.sample_rate = float(sample_rate)
        self.num_subcenters = int(num_subcenters)
        self.seed = int(seed)
        self.fp16 = bool(fp16)
        self.autocast_dtype = autocast_dtype
        self.class_start, self.num_local = shard_range(self.num_classes, self.rank, self.world_size)
        gen = torch.Generator().manual_seed(self.seed + 7919 * self.rank)
        self.weight = torch.nn.Parameter(
            torch.normal(0.0, 0.01, (self.num_local * self.num_subcenters, self.embedding_size), generator=gen)
        )
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.vpl = bool(vpl)
        if self.vpl:
            if self.num_subcenters > 1:
                raise ConfigError("PartialFC: VPL and sub-centres cannot be combined")
            if not 0.0 <= vpl_lambda <= 1.0:
                raise ConfigError(f"PartialFC: vpl_lambda must be in [0, 1], got {vpl_lambda}")
            self.vpl_start_iters, self.vpl_allowed_delta = int(vpl_start_iters), int(vpl_allowed_delta)
            self.vpl_lambda = float(vpl_lambda)
            memory = torch.randn(self.num_local, self.embedding_size, generator=gen)
            self.register_buffer("vpl_memory", F.normalize(memory))
            self.register_buffer("vpl_iters", torch.zeros(self.num_local, dtype=torch.int64))
        self.last_index: torch.Tensor | None = None  # local class ids used by the last forward

    def extra_repr(self) -> str:
        """Settings shown in ``repr``."""
        return (
            f"classes={self.num_classes} (local {self.class_start}+{self.num_local}), D={self.embedding_size}, "
            f"sample_rate={self.sample_rate}, K={self.num_subcenters}, world={self.world_size}"
        )

    # -- sampling ------------------------------------------------------------------------------
    def sample_global(self, global_labels: torch.Tensor, step: int) -> torch.Tensor:
        """Sorted global class ids used at ``step``: all of ``global_labels`` plus sampled negatives.

        Identical on every rank (and for any world size) for the same seed, step and labels, as long
        as the ranks use the same device type (CPU and CUDA generators give different streams).
        """
        num_sample = max(int(self.sample_rate * self.num_classes), 0)
        positives = torch.unique(global_labels)
        if num_sample <= positives.numel():
            return positives
        device = global_labels.device
        gen = torch.Generator(device=device).manual_seed((self.seed * 1_000_003 + int(step)) % (2**63 - 1))
        scores = torch.rand(self.num_classes, generator=gen, device=device)
        scores[positives] = 2.0
        index = torch.topk(scores, num_sample, sorted=False).indices
        return torch.sort(index).values

    # -- forward -------------------------------------------------------------------------------
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of one step.

        Args:
            embeddings: ``(B, D)`` float embeddings of this rank's batch (same ``B`` on every rank).
            labels: ``(B,)`` int64 global class ids in ``[0, num_classes)``.

        Returns:
            scalar float32 loss: mean margin-softmax cross-entropy over the global batch.
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size:
            raise ConfigError(
                f"PartialFC: expected (B, {self.embedding_size}) embeddings, got {tuple(embeddings.shape)}"
            )
        labels = labels.view(-1).long()
        if labels.shape[0] != embeddings.shape[0]:
            raise ConfigError(f"PartialFC: {labels.shape[0]} labels for {embeddings.shape[0]} embeddings")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ConfigError(
                f"PartialFC: labels must be in [0, {self.num_classes}), got {int(labels.min())}..{int(labels.max())}"
            )
        if embeddings.dtype in (torch.float16, torch.bfloat16):
            embeddings = embeddings.float()
        all_emb = all_gather_with_grad(embeddings, self.group)
        all_labels = _gather_plain(labels, self.group)

        local = all_labels - self.class_start
        in_shard = (local >= 0) & (local < self.num_local)
        step = int(self.step)
        if self.training:
            self.step += 1
        if self.sample_rate < 1.0:
            glob = self.sample_global(all_labels, step)
            mine = glob[(glob >= self.class_start) & (glob < self.class_start + self.num_local)] - self.class_start
            local = torch.where(in_shard, torch.searchsorted(mine, local.clamp(min=0)), torch.full_like(local, -1))
            index = mine
        else:
            local = torch.where(in_shard, local, torch.full_like(local, -1))
            index = torch.arange(self.num_local, device=self.weight.device)
        self.last_index = index
        k = self.num_subcenters
        if k > 1:
            rows = (index.view(-1, 1) * k + torch.arange(k, device=index.device)).view(-1)
        else:
            rows = index
        if self.sample_rate >= 1.0:
            weight = self.weight
        else:
            weight = self._sampled_rows(rows)
        norm_emb = F.normalize(all_emb)
        norm_w = F.normalize(weight)
        if self.vpl and step + 1 > self.vpl_start_iters:
            recent = (step + 1 - self.vpl_iters[index]) <= self.vpl_allowed_delta
            lam = torch.where(recent, self.vpl_lambda, 0.0).to(norm_w.dtype).view(-1, 1)
            norm_w = F.normalize(norm_w * (1.0 - lam) + self.vpl_memory[index].to(norm_w.dtype) * lam)
        use_amp = self.fp16 and (all_emb.is_cuda or self.autocast_dtype == torch.bfloat16)
        with torch.autocast(device_type=all_emb.device.type, dtype=self.autocast_dtype, enabled=use_amp):
            cos = F.linear(norm_emb, norm_w)
        cos = subcenter_max(cos.to(norm_w.dtype).clamp(-1.0, 1.0), k)
        logits = self.margin_loss(cos, local)
        loss = DistSoftmaxCrossEntropy.apply(logits, local, self.group)
        if self.vpl and self.training:
            with torch.no_grad():
                pos = torch.nonzero(local != -1, as_tuple=True)[0]
                cls = index[local[pos]]
                self.vpl_memory[cls] = F.normalize(all_emb[pos].detach()).to(self.vpl_memory.dtype)
                self.vpl_iters[cls] = step + 1
        return loss

    def _sampled_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The centre rows ``rows`` as a new leaf whose gradient is added into ``weight.grad`` in place.

        Indexing the parameter directly would make autograd build a dense ``weight``-sized
        gradient every step; this way a step only allocates sampled-size tensors (``weight.grad``
        is allocated once, as for any parameter).
        """
        sel = self.weight.detach()[rows]
        if not (self.weight.requires_grad and torch.is_grad_enabled()):
            return sel
        sel.requires_grad_(True)
        weight = self.weight

        def scatter(leaf: torch.Tensor) -> None:
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            weight.grad.index_add_(0, rows, leaf.grad.to(weight.grad.dtype))
            leaf.grad = None

        sel.register_post_accumulate_grad_hook(scatter)
        return sel

    # -- sub-centres -----------------------------------------------------------------------------
    @torch.no_grad()
    def dominant_subcenters(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per local class, the sub-centre closest to most of its samples (Sub-center ArcFace).

        Args:
            embeddings: ``(N, D)`` features of training samples (all ranks should pass the same set,
                or each rank the samples of its own classes).
            labels: ``(N,)`` global class ids.

        Returns:
            ``(num_local,)`` int64 sub-centre index per local class (0 for classes without samples).
        """
        k = self.num_subcenters
        votes = torch.zeros(self.num_local, k, dtype=torch.int64, device=self.weight.device)
        local = labels.long().to(self.weight.device) - self.class_start
        keep = (local >= 0) & (local < self.num_local)
        if keep.any():
            emb = F.normalize(embeddings[keep].to(self.weight.device, self.weight.dtype))
            cls = local[keep]
            w = F.normalize(self.weight).view(self.num_local, k, -1)[cls]  # (n, K, D)
            best = torch.einsum("nd,nkd->nk", emb, w).argmax(dim=1)
            votes.index_put_((cls, best), torch.ones_like(best), accumulate=True)
        return votes.argmax(dim=1)

    @torch.no_grad()
    def drop_subcenters(self, dominant: torch.Tensor) -> None:
        """Keep only each class's dominant sub-centre (``K`` becomes 1); reset any optimizer over ``weight``."""
        k = self.num_subcenters
        if k == 1:
            return
        kept = self.weight.view(self.num_local, k, -1)[torch.arange(self.num_local), dominant.long()]
        self.weight = torch.nn.Parameter(kept.clone())
        self.num_subcenters = 1
        _logger.info("dropped non-dominant sub-centres: %d classes now have 1 centre each", self.num_local)

    @staticmethod
    def logit_bytes(batch: int, num_classes: int, sample_rate: float) -> int:
        """Float32 bytes of one step's logits (cosines, scaled logits, softmax, gradient ≈ 4 copies)."""
        return 4 * 4 * batch * max(1, math.ceil(sample_rate * num_classes))
