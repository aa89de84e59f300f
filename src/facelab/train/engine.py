"""The training loop: distributed setup, optimiser and schedule, logging, verification, checkpoints.

Run in one process, or under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the
environment → ``env://`` initialisation, NCCL on CUDA, gloo on CPU). The backbone is replicated;
its gradients are summed over ranks after each backward (the Partial FC loss is the global
batch's loss on every rank, so each rank's gradient is its share); the Partial FC centres are
sharded. Each rank writes ``checkpoint_rank<r>.pt`` (backbone, its centre shard, optimiser,
grad scaler, position in the data, RNG states) atomically; rank 0 also writes ``model.pt``
(backbone weights and the config, what :mod:`facelab.train.export` reads). A resumed run
continues bit-identically on CPU.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from facelab.ops.normalize import INSIGHTFACE_ARCFACE
from facelab.train.backbones import create_backbone
from facelab.train.config import TrainConfig
from facelab.train.data import ShardSampler, build_dataset, normalize_batch
from facelab.train.loop import (
    TrainingError,
    atomic_save,
    checkpoint_path,
    make_optimizer,
    rng_state,
    set_rng_state,
    shard_loader,
    start_run,
    world_info,
)
from facelab.train.margins import CombinedMarginLoss
from facelab.train.partial_fc import PartialFC, allreduce_gradients

__all__ = ["TrainingError", "TrainResult", "train", "poly_warmup_lr", "init_distributed", "checkpoint_path"]

_logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Summary of a run: steps done, losses logged at every step (rank 0), last verification scores."""

    steps: int
    epoch: int
    losses: list[float] = field(default_factory=list)
    verification: dict[str, dict[str, float]] = field(default_factory=dict)
    output: str = ""


def poly_warmup_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int, power: float = 1.0) -> float:
    """Linear warmup to ``base_lr`` over ``warmup_steps``, then ``base_lr·(1 − progress)^power`` to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return base_lr * max(0.0, 1.0 - (step - warmup_steps) / span) ** power


def init_distributed() -> tuple[int, int, int]:
    """Initialise torch.distributed from the torchrun environment; ``(rank, local_rank, world_size)``."""
    return world_info()


def _resolve_val(cfg: TrainConfig, name: str) -> Path:
    p = Path(name)
    if p.suffix == ".bin" and p.is_file():
        return p
    base = Path(cfg.rec) if cfg.rec and cfg.rec != "synthetic" else Path(cfg.folder or ".")
    base = base if base.is_dir() else base.parent
    return base / f"{name}.bin"


def train(cfg: TrainConfig) -> TrainResult:
    """Train with ``cfg``; returns a :class:`TrainResult`. Raises :class:`TrainingError` on a NaN/inf loss."""
    cfg.validate()
    rank, local_rank, world = init_distributed()
    device, out = start_run(cfg.output, cfg.seed, local_rank)

    dataset = build_dataset(
        cfg.rec, cfg.folder, cfg.synthetic, cfg.num_classes, cfg.seed, cfg.flip, cfg.synthetic_length, cfg.input_size
    )
    num_classes = cfg.num_classes or int(dataset.num_classes)  # type: ignore[attr-defined]
    sampler, loader = shard_loader(dataset, cfg.batch_size, cfg.num_workers, cfg.seed, rank, world, device)
    steps_per_epoch = sampler.num_samples // cfg.batch_size
    total_steps = steps_per_epoch * cfg.num_epoch
    warmup_steps = steps_per_epoch * cfg.warmup_epoch

    kwargs = dict(cfg.network_kwargs)
    kwargs.setdefault("input_size", cfg.input_size)
    backbone = create_backbone(cfg.network, num_features=cfg.embedding_size, fp16=cfg.fp16 or cfg.bf16, **kwargs).to(
        device
    )
    if world > 1:
        for t in list(backbone.parameters()) + list(backbone.buffers()):
            dist.broadcast(t.data, 0)
    m1, m2, m3 = cfg.margin_list
    margin = CombinedMarginLoss(
        cfg.scale,
        m1,
        m2,
        m3,
        cfg.interclass_filtering_threshold,
        easy_margin=cfg.easy_margin,
        straight_through=cfg.margin_straight_through,
        threshold=cfg.margin_threshold,
    )
    amp_dtype = torch.bfloat16 if cfg.bf16 else torch.float16
    pfc = PartialFC(
        margin,
        cfg.embedding_size,
        num_classes,
        cfg.sample_rate,
        cfg.num_subcenters,
        cfg.seed,
        fp16=cfg.fp16 or cfg.bf16,
        autocast_dtype=amp_dtype,
        vpl=cfg.vpl,
        vpl_start_iters=cfg.vpl_start_iters,
        vpl_allowed_delta=cfg.vpl_allowed_delta,
        vpl_lambda=cfg.vpl_lambda,
    ).to(device)
    step, epoch, in_epoch = 0, 0, 0
    result = TrainResult(0, 0, output=str(out))
    ckpt = checkpoint_path(out, rank)
    state = torch.load(ckpt, map_location=device, weights_only=False) if cfg.resume and ckpt.is_file() else None
    if state is not None and pfc.num_subcenters > 1 and state["partial_fc"]["weight"].shape[0] == pfc.num_local:
        pfc.drop_subcenters(torch.zeros(pfc.num_local, dtype=torch.long, device=device))  # shapes of a dropped run
    params = [{"params": [p for p in backbone.parameters() if p.requires_grad]}, {"params": list(pfc.parameters())}]
    opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, growth_interval=100, enabled=cfg.fp16 and device.type == "cuda")

    if state is not None:
        backbone.load_state_dict(state["backbone"])
        pfc.load_state_dict(state["partial_fc"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, in_epoch = state["step"], state["epoch"], state["in_epoch"]
        result.verification = state.get("verification", {})
        set_rng_state(state["rng"])
        _logger.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, step, epoch, in_epoch)

    last_saved = [step if state is not None else -1]

    def save() -> None:
        state = {
            "step": step,
            "epoch": epoch,
            "in_epoch": in_epoch,
            "backbone": backbone.state_dict(),
            "partial_fc": pfc.state_dict(),
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "config": cfg.to_dict(),
            "verification": result.verification,
            "world_size": world,
            "num_classes": num_classes,
        }
        atomic_save(state, ckpt)
        if rank == 0:
            atomic_save(
                {
                    "backbone": backbone.state_dict(),
                    "config": cfg.to_dict(),
                    "step": step,
                    "verification": result.verification,
                    "num_classes": num_classes,
                },
                out / "model.pt",
            )
        last_saved[0] = step
        _logger.debug("checkpoint at step %d written to %s", step, ckpt)

    backbone.train()
    pfc.train()
    start_time, start_step, loss_sum, loss_n = time.time(), step, 0.0, 0
    stop_at = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    # A live progress bar on rank 0 when a person is watching (a terminal); the log lines stay.
    from tqdm import tqdm

    progress = tqdm(total=stop_at, initial=step, unit="step", disable=rank != 0 or not sys.stderr.isatty())
    while epoch < cfg.num_epoch and step < stop_at:
        if pfc.num_subcenters > 1 and cfg.subcenter_drop_epoch and epoch >= cfg.subcenter_drop_epoch:
            _drop_subcenters(backbone, pfc, opt, dataset, sampler, cfg, device)
        sampler.set_position(epoch, in_epoch * cfg.batch_size)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        for images, labels in loader:
            lr = poly_warmup_lr(step, cfg.lr, warmup_steps, total_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            x = normalize_batch(images.to(device, non_blocking=True), INSIGHTFACE_ARCFACE)
            emb = backbone(x)
            loss = pfc(emb, labels.to(device))
            value = float(loss.detach())
            if not math.isfinite(value):
                where = f"{ckpt} (step {last_saved[0]})" if last_saved[0] >= 0 else "none yet"
                raise TrainingError(
                    f"loss became {value} at step {step + 1} (lr {lr:.4g}); training stopped. "
                    f"Last good checkpoint: {where}. Lower lr, enable warmup_epoch, or check the data/labels."
                )
            scaler.scale(loss).backward()
            step += 1
            in_epoch += 1
            if step % cfg.gradient_acc == 0:
                allreduce_gradients(backbone)
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(backbone.parameters(), cfg.clip_grad_norm)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=False)
            loss_sum += value
            loss_n += 1
            result.losses.append(value)
            progress.update(1)
            progress.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.4g}", refresh=False)
            if rank == 0 and cfg.frequent and step % cfg.frequent == 0:
                elapsed = time.time() - start_time
                speed = (step - start_step) * cfg.batch_size * world / max(elapsed, 1e-9)
                eta = (stop_at - step) * cfg.batch_size * world / max(speed, 1e-9)
                _logger.info(
                    "epoch %d step %d/%d loss %.4f lr %.5f %.1f samples/s eta %s",
                    epoch,
                    step,
                    stop_at,
                    loss_sum / loss_n,
                    lr,
                    speed,
                    time.strftime("%H:%M:%S", time.gmtime(eta)),
                )
                loss_sum, loss_n = 0.0, 0
            if cfg.val_targets and cfg.verbose and step % cfg.verbose == 0 and rank == 0:
                _run_verification(cfg, backbone, result)
            boundary = step % cfg.gradient_acc == 0
            if boundary and cfg.save_every and step % cfg.save_every == 0:
                save()
            if step >= stop_at:
                break
        else:
            epoch, in_epoch = epoch + 1, 0
            if step % cfg.gradient_acc == 0:
                save()
            continue
        if in_epoch >= steps_per_epoch:
            epoch, in_epoch = epoch + 1, 0
        break
    progress.close()
    if cfg.val_targets and rank == 0 and step >= total_steps:
        _run_verification(cfg, backbone, result)
    if step % cfg.gradient_acc == 0:
        save()
    else:
        _logger.warning(
            "stopped at step %d inside a gradient accumulation cycle of %d; the last checkpoint is step %d",
            step,
            cfg.gradient_acc,
            last_saved[0],
        )
    result.steps, result.epoch = step, epoch
    return result


@torch.no_grad()
def _drop_subcenters(
    backbone: torch.nn.Module,
    pfc: PartialFC,
    opt: torch.optim.Optimizer,
    dataset: Any,
    sampler: ShardSampler,
    cfg: TrainConfig,
    device: torch.device,
) -> None:
    """Embed this rank's share of the data, gather over ranks, keep each class's dominant sub-centre."""
    was_training = backbone.training
    backbone.eval()
    flip = getattr(dataset, "flip", False)
    if hasattr(dataset, "flip"):
        dataset.flip = False
    feats, labels = [], []
    sampler.set_position(0, 0)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers
    )
    for images, lab in loader:
        feats.append(backbone(normalize_batch(images.to(device), INSIGHTFACE_ARCFACE)).float())
        labels.append(lab.to(device))
    if hasattr(dataset, "flip"):
        dataset.flip = flip
    backbone.train(was_training)
    f, lab = torch.cat(feats), torch.cat(labels)
    if dist.is_initialized() and dist.get_world_size() > 1:
        fs = [torch.empty_like(f) for _ in range(dist.get_world_size())]
        ls = [torch.empty_like(lab) for _ in range(dist.get_world_size())]
        dist.all_gather(fs, f)
        dist.all_gather(ls, lab)
        f, lab = torch.cat(fs), torch.cat(ls)
    old = pfc.weight
    pfc.drop_subcenters(pfc.dominant_subcenters(f, lab))
    for group in opt.param_groups:
        group["params"] = [pfc.weight if p is old else p for p in group["params"]]
    opt.state.pop(old, None)


def _run_verification(cfg: TrainConfig, backbone: torch.nn.Module, result: TrainResult) -> None:
    from facelab.train.verification import verify_bin

    for name in cfg.val_targets:
        path = _resolve_val(cfg, name)
        if not path.is_file():
            _logger.warning("verification set %s not found; skipped", path)
            continue
        scores = verify_bin(backbone, path, cfg.input_size)
        result.verification[Path(name).stem] = scores
        _logger.info("verification %s: accuracy %.4f ± %.4f", Path(name).stem, scores["acc"], scores["std"])
