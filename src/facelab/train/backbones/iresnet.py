"""IResNet (ArcFace's "improved ResNet"): 3×3 stem at stride 1, BN-conv-BN-PReLU-conv-BN blocks, FC + BN1d head.

Layout (facts from arcface_torch ``iresnet.py``): stem conv3×3(3→64)+BN+PReLU; four stages of 64, 128,
256, 512 channels, each starting with a stride-2 block (1×1 conv + BN shortcut), so 112 → 7; then
BN2d(512), dropout, Linear(512·7·7 → D) and a BatchNorm1d whose scale is fixed at 1. BN eps 1e-5.
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.train.backbones import register_backbone

__all__ = ["IResNet", "IBasicBlock"]


class IBasicBlock(nn.Module):
    """BN → conv3×3 → BN → PReLU → conv3×3(stride) → BN, plus the (possibly projected) input."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output, same layout as ``x`` (spatially strided)."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    """IResNet with ``layers`` blocks per stage; ``(N, 3, S, S)`` → ``(N, num_features)`` (S = 112 → 7×7 map).

    Args:
        layers: blocks in the four stages.
        num_features: embedding size.
        dropout: dropout before the FC layer.
        fp16: run the convolutional trunk under CUDA autocast (the head stays float32).
        input_size: input side (must be divisible by 16).
        width: channels of the first stage (64 in the reference; smaller for tests).
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        num_features: int = 512,
        dropout: float = 0.0,
        fp16: bool = False,
        input_size: int = 112,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.fp16 = fp16
        widths = [width, width * 2, width * 4, width * 8]
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-5)
        self.prelu = nn.PReLU(width)
        stages = []
        inplanes = width
        for n, planes in zip(layers, widths):
            blocks = [IBasicBlock(inplanes, planes, 2)] + [IBasicBlock(planes, planes, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = nn.BatchNorm2d(widths[-1], eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        side = input_size // 16
        self.fc = nn.Linear(widths[-1] * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` normalised RGB → ``(N, num_features)`` float32."""
        with torch.autocast("cuda", enabled=self.fp16 and x.is_cuda):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.bn2(x)
            x = torch.flatten(x, 1)
            x = self.dropout(x)
        return self.features(self.fc(x.float()))


def _factory(layers: tuple[int, int, int, int]):  # noqa: ANN202
    def build(num_features: int = 512, **kwargs: object) -> IResNet:
        return IResNet(layers, num_features=num_features, **kwargs)  # type: ignore[arg-type]

    return build


for _name, _layers in {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}.items():
    register_backbone(_name)(_factory(_layers))
