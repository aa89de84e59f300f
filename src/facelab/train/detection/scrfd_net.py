"""SCRFD in torch: InsightFace's MobileNetV1 / ResNetV1e backbones, PAFPN neck and ``SCRFDHead``.

Written from the published configs of ``detection/scrfd/configs/scrfd`` (deepinsight/insightface,
MIT code): backbones ``MobileNetV1`` (``stage_planes`` ``[16, 16, 40, 72, 152, 288]``, blocks
``(2, 3, 2, 6)``, 500M) and ``ResNetV1e`` (deep 3x3 stem, 2x2 max-pool, BasicBlocks with
average-pool shortcuts; 2.5G: planes ``[24, 48, 48, 80]``, blocks ``(3, 5, 3, 2)``; 10G:
``[56, 88, 88, 224]``, ``(3, 4, 2, 3)``); mmdet's ``PAFPN`` on the stride-8/16/32 stages (plain
convolutions with bias, nearest top-down upsampling, stride-2 bottom-up path); and the head:
``stacked_convs`` 3x3 conv + norm + ReLU towers shared by classification and regression
(``cls_reg_share``), one tower per stride (``_kps`` variants, BN) or one for all strides (GN with
16 groups), depth-wise separable in the 500M models, then 3x3 convolutions to ``A`` scores, ``4A``
distances (times a learnt per-stride ``Scale`` when ``scale_mode`` is on) and ``10A`` keypoint
offsets, with ``A = 2`` anchors per cell.

``forward(x)`` takes ``(N, 3, H, W)`` normalised RGB (``(x − 127.5) / 128``) and returns three
lists over the strides ``(8, 16, 32)``: score logits ``(N, H_s·W_s·A, 1)``, distances
``(N, H_s·W_s·A, 4)`` and keypoint offsets ``(N, H_s·W_s·A, 10)``, rows in ``(row, col, anchor)``
order, distances and offsets in units of the stride — what InsightFace's decoder
(:mod:`facelab.detection._decode`) expects after a sigmoid on the scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ScrfdArch", "SCRFDNet", "ScrfdMobileNet", "ResNetV1e", "PAFPN", "ScrfdHead"]


def _norm(kind: str | None, channels: int, groups: int = 16) -> nn.Module | None:
    if kind is None:
        return None
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"unknown norm {kind!r}")


class ConvModule(nn.Sequential):
    """mmcv's ``ConvModule``: conv (bias only without a norm) → norm → ReLU (either may be absent)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        norm: str | None = "bn",
        act: bool = True,
    ) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=norm is None)]
        n = _norm(norm, cout)
        if n is not None:
            layers.append(n)
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)

    @property
    def conv(self) -> nn.Conv2d:
        """The convolution."""
        return self[0]  # type: ignore[return-value]


def _conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNetV1 block: depth-wise 3x3 + BN + ReLU, point-wise 1x1 + BN + ReLU."""
    return nn.Sequential(ConvModule(cin, cin, 3, stride, 1, groups=cin), ConvModule(cin, cout, 1))


class ScrfdMobileNet(nn.Module):
    """SCRFD's ``MobileNetV1``: stem (3x3 s2 conv, separable block) and four stages of separable blocks.

    Args:
        stage_planes: six widths: stem conv, stem block, then the four stages.
        stage_blocks: blocks per stage; the first of each has stride 2 (stages at strides 4..32).
    """

    def __init__(self, stage_planes: Sequence[int], stage_blocks: Sequence[int]) -> None:
        super().__init__()
        p = list(stage_planes)
        self.stem = nn.Sequential(ConvModule(3, p[0], 3, 2, 1), _conv_dw(p[0], p[1], 1))
        self.stages = nn.ModuleList()
        for i, blocks in enumerate(stage_blocks):
            layers = [_conv_dw(p[i + 1], p[i + 2], 2)] + [_conv_dw(p[i + 2], p[i + 2], 1) for _ in range(blocks - 1)]
            self.stages.append(nn.Sequential(*layers))
        self.out_channels = tuple(p[2:])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the four stages (strides 4, 8, 16, 32)."""
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvModule(cin, cout, 3, stride, 1)
        self.conv2 = ConvModule(cout, cout, 3, 1, 1, act=False)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            layers: list[nn.Module] = []
            if stride != 1:  # ResNetV1d/e "avg_down": average pool, then a 1x1 conv of stride 1
                layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
            layers.append(ConvModule(cin, cout, 1, act=False))
            self.downsample = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))  # main path first, as mmdet (graph order of the published exports)
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetV1e(nn.Module):
    """mmdet's ``ResNetV1e`` with BasicBlocks: deep stem (three 3x3 convs), 2x2 max-pool, avg-down shortcuts.

    Args:
        base_channels: stem width.
        stage_planes: width of each of the four stages (strides 4, 8, 16, 32).
        stage_blocks: BasicBlocks per stage.
    """

    def __init__(self, base_channels: int, stage_planes: Sequence[int], stage_blocks: Sequence[int]) -> None:
        super().__init__()
        half = base_channels // 2
        self.stem = nn.Sequential(
            ConvModule(3, half, 3, 2, 1), ConvModule(half, half, 3, 1, 1), ConvModule(half, base_channels, 3, 1, 1)
        )
        self.pool = nn.MaxPool2d(2, 2)
        self.stages = nn.ModuleList()
        cin = base_channels
        for i, (planes, blocks) in enumerate(zip(stage_planes, stage_blocks)):
            stride = 1 if i == 0 else 2
            layers = [_BasicBlock(cin, planes, stride)] + [_BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
            self.stages.append(nn.Sequential(*layers))
            cin = planes
        self.out_channels = tuple(stage_planes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the four stages (strides 4, 8, 16, 32)."""
        x = self.pool(self.stem(x))
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class PAFPN(nn.Module):
    """mmdet's ``PAFPN`` (``num_outs`` = levels used, no extra levels); convolutions with bias, no norm or activation.

    Lateral 1x1 convs; top-down nearest-neighbour upsampling and addition; 3x3 output convs; a
    bottom-up path (3x3 stride-2 conv added to the next level) and 3x3 convs on levels 2.. .
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        n = len(in_channels)
        self.lateral_convs = nn.ModuleList([nn.Conv2d(c, out_channels, 1) for c in in_channels])
        self.fpn_convs = nn.ModuleList([nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(n)])
        self.downsample_convs = nn.ModuleList(
            [nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(n - 1)]
        )
        self.pafpn_convs = nn.ModuleList([nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(n - 1)])

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One ``out_channels`` map per input level, same sizes."""
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"
            )
        inter = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]
        for i in range(len(inter) - 1):
            inter[i + 1] = inter[i + 1] + self.downsample_convs[i](inter[i])
        return [inter[0]] + [conv(f) for conv, f in zip(self.pafpn_convs, inter[1:])]


class _Scale(nn.Module):
    """mmcv's ``Scale``: one learnt multiplier."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class ScrfdHead(nn.Module):
    """SCRFD's head (``cls_reg_share=True``): a conv tower per stride (or shared), then score/box/keypoint convs.

    Args:
        in_channels: neck width.
        feat_channels: tower width.
        stacked_convs: convs in the tower.
        norm: ``"bn"`` or ``"gn"`` (16 groups).
        strides: feature strides.
        strides_share: one tower and output convs for every stride.
        dw_conv: depth-wise separable tower convs.
        use_scale: learnt per-stride multiplier of the box distances.
        use_kps: predict five keypoints.
        num_anchors: anchors per cell.
    """

    def __init__(
        self,
        in_channels: int,
        feat_channels: int,
        stacked_convs: int,
        norm: str,
        strides: Sequence[int] = (8, 16, 32),
        strides_share: bool = False,
        dw_conv: bool = False,
        use_scale: bool = True,
        use_kps: bool = True,
        num_anchors: int = 2,
    ) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.strides_share = strides_share
        self.use_kps = use_kps
        self.num_anchors = num_anchors
        keys = ["0"] if strides_share else [str(s) for s in strides]
        self.towers = nn.ModuleDict()
        self.cls = nn.ModuleDict()
        self.reg = nn.ModuleDict()
        self.kps = nn.ModuleDict()
        for key in keys:
            layers: list[nn.Module] = []
            for i in range(stacked_convs):
                cin = in_channels if i == 0 else feat_channels
                if dw_conv:
                    layers.append(
                        nn.Sequential(
                            ConvModule(cin, cin, 3, 1, 1, groups=cin, norm=norm),
                            ConvModule(cin, feat_channels, 1, norm=norm),
                        )
                    )
                else:
                    layers.append(ConvModule(cin, feat_channels, 3, 1, 1, norm=norm))
            self.towers[key] = nn.Sequential(*layers)
            self.cls[key] = nn.Conv2d(feat_channels, num_anchors, 3, padding=1)
            self.reg[key] = nn.Conv2d(feat_channels, 4 * num_anchors, 3, padding=1)
            if use_kps:
                self.kps[key] = nn.Conv2d(feat_channels, 10 * num_anchors, 3, padding=1)
        self.scales = nn.ModuleList([_Scale() for _ in strides]) if use_scale else None
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for conv in self.cls.values():
            nn.init.constant_(conv.bias, -4.595)  # SCRFDHead.init_weights

    @staticmethod
    def _flat(x: torch.Tensor, cols: int) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, cols)

    def forward(
        self, feats: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Per stride: score logits ``(N, P_s, 1)``, distances ``(N, P_s, 4)``, keypoint offsets ``(N, P_s, 10)``."""
        scores, boxes, kps = [], [], []
        for i, (f, stride) in enumerate(zip(feats, self.strides)):
            key = "0" if self.strides_share else str(stride)
            t = self.towers[key](f)
            s = self.cls[key](t)
            b = self.reg[key](t)
            if self.scales is not None:
                b = self.scales[i](b)
            scores.append(self._flat(s, 1))
            boxes.append(self._flat(b, 4))
            if self.use_kps:
                kps.append(self._flat(self.kps[key](t), 10))
            else:
                kps.append(b.new_zeros(b.shape[0], scores[-1].shape[1], 10))
        return scores, boxes, kps


@dataclass(frozen=True)
class ScrfdArch:
    """One SCRFD configuration (the published ``model`` dicts of ``configs/scrfd/*.py``).

    Attributes:
        backbone: ``"mobilenet"`` or ``"resnet"``.
        stage_planes: backbone widths (6 for MobileNetV1: stem, stem block, 4 stages; 4 for ResNetV1e).
        stage_blocks: blocks per stage.
        base_channels: ResNetV1e stem width.
        neck_channels: PAFPN width.
        feat_channels / stacked_convs / norm / strides_share / dw_conv / use_scale / use_kps: head settings.
    """

    backbone: str
    stage_planes: tuple[int, ...]
    stage_blocks: tuple[int, ...]
    neck_channels: int
    feat_channels: int
    stacked_convs: int
    norm: str
    strides_share: bool
    dw_conv: bool
    use_scale: bool
    use_kps: bool
    base_channels: int = 0
    strides: tuple[int, ...] = (8, 16, 32)
    num_anchors: int = 2


class SCRFDNet(nn.Module):
    """The whole detector: backbone → PAFPN on the last three stages → :class:`ScrfdHead`.

    Args:
        arch: the configuration.
        width: multiplier of every width (1.0 = published; smaller for CPU smoke runs).
    """

    def __init__(self, arch: ScrfdArch, width: float = 1.0) -> None:
        super().__init__()
        self.arch = arch

        def w(c: int, multiple: int = 4) -> int:
            return max(multiple, int(round(c * width / multiple)) * multiple) if width != 1.0 else c

        planes = tuple(w(c) for c in arch.stage_planes)
        if arch.backbone == "mobilenet":
            self.backbone: nn.Module = ScrfdMobileNet(planes, arch.stage_blocks)
        elif arch.backbone == "resnet":
            self.backbone = ResNetV1e(w(arch.base_channels), planes, arch.stage_blocks)
        else:
            raise ValueError(f"unknown SCRFD backbone {arch.backbone!r}")
        neck = w(arch.neck_channels)
        feat = w(arch.feat_channels, 16 if arch.norm == "gn" else 4)  # GroupNorm(16) needs multiples of 16
        if arch.norm == "gn" and arch.dw_conv:
            neck = w(arch.neck_channels, 16)  # the depth-wise conv is normalised at the neck width
        self.neck = PAFPN(self.backbone.out_channels[1:], neck)  # start_level=1: strides 8, 16, 32
        self.head = ScrfdHead(
            neck,
            feat,
            arch.stacked_convs,
            arch.norm,
            arch.strides,
            arch.strides_share,
            arch.dw_conv,
            arch.use_scale,
            arch.use_kps,
            arch.num_anchors,
        )
        self._init_backbone_and_neck()

    def _init_backbone_and_neck(self) -> None:
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # mmcv kaiming_init
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.backbone.modules():
            if isinstance(m, _BasicBlock):  # zero_init_residual
                nn.init.zeros_(m.conv2[1].weight)
        for m in self.neck.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def strides(self) -> tuple[int, ...]:
        """Feature strides."""
        return self.arch.strides

    @property
    def num_anchors(self) -> int:
        """Anchors per cell."""
        return self.arch.num_anchors

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """``(N, 3, H, W)`` normalised RGB → per-stride ``(scores, distances, keypoints)`` (see the module doc)."""
        feats = self.backbone(x)[1:]
        return self.head(self.neck(feats))


def input_divisor(strides: Sequence[int]) -> int:
    """Input sides must be multiples of this (the largest stride)."""
    return int(max(strides)) if strides else 1


__all__ += ["ConvModule", "input_divisor"]
