"""ViT for 112×112 faces as in arcface_torch ``vit.py``: patch 9 (144 tokens), no class token, ReLU6 MLP.

Patch embedding conv9×9/9; learned position embedding; pre-norm blocks (LayerNorm, multi-head
attention with qkv without bias, MLP ratio 4 with ReLU6); final LayerNorm; head
Linear(144·dim → dim, no bias) + BN1d(eps 2e-5) + Linear(dim → D, no bias) + BN1d(eps 2e-5).
Training-time token masking and stochastic depth of the reference are not implemented.
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.train.backbones import register_backbone

__all__ = ["VisionTransformer"]


class _Attention(nn.Module):
    counts_attention_macs = True

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        with torch.autocast(x.device.type, enabled=False):
            out = nn.functional.scaled_dot_product_attention(qkv[0].float(), qkv[1].float(), qkv[2].float())
        return self.proj(out.to(x.dtype).transpose(1, 2).reshape(n, t, d))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.ReLU6(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """``(N, 3, S, S)`` → ``(N, num_features)`` with ``(S / patch)²`` tokens."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        num_features: int = 512,
        input_size: int = 112,
        patch: int = 9,
        fp16: bool = False,
    ) -> None:
        super().__init__()
        self.fp16 = fp16
        tokens = (input_size // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[_Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.feature = nn.Sequential(
            nn.Linear(tokens * dim, dim, bias=False),
            nn.BatchNorm1d(dim, eps=2e-5),
            nn.Linear(dim, num_features, bias=False),
            nn.BatchNorm1d(num_features, eps=2e-5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` normalised RGB → ``(N, num_features)`` float32."""
        with torch.autocast("cuda", enabled=self.fp16 and x.is_cuda):
            x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
            x = self.norm(self.blocks(x))
        return self.feature(x.float().flatten(1))


def _factory(dim: int, depth: int, heads: int):  # noqa: ANN202
    def build(num_features: int = 512, **kwargs: object) -> VisionTransformer:
        return VisionTransformer(dim, depth, heads, num_features=num_features, **kwargs)  # type: ignore[arg-type]

    return build


for _name, _spec in {"vit_t": (256, 12, 8), "vit_s": (512, 12, 8), "vit_b": (512, 24, 8)}.items():
    register_backbone(_name)(_factory(*_spec))
