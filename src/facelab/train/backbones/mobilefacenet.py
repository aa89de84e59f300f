"""MobileFaceNet as in arcface_torch ``mobilefacenet.py`` (width scale 2, blocks (1, 4, 6, 2), GDC head).

Stem conv3×3/2 + depthwise conv; inverted-residual "DepthWise" units (1×1 expand → depthwise 3×3 →
1×1 linear projection) with stride-2 units between stages; a 1×1 conv to 512; the global
depthwise (GDC) head: depthwise 7×7 conv + BN, flatten, Linear(512 → D, no bias), BatchNorm1d.
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.train.backbones import register_backbone

__all__ = ["MobileFaceNet"]


def _conv(cin: int, cout: int, k: int = 1, s: int = 1, p: int = 0, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class _DepthWise(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, stride: int = 1, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(
            _conv(cin, groups, 1), _conv(groups, groups, 3, stride, 1, groups=groups), _conv(groups, cout, 1, act=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


def _residual(c: int, n: int, groups: int) -> nn.Sequential:
    return nn.Sequential(*[_DepthWise(c, c, groups, 1, residual=True) for _ in range(n)])


class MobileFaceNet(nn.Module):
    """MobileFaceNet: ``(N, 3, S, S)`` → ``(N, num_features)``; ``S = input_size`` (112), divisible by 16."""

    def __init__(
        self,
        num_features: int = 512,
        blocks: tuple[int, int, int, int] = (1, 4, 6, 2),
        scale: int = 2,
        fp16: bool = False,
        input_size: int = 112,
    ) -> None:
        super().__init__()
        self.fp16 = fp16
        c64, c128 = 64 * scale, 128 * scale
        first = _conv(c64, c64, 3, 1, 1, groups=64) if blocks[0] == 1 else _residual(c64, blocks[0], 128)
        self.layers = nn.Sequential(
            _conv(3, c64, 3, 2, 1),
            first,
            _DepthWise(c64, c64, 128, stride=2),
            _residual(c64, blocks[1], 128),
            _DepthWise(c64, c128, 256, stride=2),
            _residual(c128, blocks[2], 256),
            _DepthWise(c128, c128, 512, stride=2),
            _residual(c128, blocks[3], 256),
        )
        self.conv_sep = _conv(c128, 512, 1)
        self.gdc = _conv(512, 512, input_size // 16, 1, 0, groups=512, act=False)  # 7x7 at 112
        self.fc = nn.Linear(512, num_features, bias=False)
        self.features = nn.BatchNorm1d(num_features)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` normalised RGB → ``(N, num_features)`` float32."""
        with torch.autocast("cuda", enabled=self.fp16 and x.is_cuda):
            x = self.conv_sep(self.layers(x))
        x = self.gdc(x.float()).flatten(1)
        return self.features(self.fc(x))


@register_backbone("mobilefacenet")
def mobilefacenet(num_features: int = 512, **kwargs: object) -> MobileFaceNet:
    """MobileFaceNet (≈0.45 GMACs, ≈2.06M parameters at 512-d in the reference)."""
    return MobileFaceNet(num_features=num_features, **kwargs)  # type: ignore[arg-type]
