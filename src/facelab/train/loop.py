"""The training loop shared by the detection and landmark rooms: distributed setup, schedule, AMP, checkpoints.

A task hands :func:`run_loop` a model, a dataset whose samples are a function of ``(seed, epoch,
index)`` (``set_epoch``), a collate function, a loss function returning *this rank's share of the
global batch's loss* (normalisers summed over ranks, see :func:`facelab.train.detection.losses.global_sum`)
and an evaluation callback. The loop then:

* runs in one process or under ``torchrun`` (gloo on CPU, NCCL on CUDA; parameters broadcast from
  rank 0, gradients *summed* over ranks after each backward, so ``W`` processes with batch ``B``
  follow one process with batch ``W·B``; with ``sync_bn`` the batch-norm statistics are those
  of the global batch too, :class:`SyncBatchNorm2d`);
* draws the data with :class:`~facelab.train.data.ShardSampler` (seeded per epoch, resumable);
* sets the learning rate per step (:func:`lr_at`: linear warmup from ``warmup_ratio``, then
  ``step`` decay at the epochs in ``lr_steps`` by ``lr_gamma``, ``cosine`` or ``poly``);
* mixes precision with ``fp16`` (CUDA, with a gradient scaler) or ``bf16`` (autocast);
* writes ``checkpoint_rank<r>.pt`` (model, optimiser, scaler, position, RNG states, metrics)
  atomically every ``save_every`` steps (or at each epoch end) and at the end, and ``model.pt`` (weights, config,
  metrics) on rank 0 — what the exporters read; a resumed run continues bit-identically on CPU;
* logs ``loss`` and its parts every ``frequent`` steps (rank 0) with a tqdm bar on a terminal, and
  evaluates every ``eval_every`` steps and at the end (rank 0), keeping the metrics for the card.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from facelab.errors import ConfigError, FacelabError, ModelError
from facelab.train.config import check_fields

__all__ = [
    "TrainingError",
    "LoopConfig",
    "LoopResult",
    "SyncBatchNorm2d",
    "convert_sync_bn",
    "lr_at",
    "run_loop",
    "atomic_save",
    "checkpoint_path",
    "read_model_pt",
    "rng_state",
    "set_rng_state",
    "world_info",
    "leave_world",
    "start_run",
    "make_optimizer",
    "shard_loader",
]

_logger = logging.getLogger(__name__)


class TrainingError(FacelabError, RuntimeError):
    """Training cannot continue (e.g. the loss became NaN/inf)."""


@dataclass
class LoopConfig:
    """Settings of the loop itself; the task configs add their own fields.

    Attributes follow arcface_torch / mmdet names where they exist. ``lr_steps`` are epochs.
    """

    optimizer: str = "sgd"  #: "sgd" or "adamw"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "step"  #: "step", "cosine", "poly" or "constant"
    lr_steps: list[int] = field(default_factory=list)  #: epochs at which "step" multiplies the lr by lr_gamma
    lr_gamma: float = 0.1
    warmup_iters: int = 0  #: steps of linear warmup
    warmup_ratio: float = 0.001  #: the warmup starts at lr * warmup_ratio
    batch_size: int = 8  #: per rank
    num_epoch: int = 10
    fp16: bool = False  #: float16 autocast + gradient scaler (CUDA)
    bf16: bool = False  #: bfloat16 autocast (CPU or CUDA)
    clip_grad_norm: float = 0.0  #: 0 = no clipping (SCRFD and RetinaFace publish none)
    sync_bn: bool = False  #: batch-norm statistics over the global batch (CPU gloo too)
    seed: int = 2048
    num_workers: int = 2
    frequent: int = 10  #: steps between log lines
    save_every: int = 0  #: steps between checkpoints (0 = at the end of every epoch); always one at the end
    eval_every: int = 0  #: steps between evaluations (0 = at the end only)
    max_steps: int = 0  #: stop (with a checkpoint) after this many steps; 0 = run all epochs
    resume: bool = True  #: continue from the checkpoint in ``output`` if there is one
    output: str = "work_dirs/run"
    train_data_name: str = ""  #: recorded in exported model cards

    def check_loop(self) -> None:
        """Range checks of the loop fields. Raises :class:`~facelab.errors.ConfigError`."""
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.num_epoch >= 1, "num_epoch must be >= 1"),
            (self.optimizer in ("sgd", "adamw"), "optimizer must be 'sgd' or 'adamw'"),
            (
                self.lr_schedule in ("step", "cosine", "poly", "constant"),
                "lr_schedule must be step/cosine/poly/constant",
            ),
            (self.lr > 0, "lr must be > 0"),
            (self.warmup_iters >= 0 and 0 < self.warmup_ratio <= 1, "warmup_iters >= 0 and 0 < warmup_ratio <= 1"),
            (not (self.fp16 and self.bf16), "fp16 and bf16 are exclusive"),
            (self.max_steps >= 0 and self.save_every >= 0 and self.eval_every >= 0, "step counts must be >= 0"),
        ]
        check_fields(checks)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (what ``model.pt`` and the checkpoints store as ``config``)."""
        return dict(self.__dict__)


@dataclass
class LoopResult:
    """Summary of a run: steps done, the loss at every step (rank 0), its parts, the last metrics."""

    steps: int
    epoch: int
    losses: list[float] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    output: str = ""
    seconds: float = 0.0


def world_info() -> tuple[int, int, int]:
    """Initialise torch.distributed from the torchrun environment; ``(rank, local_rank, world_size)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", init_method="env://")
    if dist.is_initialized():
        return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size()
    return 0, 0, 1


def leave_world() -> None:
    """Leave torch.distributed at the end of a successful run: wait for every rank, then destroy the group.

    Without it each rank tears its process group down at interpreter exit, in no agreed order, while
    its peers may still be talking to it. A no-op when no group was joined. Call it only once the
    run has succeeded on this rank: after an error the barrier would wait for ranks that never come.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def start_run(output: str | Path, seed: int, local_rank: int) -> tuple[torch.device, Path]:
    """Start a rank's run: ``(device, run folder)``.

    Picks ``cuda:<local_rank>`` when CUDA is there (and makes it current), else the CPU; creates
    ``output``; seeds torch, NumPy and Python's ``random`` with ``seed``.
    """
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    return device, out


def make_optimizer(params: Any, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with ``momentum`` (``name == "sgd"``) or AdamW over ``params`` (tensors or parameter groups)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def shard_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    num_workers: int,
    seed: int,
    rank: int,
    world: int,
    device: torch.device,
    collate: Callable[[list[Any]], Any] | None = None,
) -> tuple[Any, torch.utils.data.DataLoader]:
    """``(sampler, loader)`` of this rank's share of ``dataset``.

    The sampler is a seeded, resumable :class:`~facelab.train.data.ShardSampler`; the loader yields full
    batches of ``batch_size`` only (``collate`` builds them) and pins memory on CUDA.
    """
    from facelab.train.data import ShardSampler

    sampler = ShardSampler(len(dataset), batch_size, rank, world, seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    return sampler, loader


def checkpoint_path(output: str | Path, rank: int) -> Path:
    """Where rank ``rank`` keeps its checkpoint (``checkpoint_rank<r>.pt`` in the run folder)."""
    return Path(output) / f"checkpoint_rank{rank}.pt"


def read_model_pt(checkpoint: str | Path, error: type[FacelabError] = ModelError) -> tuple[Path, Any]:
    """``(path, loaded object)`` of a run's ``model.pt`` (what :func:`run_loop` and the recognition engine write).

    Args:
        checkpoint: the ``model.pt`` file (or a rank checkpoint) or the run folder holding ``model.pt``.
        error: the :class:`~facelab.errors.FacelabError` type raised when the file is missing.

    The caller checks that the object is the kind of checkpoint it expects.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise error(f"checkpoint {path} not found")
    return path, torch.load(path, map_location="cpu", weights_only=False)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename (a kill never leaves half a checkpoint)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    """The torch, numpy and Python RNG states (and CUDA's when present)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lr_at(step: int, steps_per_epoch: int, cfg: LoopConfig) -> float:
    """Learning rate before optimiser step ``step`` (0-based).

    Linear warmup over ``warmup_iters`` steps from ``lr·warmup_ratio`` (mmcv's ``linear`` warmup);
    the regular rate is ``lr·lr_gamma^k`` after ``k`` of the ``lr_steps`` epochs (``step``),
    ``lr·(1 + cos(π·t)) / 2`` (``cosine``), ``lr·(1 − t)`` (``poly``) with ``t`` the fraction of
    the run done, or ``lr`` (``constant``).
    """
    total = max(1, steps_per_epoch * cfg.num_epoch)
    if cfg.lr_schedule == "step":
        epoch = step / max(1, steps_per_epoch)
        regular = cfg.lr * cfg.lr_gamma ** sum(1 for e in cfg.lr_steps if epoch >= e)
    elif cfg.lr_schedule == "cosine":
        regular = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
    elif cfg.lr_schedule == "poly":
        regular = cfg.lr * max(0.0, 1.0 - step / total)
    else:
        regular = cfg.lr
    if cfg.warmup_iters and step < cfg.warmup_iters:
        k = (1 - step / cfg.warmup_iters) * (1 - cfg.warmup_ratio)
        return regular * (1 - k)
    return regular


class SyncBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the global batch, on any backend (gloo included).

    Two passes, each an all-reduce with the differentiable
    ``torch.distributed.nn.functional.all_reduce``: the sums of ``x`` (and the element count) give
    the mean, then the sums of ``(x − mean)²`` the biased variance (numerically as robust as
    :class:`torch.nn.BatchNorm2d`'s own). In one process it runs the same two passes, so one
    process with batch ``W·B`` matches ``W`` processes with batch ``B`` up to summation order. In
    eval mode it is a plain :class:`torch.nn.BatchNorm2d` (and exports as one).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(N, C, H, W)`` with the global batch statistics (training) or the running ones (eval)."""
        if not self.training:
            return super().forward(x)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

        def reduce(t: torch.Tensor) -> torch.Tensor:
            if not distributed:
                return t
            import warnings

            from torch.distributed.nn.functional import all_reduce

            with warnings.catch_warnings():  # deprecated in favour of a private module; still differentiable
                warnings.simplefilter("ignore", FutureWarning)
                return all_reduce(t)

        c = x.shape[1]
        count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        first = reduce(torch.cat([x.sum(dim=(0, 2, 3)), count]))
        n = first[-1]
        mean = first[:c] / n
        centred = x - mean[None, :, None, None]
        var = reduce((centred * centred).sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp(min=1))
        y = centred * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_bn(module: nn.Module) -> nn.Module:
    """Replace every :class:`torch.nn.BatchNorm2d` of ``module`` by a :class:`SyncBatchNorm2d` with the same state."""
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = SyncBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_sync_bn(child)
    return module


LossFn = Callable[[Any, torch.device], tuple[torch.Tensor, dict[str, float]]]
EvalFn = Callable[[nn.Module], dict[str, dict[str, float]]]


def run_loop(
    cfg: LoopConfig,
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    collate: Callable[[list[Any]], Any],
    loss_fn: LossFn,
    *,
    evaluate: EvalFn | None = None,
    model_info: dict[str, Any] | None = None,
    kind: str = "",
) -> LoopResult:
    """Train ``model`` on ``dataset`` with ``cfg`` (see the module doc).

    Args:
        cfg: loop settings (a task config deriving from :class:`LoopConfig`).
        model: the network (moved to the device here; batch norms converted when ``sync_bn``).
        dataset: samples; ``set_epoch(epoch)`` is called when it has it.
        collate: list of samples → batch.
        loss_fn: ``(batch, device) -> (loss, parts)``; the loss is this rank's share of the global loss.
        evaluate: ``(model in eval mode) -> {set: {metric: value}}`` on rank 0.
        model_info: extra entries of ``model.pt`` (e.g. the variant).
        kind: ``"detection"`` / ``"landmarks"``, stored in ``model.pt``.

    Returns:
        The :class:`LoopResult`.

    Raises:
        TrainingError: the loss became NaN or infinite.
    """
    from tqdm import tqdm

    from facelab.train.partial_fc import allreduce_gradients

    cfg.check_loop()
    rank, local_rank, world = world_info()
    device, out = start_run(cfg.output, cfg.seed, local_rank)
    if cfg.sync_bn:
        convert_sync_bn(model)
    model.to(device)
    if world > 1:
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, 0)
    sampler, loader = shard_loader(dataset, cfg.batch_size, cfg.num_workers, cfg.seed, rank, world, device, collate)
    steps_per_epoch = sampler.num_samples // cfg.batch_size
    total_steps = steps_per_epoch * cfg.num_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.fp16 and device.type == "cuda")
    amp_dtype = torch.bfloat16 if cfg.bf16 else torch.float16
    use_amp = cfg.bf16 or (cfg.fp16 and device.type == "cuda")

    step, epoch, in_epoch = 0, 0, 0
    result = LoopResult(0, 0, output=str(out))
    ckpt = checkpoint_path(out, rank)
    if cfg.resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if state.get("world_size", world) != world:
            raise ConfigError(f"{ckpt} was written by {state['world_size']} ranks; resume with as many (now {world})")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, in_epoch = state["step"], state["epoch"], state["in_epoch"]
        result.metrics = state.get("metrics", {})
        set_rng_state(state["rng"])
        _logger.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, step, epoch, in_epoch)
    config_dict = cfg.to_dict()

    def save() -> None:
        atomic_save(
            {
                "step": step,
                "epoch": epoch,
                "in_epoch": in_epoch,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
                "config": config_dict,
                "metrics": result.metrics,
                "world_size": world,
                "kind": kind,
            },
            ckpt,
        )
        if rank == 0:
            atomic_save(
                {
                    "model": model.state_dict(),
                    "config": config_dict,
                    "step": step,
                    "metrics": result.metrics,
                    "kind": kind,
                    **(model_info or {}),
                },
                out / "model.pt",
            )

    def run_eval() -> None:
        if evaluate is None or rank != 0:
            return
        was = model.training
        model.eval()
        with torch.no_grad():
            result.metrics = evaluate(model)
        model.train(was)
        for name, values in result.metrics.items():
            _logger.info("eval %s at step %d: %s", name, step, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))

    model.train()
    stop_at = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    progress = tqdm(total=stop_at, initial=step, unit="step", disable=rank != 0 or not sys.stderr.isatty())
    start_time, start_step = time.time(), step
    window: list[float] = []
    while epoch < cfg.num_epoch and step < stop_at:
        sampler.set_position(epoch, in_epoch * cfg.batch_size)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        finished_epoch = True
        for batch in loader:
            lr = lr_at(step, steps_per_epoch, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss, parts = loss_fn(batch, device)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(
                    f"loss became {value} at step {step + 1} (lr {lr:.4g}); training stopped. "
                    f"Last checkpoint: {ckpt if ckpt.is_file() else 'none yet'}. Lower lr or raise warmup_iters."
                )
            opt.zero_grad(set_to_none=False)
            scaler.scale(loss).backward()
            allreduce_gradients(model)
            if cfg.clip_grad_norm > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
            scaler.step(opt)
            scaler.update()
            step += 1
            in_epoch += 1
            result.losses.append(value)
            result.parts.append(parts)
            window.append(value)
            progress.update(1)
            progress.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.3g}", refresh=False)
            if rank == 0 and cfg.frequent and step % cfg.frequent == 0:
                elapsed = max(time.time() - start_time, 1e-9)
                rate = (step - start_step) / elapsed
                _logger.info(
                    "epoch %d step %d/%d loss %.4f (%s) lr %.5f %.2f steps/s eta %s",
                    epoch,
                    step,
                    stop_at,
                    sum(window) / len(window),
                    ", ".join(f"{k} {v:.3f}" for k, v in parts.items()),
                    lr,
                    rate,
                    time.strftime("%H:%M:%S", time.gmtime((stop_at - step) / max(rate, 1e-9))),
                )
                window.clear()
            if cfg.eval_every and step % cfg.eval_every == 0 and step < stop_at:
                run_eval()
            if cfg.save_every and step % cfg.save_every == 0:
                save()
            if step >= stop_at:
                finished_epoch = in_epoch >= steps_per_epoch
                break
        if finished_epoch:
            epoch, in_epoch = epoch + 1, 0
            if not cfg.save_every:
                save()
    progress.close()
    result.seconds = time.time() - start_time
    run_eval()
    save()
    result.steps, result.epoch = step, epoch
    return result
