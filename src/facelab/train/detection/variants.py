"""The published detector variants, the model wrapper used in training, and the forms that are exported.

:data:`DETECTOR_VARIANTS` (``facelab train info`` lists them with their published figures):

==========================  ==========  =================================================================
name                        family      published as
==========================  ==========  =================================================================
``scrfd_500m``              scrfd       ``configs/scrfd/scrfd_500m.py`` (GN head shared by strides)
``scrfd_500m_kps``          scrfd       ``scrfd_500m_bnkps.py`` (= buffalo_s/sc ``det_500m.onnx``)
``scrfd_2.5g``              scrfd       ``scrfd_2.5g.py``
``scrfd_2.5g_kps``          scrfd       ``scrfd_2.5g_bnkps.py`` (= buffalo_m ``det_2.5g.onnx``)
``scrfd_10g``               scrfd       ``scrfd_10g.py``
``scrfd_10g_kps``           scrfd       ``scrfd_10g_bnkps.py`` (= buffalo_l ``det_10g.onnx``)
``retinaface_mnet025``      retinaface  biubug6/Pytorch_Retinaface ``cfg_mnet`` (LeakyReLU 0.1)
``retinaface_r50``          retinaface  biubug6/Pytorch_Retinaface ``cfg_re50``
``retinaface_mnet025_1mb``  retinaface  biubug6/Face-Detector-1MB-with-landmark MobileNet0.25 (ReLU;
                                        its MIT ``mobilenet0.25_Final.pth`` loads for fine-tuning)
==========================  ==========  =================================================================

Published FLOPs are mmcv's multiply-accumulate counts at 640×480 ("VGA"; SCRFD's
``tools/get_flops.py`` counts 640×640 and multiplies by 0.75); WIDER FACE val AP is single-scale VGA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from facelab.detection.retinaface import RETINAFACE_PYTORCH_NORMALIZATION
from facelab.errors import ConfigError
from facelab.ops.normalize import INSIGHTFACE_DETECTOR, Normalization
from facelab.registry import Registry
from facelab.runtime.session import TensorInfo
from facelab.train.detection.scrfd_net import ScrfdArch, SCRFDNet

__all__ = [
    "DETECTOR_VARIANTS",
    "DetectorVariant",
    "DetectorModel",
    "ScrfdExportForm",
    "build_detector",
    "export_signature",
]


@dataclass(frozen=True)
class DetectorVariant:
    """One published detector.

    Attributes:
        name: registry name.
        family: ``"scrfd"`` or ``"retinaface"``.
        build: ``(width) -> nn.Module`` (width 1.0 = published).
        normalization: input colour order and mean/std.
        use_kps: predicts five keypoints.
        input_size: published training input side.
        strides: feature strides.
        min_sizes: RetinaFace prior sizes per level.
        published: published figures (``params_m``, ``gflops_vga``, ``wider_val``).
        source: where the configuration is published.
    """

    name: str
    family: str
    build: Callable[[float], nn.Module]
    normalization: Normalization
    use_kps: bool
    input_size: int
    strides: tuple[int, ...] = (8, 16, 32)
    min_sizes: tuple[tuple[int, ...], ...] = ()
    published: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def steps(self) -> tuple[int, ...]:
        """RetinaFace prior steps (= strides)."""
        return self.strides


DETECTOR_VARIANTS: Registry[DetectorVariant] = Registry("detector variant")

_SCRFD_SRC = "https://github.com/deepinsight/insightface/tree/master/detection/scrfd"
_MNET = ScrfdArch("mobilenet", (16, 16, 40, 72, 152, 288), (2, 3, 2, 6), 16, 64, 2, "gn", True, True, True, False)
_R25 = ScrfdArch("resnet", (24, 48, 48, 80), (3, 5, 3, 2), 24, 64, 2, "gn", True, False, True, False, base_channels=24)
_R10 = ScrfdArch("resnet", (56, 88, 88, 224), (3, 4, 2, 3), 56, 80, 3, "gn", True, False, True, False, base_channels=56)


def _kps(arch: ScrfdArch, use_scale: bool = True) -> ScrfdArch:
    """The ``_bnkps`` variant of a config: BN head, one tower per stride, keypoints."""
    from dataclasses import replace

    return replace(arch, norm="bn", strides_share=False, use_scale=use_scale, use_kps=True)


def _scrfd(name: str, arch: ScrfdArch, params: float, gflops: float, ap: tuple[float, float, float]) -> None:
    DETECTOR_VARIANTS.register(name)(
        DetectorVariant(
            name,
            "scrfd",
            lambda width, arch=arch: SCRFDNet(arch, width),
            INSIGHTFACE_DETECTOR,
            arch.use_kps,
            640,
            published={
                "params_m": params,
                "gflops_vga": gflops,
                "wider_val": dict(zip(("easy", "medium", "hard"), ap)),
            },
            source=f"{_SCRFD_SRC}/configs/scrfd/{name.replace('_kps', '_bnkps')}.py",
        )
    )


_scrfd("scrfd_500m", _MNET, 0.57, 0.5, (90.57, 88.12, 68.51))
_scrfd("scrfd_500m_kps", _kps(_MNET, use_scale=False), 0.57, 0.5, (90.97, 88.44, 69.49))  # scale_mode=0
_scrfd("scrfd_2.5g", _R25, 0.67, 2.5, (93.78, 92.16, 77.87))
_scrfd("scrfd_2.5g_kps", _kps(_R25), 0.82, 2.5, (93.80, 92.02, 77.13))
_scrfd("scrfd_10g", _R10, 3.86, 10.0, (95.16, 93.87, 83.05))
_scrfd("scrfd_10g_kps", _kps(_R10), 4.23, 10.0, (95.40, 94.01, 82.80))


def _retina_mnet(leaky: float) -> Callable[[float], nn.Module]:
    def build(width: float) -> nn.Module:
        from facelab.train.detectors.retinaface_mnet import RetinaFaceMNet

        if width != 1.0:
            raise ConfigError("RetinaFace MobileNet-0.25 has no width option (it is already 0.25)")
        return RetinaFaceMNet(leaky=leaky)

    return build


def _retina_r50(width: float) -> nn.Module:
    from facelab.train.detection.retinaface_net import RetinaFaceR50

    return RetinaFaceR50(width=width, channels=256 if width == 1.0 else max(16, int(round(256 * width / 4)) * 4))


_BIUBUG6 = "https://github.com/biubug6/Pytorch_Retinaface"
DETECTOR_VARIANTS.register("retinaface_mnet025")(
    DetectorVariant(
        "retinaface_mnet025",
        "retinaface",
        _retina_mnet(0.1),
        RETINAFACE_PYTORCH_NORMALIZATION,
        True,
        640,
        min_sizes=((16, 32), (64, 128), (256, 512)),
        published={
            "params_m": 0.44,
            "gflops_vga": 0.802,
            "wider_val": {"easy": 87.78, "medium": 81.16, "hard": 47.32},
            "wider_val_original_scale": {"easy": 90.70, "medium": 88.16, "hard": 73.82},
        },
        source=f"{_BIUBUG6} data/config.py cfg_mnet",
    )
)
DETECTOR_VARIANTS.register("retinaface_r50")(
    DetectorVariant(
        "retinaface_r50",
        "retinaface",
        _retina_r50,
        RETINAFACE_PYTORCH_NORMALIZATION,
        True,
        840,
        min_sizes=((16, 32), (64, 128), (256, 512)),
        published={
            "params_m": 29.50,
            "gflops_vga": 37.59,
            "wider_val": {"easy": 94.92, "medium": 91.90, "hard": 64.17},
            "wider_val_original_scale": {"easy": 95.48, "medium": 94.04, "hard": 84.43},
        },
        source=f"{_BIUBUG6} data/config.py cfg_re50",
    )
)
DETECTOR_VARIANTS.register("retinaface_mnet025_1mb")(
    DetectorVariant(
        "retinaface_mnet025_1mb",
        "retinaface",
        _retina_mnet(0.0),
        RETINAFACE_PYTORCH_NORMALIZATION,
        True,
        640,
        min_sizes=((10, 20), (32, 64), (128, 256)),
        published={"wider_val": {"easy": 87.3, "medium": 83.6, "hard": 63.8}},
        source="https://github.com/biubug6/Face-Detector-1MB-with-landmark (MobileNet0.25)",
    )
)


def get_variant(name: str) -> DetectorVariant:
    """The variant registered as ``name``.

    Raises:
        ConfigError: unknown name.
    """
    if name not in DETECTOR_VARIANTS:
        raise ConfigError(f"unknown detector {name!r}; known: {', '.join(DETECTOR_VARIANTS.names())}")
    return DETECTOR_VARIANTS.get(name)


class DetectorModel(nn.Module):
    """A variant's network plus what training needs around it.

    Args:
        variant: the variant (or its name).
        width: width multiplier (1.0 = published).
        freeze_bn: keep batch norms in eval mode while training (fine-tuning with small batches).

    ``forward`` is the network's training form: SCRFD's per-stride ``(scores, distances,
    keypoints)`` lists, RetinaFace's ``(loc, conf, landms)``.
    """

    def __init__(self, variant: DetectorVariant | str, width: float = 1.0, freeze_bn: bool = False) -> None:
        super().__init__()
        self.variant = get_variant(variant) if isinstance(variant, str) else variant
        self.width = float(width)
        self.freeze_bn = freeze_bn
        self.net = self.variant.build(self.width)

    def forward(self, x: torch.Tensor) -> Any:
        """The network's training-form outputs."""
        return self.net(x)

    def train(self, mode: bool = True) -> DetectorModel:
        """Train mode; batch norms stay in eval mode with ``freeze_bn``."""
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def export_form(self) -> nn.Module:
        """The module whose outputs are the exported ONNX outputs (:func:`export_signature`)."""
        if self.variant.family == "scrfd":
            return ScrfdExportForm(self.net)
        return self.net

    def load_pretrained(self, path: str) -> None:
        """Load a biubug6 ``.pth`` state_dict or a facelab ``model.pt`` into the network (``strict``).

        Raises:
            ConfigError: missing file or keys/shapes that do not match.
        """
        from pathlib import Path

        from facelab.train.detectors.retinaface_mnet import _clean_state_dict

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"pretrained weights {p} not found")
        state = torch.load(p, map_location="cpu", weights_only=False)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = {k[len("net.") :]: v for k, v in state["model"].items() if k.startswith("net.")}
        state = _clean_state_dict(state, str(p))
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"{p}: does not load into {self.variant.name}: {exc}") from exc


class ScrfdExportForm(nn.Module):
    """SCRFD as InsightFace exports it: input ``(1, 3, H, W)``; sigmoid scores, distances, keypoints as ``(rows, C)``.

    Outputs: ``score_8, score_16, score_32, bbox_8, ..., [kps_8, ...]`` (6 or 9), rows in
    ``(row, col, anchor)`` order, no batch axis (InsightFace's ``scrfd2onnx.py`` names and the
    layout of the packaged ``det_*.onnx`` files).
    """

    def __init__(self, net: SCRFDNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(1, 3, H, W)`` normalised RGB → the 6 or 9 outputs."""
        scores, boxes, kps = self.net(x)
        out = [s.sigmoid().reshape(-1, 1) for s in scores] + [b.reshape(-1, 4) for b in boxes]
        if self.net.arch.use_kps:
            out += [k.reshape(-1, 10) for k in kps]
        return out


def export_signature(variant: DetectorVariant) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """``(inputs, outputs)`` of the exported file (what the runners read; ``None`` = dynamic axis)."""
    f = "tensor(float)"
    if variant.family == "scrfd":
        names = [f"score_{s}" for s in variant.strides] + [f"bbox_{s}" for s in variant.strides]
        widths = [1] * len(variant.strides) + [4] * len(variant.strides)
        if variant.use_kps:
            names += [f"kps_{s}" for s in variant.strides]
            widths += [10] * len(variant.strides)
        return [TensorInfo("input.1", (1, 3, None, None), f)], [
            TensorInfo(n, (None, c), f) for n, c in zip(names, widths)
        ]
    outputs = [TensorInfo(n, (None, None, c), f) for n, c in (("loc", 4), ("conf", 2), ("landms", 10))]
    return [TensorInfo("input", (None, 3, None, None), f)], outputs


def build_detector(name: str, width: float = 1.0, freeze_bn: bool = False) -> DetectorModel:
    """A :class:`DetectorModel` of a registered variant, randomly initialised as published."""
    return DetectorModel(get_variant(name), width, freeze_bn)


__all__ += ["get_variant"]


def info_table(names: list[str] | None = None) -> str:
    """A text table of every (or the named) variant: parameters (M) and GMACs at 640×480, ours and published.

    Our MACs are convolution and linear multiply-accumulates of one 640×640 forward pass times
    0.75 (the VGA convention of SCRFD's ``tools/get_flops.py``); published values from the
    SCRFD README and its comparison table.
    """
    from facelab.train.backbones import count_macs, count_parameters

    def fmt(v: float | None) -> str:
        return f"{v:.2f}" if v is not None else "-"

    header = (
        f"{'detector':<24}{'family':<12}{'params (M)':>11}{'published':>10}{'GMACs@VGA':>11}{'published':>10}"
        "  WIDER val (published)"
    )
    rows = [header]
    for name in names or DETECTOR_VARIANTS.names():
        v = get_variant(name)
        model = DetectorModel(v)
        params = count_parameters(model) / 1e6
        macs = count_macs(model.net, 640) * 0.75 / 1e9
        ap = v.published.get("wider_val", {})
        wider = "/".join(f"{ap[k]:.2f}" for k in ("easy", "medium", "hard")) if ap else "-"
        rows.append(
            f"{name:<24}{v.family:<12}{params:>11.2f}{fmt(v.published.get('params_m')):>10}{macs:>11.2f}"
            f"{fmt(v.published.get('gflops_vga')):>10}  {wider}"
        )
    return "\n".join(rows)


__all__ += ["info_table"]
