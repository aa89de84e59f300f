"""A torch MiniFASNet (test-only reference), written from the architecture of minivision-ai/Silent-Face-Anti-Spoofing.

The channel plan is the original's ``keep`` lists ("1.8M" for V1/V1SE, "1.8M_" for V2); the
checkpoints must load into it with ``strict=True``, which pins every layer's name and shape.
Independent of facelab's ONNX builder (which reads the widths from the tensors instead).
"""

from __future__ import annotations

import torch
from torch import nn

KEEP = {
    "v1": [32, 32, 103, 103, 64, 13, 13, 64, 26, 26, 64, 13, 13, 64, 52, 52, 64, 231, 231, 128, 154, 154, 128, 52, 52]
    + [128, 26, 26, 128, 52, 52, 128, 26, 26, 128, 26, 26, 128, 308, 308, 128, 26, 26, 128, 26, 26, 128, 512, 512],
    "v2": [32, 32, 103, 103, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 231, 231, 128, 231, 231, 128, 52, 52]
    + [128, 26, 26, 128, 77, 77, 128, 26, 26, 128, 26, 26, 128, 308, 308, 128, 26, 26, 128, 26, 26, 128, 512, 512],
}


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, kernel=1, stride=1, padding=0, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if act:
            self.prelu = nn.PReLU(cout)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.prelu(x) if self.act else x


class SE(nn.Module):
    def __init__(self, channels, reduction=4):
        super().__init__()
        mid = channels // reduction
        self.fc1 = nn.Conv2d(channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.fc2 = nn.Conv2d(mid, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        s = torch.relu(self.bn1(self.fc1(s)))
        return x * torch.sigmoid(self.bn2(self.fc2(s)))


class DepthWise(nn.Module):
    """1x1 expand, depth-wise 3x3, 1x1 project; optional shortcut, optional SE before it."""

    def __init__(self, c_in, c_mid, c_out, stride, residual, se=False):
        super().__init__()
        self.conv = ConvBlock(c_in, c_mid)
        self.conv_dw = ConvBlock(c_mid, c_mid, 3, stride, 1, groups=c_mid)
        self.project = ConvBlock(c_mid, c_out, act=False)
        self.residual = residual
        if se:
            self.se_module = SE(c_out)

    def forward(self, x):
        y = self.project(self.conv_dw(self.conv(x)))
        if not self.residual:
            return y
        if hasattr(self, "se_module"):
            y = self.se_module(y)
        return x + y


class Stage(nn.Module):
    def __init__(self, keep, first, blocks, se):
        super().__init__()
        layers = []
        for i in range(blocks):
            j = first + 3 * i  # keep[j] in, keep[j+1] mid, keep[j+3] out (== in)
            layers.append(DepthWise(keep[j], keep[j + 1], keep[j + 3], 1, True, se=se and i == blocks - 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class MiniFASNet(nn.Module):
    def __init__(self, keep, se, kernel=5, embedding=128, classes=3):
        super().__init__()
        k = keep
        self.conv1 = ConvBlock(3, k[0], 3, 2, 1)
        self.conv2_dw = ConvBlock(k[0], k[1], 3, 1, 1, groups=k[1])
        self.conv_23 = DepthWise(k[1], k[2], k[4], 2, False)
        self.conv_3 = Stage(k, 4, 4, se)
        self.conv_34 = DepthWise(k[16], k[17], k[19], 2, False)
        self.conv_4 = Stage(k, 19, 6, se)
        self.conv_45 = DepthWise(k[37], k[38], k[40], 2, False)
        self.conv_5 = Stage(k, 40, 2, se)
        self.conv_6_sep = ConvBlock(k[46], k[47])
        self.conv_6_dw = ConvBlock(k[47], k[48], kernel, groups=k[48], act=False)
        self.linear = nn.Linear(512, embedding, bias=False)
        self.bn = nn.BatchNorm1d(embedding)
        self.prob = nn.Linear(embedding, classes, bias=False)

    def forward(self, x):
        for name in ("conv1", "conv2_dw", "conv_23", "conv_3", "conv_34", "conv_4", "conv_45", "conv_5"):
            x = getattr(self, name)(x)
        x = self.conv_6_dw(self.conv_6_sep(x)).flatten(1)
        return self.prob(self.bn(self.linear(x)))


def load_reference(pth, variant: str) -> MiniFASNet:
    """``variant``: ``"v2"`` or ``"v1se"``; the checkpoint is loaded strictly (``module.`` removed)."""
    keep = KEEP["v1" if variant.startswith("v1") else "v2"]
    model = MiniFASNet(keep, se=variant.endswith("se"))
    state = torch.load(pth, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.eval()
