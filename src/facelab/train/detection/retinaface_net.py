"""RetinaFace in torch for training: MobileNet-0.25 and ResNet-50 bodies, FPN, SSH, 1x1 heads.

biubug6/Pytorch_Retinaface (MIT) ``models/retinaface.py`` and ``models/net.py``: the body's
stride-8/16/32 feature maps (MobileNetV1 x0.25 ``stage1..3``: 64, 128, 256 channels; torchvision
ResNet-50 ``layer2..4``: 512, 1024, 2048), an FPN to 64 (MobileNet) or 256 (ResNet-50) channels
with 1x1 laterals and 3x3 merges (BN, LeakyReLU 0.1 when the width is at most 64, ReLU above),
one SSH context module per level and 1x1 ``ClassHead`` / ``BboxHead`` / ``LandmarkHead`` convs with
two priors per cell. State-dict keys follow biubug6's, so its checkpoints load.

The MobileNet-0.25 network itself is :class:`facelab.train.detectors.retinaface_mnet.RetinaFaceMNet`
(``leaky=0.1`` for Pytorch_Retinaface; ``leaky=0`` for Face-Detector-1MB-with-landmark, whose MIT
weights are in ``mobilenet0.25_Final.pth``). This module adds :class:`RetinaFaceR50`.

``forward(x)``: ``(N, 3, H, W)`` BGR minus ``(104, 117, 123)`` → ``(loc (N, P, 4), conf (N, P, 2),
landms (N, P, 10))``, ``conf`` logits in training mode and softmaxed in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.train.detectors.retinaface_mnet import _RetinaFaceNeckHeads

__all__ = ["ResNet50Body", "RetinaFaceR50"]


class _Bottleneck(nn.Module):
    """A torchvision ResNet v1.5 bottleneck (stride on the 3x3 conv); keys ``conv1..3``, ``bn1..3``, ``downsample``."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50Body(nn.Module):
    """ResNet-50 trunk with torchvision's parameter names; returns ``layer2..4`` (strides 8, 16, 32).

    Args:
        width: multiplier of the stage widths (1.0 = ResNet-50; smaller for CPU smoke runs).
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        base = max(8, int(round(64 * width)))
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = base
        for i, (blocks, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 2))):
            planes = base * 2**i
            layers = [_Bottleneck(cin, planes, stride)] + [_Bottleneck(planes * 4, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            cin = planes * 4
        self.out_channels = (base * 8, base * 16, base * 32)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stride-8, 16 and 32 feature maps."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class RetinaFaceR50(_RetinaFaceNeckHeads):
    """RetinaFace-ResNet-50 (biubug6 ``cfg_re50``): FPN and SSH at 256 channels, 2 priors per cell.

    ``forward(x)``: normalised BGR → ``(loc, conf, landms)``, as
    :class:`~facelab.train.detectors.retinaface_mnet.RetinaFaceMNet`.

    Args:
        anchors: priors per cell.
        channels: FPN / SSH width (256).
        width: multiplier of the ResNet widths (1.0 = published).
    """

    def __init__(self, anchors: int = 2, channels: int = 256, width: float = 1.0) -> None:
        super().__init__()
        self.body = ResNet50Body(width)
        leaky = 0.1 if channels <= 64 else 0.0
        self._add_neck_and_heads(self.body.out_channels, channels, leaky, anchors)
