"""Landmark networks: coordinate regression (InsightFace's SimpleRegression) and a stacked hourglass with soft-argmax.

Both map a ``(N, 3, S, S)`` crop, normalised as ``(x − 127.5) / 128`` RGB (InsightFace's landmark
convention), to ``(N, 2K)`` coordinates ``x_0, y_0, x_1, …`` in ``[−1, 1]`` of the crop — the
``fc1`` output of InsightFace's ``2d106det``.

* ``coordreg`` (``alignment/coordinate_reg``, "SimpleRegression"): a MobileNetV1 (``width``, 0.5
  as ``2d106det``'s "MobileNet-0.5") or ResNet-18/34/50 trunk, global average pooling and one
  fully connected layer to ``2K``.
* ``hourglass`` (``alignment/heatmap``'s stacked hourglass): a stride-4 stem (7x7 conv, residual
  blocks, max-pool), ``stacks`` hourglasses of depth ``depth`` with residual blocks and
  intermediate supervision, ``K`` heatmaps per stack, decoded by soft-argmax (a spatial softmax,
  then the expected pixel position), so the network is trained on coordinates and exports the
  same ``(N, 2K)`` output. ``forward`` returns the last stack's coordinates; ``forward_all`` every
  stack's (the loss averages them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from facelab.errors import ConfigError
from facelab.registry import Registry

__all__ = ["LANDMARK_MODELS", "CoordRegression", "StackedHourglass", "build_landmark_model", "soft_argmax"]


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _MobileNetV1(nn.Module):
    """MobileNetV1 with a width multiplier (13 separable blocks, stride 32)."""

    _CFG = (
        (64, 1),
        (128, 2),
        (128, 1),
        (256, 2),
        (256, 1),
        (512, 2),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (1024, 2),
        (1024, 1),
    )

    def __init__(self, width: float = 0.5) -> None:
        super().__init__()

        def c(ch: int) -> int:
            return max(8, int(ch * width))

        layers: list[nn.Module] = [_conv_bn(3, c(32), 2)]
        cin = c(32)
        for cout, stride in self._CFG:
            layers += [_conv_bn(cin, cin, stride, groups=cin), _conv_bn(cin, c(cout), kernel=1)]
            cin = c(cout)
        self.features = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class _ResNet(nn.Module):
    """ResNet-18/34 (basic blocks) or 50 (bottlenecks), torchvision layout, stride 32."""

    def __init__(self, depth: int = 18, width: float = 1.0) -> None:
        super().__init__()
        from facelab.train.detection.retinaface_net import _Bottleneck

        blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
        if depth not in blocks:
            raise ConfigError(f"ResNet depth must be 18, 34 or 50, not {depth}")
        base = max(8, int(64 * width))
        self.stem = nn.Sequential(
            nn.Conv2d(3, base, 7, 2, 3, bias=False), nn.BatchNorm2d(base), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        layers: list[nn.Module] = []
        cin = base
        for i, n in enumerate(blocks[depth]):
            planes = base * 2**i
            stride = 1 if i == 0 else 2
            for j in range(n):
                if depth == 50:
                    layers.append(_Bottleneck(cin, planes, stride if j == 0 else 1))
                    cin = planes * 4
                else:
                    layers.append(_Basic(cin, planes, stride if j == 0 else 1))
                    cin = planes
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.down is None else self.down(x)))


class CoordRegression(nn.Module):
    """Trunk → global average pool → FC to ``2K`` coordinates in ``[−1, 1]`` (SimpleRegression).

    Args:
        num_points: ``K``.
        backbone: ``"mobilenet"``, ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        width: trunk width multiplier (MobileNet 0.5 as ``2d106det``).
    """

    def __init__(self, num_points: int = 106, backbone: str = "mobilenet", width: float = 0.5) -> None:
        super().__init__()
        if backbone == "mobilenet":
            self.backbone: nn.Module = _MobileNetV1(width)
        elif backbone.startswith("resnet") and backbone[6:].isdigit():
            self.backbone = _ResNet(int(backbone[6:]), width)
        else:
            raise ConfigError(f"unknown landmark backbone {backbone!r}; use mobilenet, resnet18, resnet34 or resnet50")
        self.num_points = num_points
        self.fc = nn.Linear(self.backbone.out_channels, 2 * num_points)
        nn.init.normal_(self.fc.weight, std=1e-3)
        nn.init.zeros_(self.fc.bias)

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[(N, 2K)]`` (one prediction)."""
        return [self.forward(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` normalised RGB → ``(N, 2K)``."""
        f = self.backbone(x).mean(dim=(2, 3))
        return self.fc(f)


class _Residual(nn.Module):
    """Pre-activation bottleneck residual block of the hourglass (BN-ReLU-conv ×3, 1x1 skip when widths differ)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, mid, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1),
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + (x if self.skip is None else self.skip(x))


class _Hourglass(nn.Module):
    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        self.up = _Residual(channels, channels)
        self.low1 = _Residual(channels, channels)
        self.inner: nn.Module = _Hourglass(depth - 1, channels) if depth > 1 else _Residual(channels, channels)
        self.low3 = _Residual(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        low = self.low3(self.inner(self.low1(F.max_pool2d(x, 2))))
        return up + F.interpolate(low, size=up.shape[2:], mode="nearest")


def soft_argmax(heatmaps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Expected position under ``softmax(beta · heatmap)``, per map, in ``[−1, 1]`` of the crop.

    Args:
        heatmaps: ``(N, K, H, W)``.
        beta: sharpness.

    Returns:
        ``(N, 2K)`` ``x_0, y_0, …``; pixel ``j`` of ``W`` has centre ``(j + 0.5) / W · 2 − 1``.
    """
    n, k, h, w = heatmaps.shape
    prob = F.softmax(heatmaps.reshape(n, k, h * w) * beta, dim=-1).reshape(n, k, h, w)
    xs = (torch.arange(w, dtype=prob.dtype, device=prob.device) + 0.5) / w * 2 - 1
    ys = (torch.arange(h, dtype=prob.dtype, device=prob.device) + 0.5) / h * 2 - 1
    x = (prob.sum(dim=2) * xs).sum(dim=-1)
    y = (prob.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1).reshape(n, 2 * k)


class StackedHourglass(nn.Module):
    """Stacked hourglass with intermediate supervision and soft-argmax decoding.

    Args:
        num_points: ``K``.
        stacks: hourglasses (2 as InsightFace's ``hourglass`` config).
        depth: down-samplings per hourglass (3 as ``net_n``).
        channels: feature width.
        beta: soft-argmax sharpness.
    """

    def __init__(
        self, num_points: int = 68, stacks: int = 2, depth: int = 3, channels: int = 128, beta: float = 1.0
    ) -> None:
        super().__init__()
        self.num_points, self.beta = num_points, beta
        half = channels // 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, half, 7, 2, 3),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            _Residual(half, channels),
            nn.MaxPool2d(2),
        )
        self.hourglasses = nn.ModuleList([_Hourglass(depth, channels) for _ in range(stacks)])
        self.features = nn.ModuleList(
            [
                nn.Sequential(
                    _Residual(channels, channels),
                    nn.Conv2d(channels, channels, 1),
                    nn.BatchNorm2d(channels),
                    nn.ReLU(inplace=True),
                )
                for _ in range(stacks)
            ]
        )
        self.heads = nn.ModuleList([nn.Conv2d(channels, num_points, 1) for _ in range(stacks)])
        self.merge_features = nn.ModuleList([nn.Conv2d(channels, channels, 1) for _ in range(stacks - 1)])
        self.merge_heads = nn.ModuleList([nn.Conv2d(num_points, channels, 1) for _ in range(stacks - 1)])

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stack's ``(N, 2K)`` coordinates."""
        x = self.stem(x)
        outs = []
        for i, (hg, feat, head) in enumerate(zip(self.hourglasses, self.features, self.heads)):
            f = feat(hg(x))
            heat = head(f)
            outs.append(soft_argmax(heat, self.beta))
            if i < len(self.merge_features):
                x = x + self.merge_features[i](f) + self.merge_heads[i](heat)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` normalised RGB → ``(N, 2K)`` of the last stack."""
        return self.forward_all(x)[-1]


#: Landmark model factories by name: ``(num_points, **kwargs) -> nn.Module``.
LANDMARK_MODELS: Registry[Callable[..., nn.Module]] = Registry("landmark model")
LANDMARK_MODELS.register("coordreg")(CoordRegression)
LANDMARK_MODELS.register("hourglass")(StackedHourglass)


def build_landmark_model(name: str, num_points: int, **kwargs: object) -> nn.Module:
    """The model registered as ``name`` (``"coordreg"`` or ``"hourglass"``).

    Raises:
        ConfigError: unknown name or argument.
    """
    if name not in LANDMARK_MODELS:
        raise ConfigError(f"unknown landmark model {name!r}; known: {LANDMARK_MODELS.names()}")
    try:
        return LANDMARK_MODELS.get(name)(num_points, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"landmark model {name!r}: {exc}") from exc
