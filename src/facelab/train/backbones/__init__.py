"""Backbone registry: ``@register_backbone(name)`` on a factory ``(num_features=512, **kw) -> nn.Module``.

Contract: a backbone maps a ``(N, 3, 112, 112)`` float32 batch (normalised, RGB) to ``(N,
num_features)`` float32 embeddings (not L2-normalised). Factories accept ``num_features`` and
``fp16`` (autocast the trunk on CUDA) keyword arguments and ignore nothing silently.

``python -m facelab.train.backbones`` (or ``facelab train info``) prints parameter counts and
MACs of every registered backbone next to the published figures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from facelab.errors import ConfigError
from facelab.registry import Registry

__all__ = [
    "BACKBONES",
    "register_backbone",
    "create_backbone",
    "list_backbones",
    "count_parameters",
    "count_macs",
    "PUBLISHED",
]

#: Registered backbone factories.
BACKBONES: Registry = Registry("backbone")

#: Published figures (arcface_torch README / anchor notes §2.4): params in millions (computed from the
#: reference code) and GFLOPs (ptflops MACs at 112x112) where published.
PUBLISHED: dict[str, tuple[float | None, float | None]] = {
    "iresnet18": (24.03, 2.6),
    "iresnet34": (34.14, None),
    "iresnet50": (43.59, 6.3),
    "iresnet100": (65.16, 12.1),
    "iresnet200": (118.83, 23.5),
    "mobilefacenet": (2.06, 0.45),
    "vit_t": (19.14, 1.5),
    "vit_s": (76.02, 5.7),
    "vit_b": (113.83, 11.4),
}


def register_backbone(name: str) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Decorator registering a backbone factory under ``name`` (duplicate names raise ``ValueError``)."""
    return BACKBONES.register(name)


def create_backbone(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build the backbone registered as ``name`` (aliases ``r50``, ``mbf`` ... accepted)."""
    name = _ALIASES.get(name, name)
    if name not in BACKBONES:
        raise ConfigError(f"unknown network {name!r}; known: {', '.join(list_backbones())}")
    return BACKBONES.get(name)(**kwargs)


def list_backbones(aliases: bool = False) -> list[str]:
    """Registered backbone names; with ``aliases`` also the short names :func:`create_backbone` takes (``r50`` ...)."""
    return BACKBONES.names() + (list(_ALIASES) if aliases else [])


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, size: int = 112) -> int:
    """Multiply-accumulates of one ``(1, 3, size, size)`` forward pass.

    Counts convolutions, linear layers and attention matmuls (what ptflops + arcface_torch's attention
    ``extra_gflops`` report as "GFLOPs").
    """
    total = 0

    def conv_hook(mod: torch.nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += out.numel() * k

    def linear_hook(mod: torch.nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * mod.in_features

    def attn_hook(mod: Any, inp: Any, _out: torch.Tensor) -> None:
        nonlocal total
        n, t, d = inp[0].shape
        total += 2 * n * t * t * d  # q·kᵀ and attn·v

    handles = []
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, torch.nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
        elif getattr(mod, "counts_attention_macs", False):
            handles.append(mod.register_forward_hook(attn_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


_ALIASES = {
    "r18": "iresnet18",
    "r34": "iresnet34",
    "r50": "iresnet50",
    "r100": "iresnet100",
    "r200": "iresnet200",
    "mbf": "mobilefacenet",
}

# Registration side effects.
from facelab.train.backbones import iresnet as _iresnet  # noqa: E402,F401
from facelab.train.backbones import mobilefacenet as _mobilefacenet  # noqa: E402,F401
from facelab.train.backbones import vit as _vit  # noqa: E402,F401


def info_table(names: list[str] | None = None, num_features: int = 512) -> str:
    """A text table of parameters (M) and GMACs at 112×112 for ``names`` (default: all), with the published figures."""
    rows = [f"{'network':<14}{'params (M)':>12}{'published':>11}{'GMACs':>9}{'published':>11}"]
    for name in names or list_backbones():
        model = create_backbone(name, num_features=num_features)
        params = count_parameters(model) / 1e6
        macs = count_macs(model) / 1e9
        pub_p, pub_f = PUBLISHED.get(_ALIASES.get(name, name), (None, None))
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
        rows.append(f"{name:<14}{params:>12.2f}{fmt(pub_p):>11}{macs:>9.2f}{fmt(pub_f):>11}")
    return "\n".join(rows)


__all__ += ["info_table"]
