"""RGB liveness (face anti-spoofing) on detection boxes: the ``liveness`` runner and its results.

Models: the ``liveness`` pack's two MiniFASNets (Silent-Face-Anti-Spoofing, Apache-2.0), each on
its own crop of the face (:mod:`facelab.liveness.crop`: box scaled by the card's
``extra["crop_scale"]``, 2.7 and 4.0, kept inside the image, 80x80, BGR, raw 0..255). Each model
gives a softmax over three classes, class 1 being a real face (0 and 2 are the two spoof classes
of the original's training data). The models are fused as the original fuses them, by adding
their softmaxes; facelab divides the sum by the number of models, so

* :attr:`LivenessResult.probs` = mean softmax (sums to 1),
* :attr:`LivenessResult.score` = ``probs[1]``, the fused probability of a real face,
* :attr:`LivenessResult.label` = ``argmax(probs)``: the original's decision (``1`` = real),
* :attr:`LivenessResult.is_live` = ``score >= threshold``, with :data:`LIVENESS_THRESHOLD` = 0.5
  by default. At 0.5 a face is live only if the real class holds at least half the probability
  mass, a little stricter than the original's argmax (which calls a face real when class 1 beats
  each spoof class, e.g. 0.45 / 0.30 / 0.25).

All faces of all images are cropped first and each model runs on them in chunks of
``batch_size`` (one ``run`` call per chunk and model; default :data:`LIVENESS_BATCH` = 8: on a
2-core CPU, chunks of 4-8 crops ran 25-35 % faster per face than chunks of 32, whose activations
no longer fit the cache).

Calling it from elsewhere (gallery, service)::

    runner = load_liveness()                       # the "liveness" pack, downloaded once, converted without torch
    results = runner.check(image, boxes)           # one LivenessResult per [x1, y1, x2, y2] box
    results = runner.predict(images, boxes_per_image)   # several images at once

or, inside a :class:`~facelab.pipeline.FaceAnalyzer` built with ``modules=[..., "liveness"]``,
read ``face.liveness``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.alignment.transform import pair_images
from facelab.errors import ConfigError, ModelError
from facelab.liveness.crop import silentface_crops
from facelab.ops.normalize import to_tensor
from facelab.registry import RUNNERS
from facelab.runtime.batching import check_batch_size, run_in_chunks
from facelab.runtime.session import OrtSession, RuntimeOptions, create_session
from facelab.structures import Detections
from facelab.zoo.card import ModelCard

__all__ = [
    "LIVENESS_THRESHOLD",
    "LIVENESS_PACK",
    "LIVENESS_BATCH",
    "LIVE_CLASS",
    "LivenessResult",
    "LivenessModel",
    "LivenessRunner",
    "load_liveness",
]

_logger = logging.getLogger(__name__)

#: Default threshold on :attr:`LivenessResult.score` (fused probability of a real face).
LIVENESS_THRESHOLD = 0.5
#: The class index of a real face in the models' outputs.
LIVE_CLASS = 1
#: Default crops per ``run`` call (see the module docstring).
LIVENESS_BATCH = 8
#: The zoo pack the liveness models come from by default.
LIVENESS_PACK = "liveness"


@dataclass(frozen=True)
class LivenessResult:
    """Liveness of one face.

    Attributes:
        score: fused probability that the face is real (not a photo, screen or mask), in ``[0, 1]``.
        is_live: ``score >= threshold``.
        threshold: the threshold used.
        label: index of the most probable class of the fused output (1 = real; 0 and 2 = spoof
            classes), the original's decision.
        probs: the fused (mean) softmax over the three classes.
        model_scores: each model's own probability of a real face, by card name.
    """

    score: float
    is_live: bool
    threshold: float
    label: int
    probs: tuple[float, ...]
    model_scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return {
            "score": self.score,
            "is_live": self.is_live,
            "threshold": self.threshold,
            "label": self.label,
            "probs": list(self.probs),
            "model_scores": dict(self.model_scores),
        }


class LivenessModel:
    """One liveness network: an ONNX Runtime session and the card that says how to crop for it.

    Attributes:
        card: the model card (``extra["crop_scale"]`` is the box scale).
        session: the session; its input is ``(N, 3, S, S)``, its output ``prob`` (or a single
            logits output, softmaxed here).
        crop_scale: box scale of the crop.
        input_size: crop side ``S``.
    """

    def __init__(self, session: OrtSession, card: ModelCard) -> None:
        if card.task != "liveness":
            raise ConfigError(f"{card.name}: a liveness model needs a 'liveness' card, not {card.task!r}")
        if "crop_scale" not in card.extra:
            raise ConfigError(f"{card.name}: the card has no extra['crop_scale'] (box scale of the crop)")
        self.card = card
        self.session = session
        self.crop_scale = float(card.extra["crop_scale"])
        shape = session.inputs[0].shape
        size = shape[2] if len(shape) == 4 and shape[2] else (card.input_size or (None,))[0]
        if not size:
            raise ModelError(f"{card.name}: input size unknown (dynamic in the graph, none on the card)")
        self.input_size = int(size)
        self.live_class = int(card.extra.get("live_class", LIVE_CLASS))
        names = session.output_names
        self._prob_index = names.index("prob") if "prob" in names else None

    def probabilities(self, crops: np.ndarray, batch_size: int) -> np.ndarray:
        """``(N, C)`` softmax of ``(N, S, S, 3)`` ``uint8`` BGR crops."""
        outputs = run_in_chunks(
            self.session, crops, batch_size, lambda chunk: to_tensor(chunk, self.card.normalization)
        )
        if self._prob_index is not None:
            return np.asarray(outputs[self._prob_index], dtype=np.float32)
        logits = np.asarray(outputs[0], dtype=np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def _model_from_card(
    card: ModelCard, path: str | os.PathLike, runtime: RuntimeOptions | None, home: str | os.PathLike | None
) -> LivenessModel:
    """Load a liveness model; a PyTorch ``.pth`` checkpoint is converted to ONNX (cached) first."""
    path = Path(path)
    if path.suffix.lower() in (".pth", ".pt"):
        from facelab.liveness.minifasnet import convert_minifasnet

        path, info = convert_minifasnet(path, card, home)
        card = ModelCard.from_dict(info)
    return LivenessModel(create_session(path, runtime), card)


@RUNNERS.register("liveness")
class LivenessRunner:
    """Liveness of every detection box, from one or several fused models.

    Args:
        models: the networks (the ``liveness`` pack has two).
        threshold: ``is_live`` threshold on the fused real-face probability.
        batch_size: crops per ``run`` call (default :data:`LIVENESS_BATCH`).

    Example:
        >>> runner = load_liveness()                                  # doctest: +SKIP
        >>> [r.is_live for r in runner.check(image, [[40, 30, 140, 160]])]   # doctest: +SKIP
        [True]
    """

    def __init__(
        self, models: Sequence[LivenessModel], threshold: float = LIVENESS_THRESHOLD, batch_size: int = LIVENESS_BATCH
    ) -> None:
        if not models:
            raise ConfigError("a liveness runner needs at least one model")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"liveness threshold must be in [0, 1], got {threshold}")
        classes = {m.session.outputs[0].shape[-1] for m in models} - {None}
        if len(classes) > 1:
            raise ModelError(f"liveness models with different class counts {sorted(classes)} cannot be fused")
        self.models = list(models)
        self.threshold = float(threshold)
        self.batch_size = check_batch_size(batch_size)

    @classmethod
    def from_card(
        cls, card: ModelCard, path: str | os.PathLike, runtime: RuntimeOptions | None = None, **kwargs: Any
    ) -> LivenessRunner:
        """A runner with one model (kwargs: ``threshold``, ``batch_size``, ``home``)."""
        return cls.from_cards([(card, path)], runtime, **kwargs)

    @classmethod
    def from_cards(
        cls,
        members: Sequence[tuple[ModelCard, str | os.PathLike]],
        runtime: RuntimeOptions | None = None,
        *,
        threshold: float = LIVENESS_THRESHOLD,
        batch_size: int = LIVENESS_BATCH,
        home: str | os.PathLike | None = None,
    ) -> LivenessRunner:
        """A runner fusing every ``(card, path)`` member (``.onnx``, or ``.pth`` converted on first use).

        Args:
            members: the models; the pipeline passes every ``liveness`` member of a pack.
            runtime: ONNX Runtime options.
            threshold: see :class:`LivenessRunner`.
            batch_size: crops per ``run`` call.
            home: facelab home holding the converted ONNX files.
        """
        return cls([_model_from_card(c, p, runtime, home) for c, p in members], threshold, batch_size)

    @property
    def cards(self) -> list[ModelCard]:
        """The models' cards."""
        return [m.card for m in self.models]

    def probabilities(
        self, images: np.ndarray | Sequence[np.ndarray], boxes_per_image: Any
    ) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
        """Raw fused and per-model probabilities for every box of every image.

        Returns:
            ``(fused, per_model, counts)``: ``(N, C)`` mean softmax, one ``(N, C)`` softmax per
            model, and boxes per image.
        """
        imgs, boxes = pair_images(images, boxes_per_image)
        boxes = [np.asarray(b, dtype=np.float64) for b in boxes]  # silentface_crops checks their shape
        counts = [len(b) if b.size else 0 for b in boxes]
        per_model = []
        for model in self.models:
            crops = silentface_crops(imgs, boxes, model.crop_scale, model.input_size)
            per_model.append(model.probabilities(crops, self.batch_size))
        fused = np.mean(per_model, axis=0) if sum(counts) else np.zeros((0, 3), np.float32)
        return fused, per_model, counts

    def predict(self, images: np.ndarray | Sequence[np.ndarray], boxes_per_image: Any) -> list[list[LivenessResult]]:
        """Liveness of every box of one or several images.

        Args:
            images: one ``(H, W, 3)`` ``uint8`` BGR image or a sequence of them.
            boxes_per_image: for one image its ``(n, >=4)`` boxes ``[x1, y1, x2, y2, ...]``; for
                several, one such array per image.

        Returns:
            Per image, one :class:`LivenessResult` per box.

        Raises:
            ImageError: an image is not an ``(H, W, 3)`` array.
            ConfigError: boxes of the wrong shape, not finite, or without area.
        """
        fused, per_model, counts = self.probabilities(images, boxes_per_image)
        live = self.models[0].live_class
        results = []
        for i in range(len(fused)):
            probs = tuple(float(v) for v in fused[i])
            score = probs[live]
            results.append(
                LivenessResult(
                    score=score,
                    is_live=bool(score >= self.threshold),
                    threshold=self.threshold,
                    label=int(np.argmax(fused[i])),
                    probs=probs,
                    model_scores={m.card.name: float(p[i, m.live_class]) for m, p in zip(self.models, per_model)},
                )
            )
        ends = np.cumsum(counts)
        return [results[end - n : end] for n, end in zip(counts, ends)]

    def check(self, image: np.ndarray, boxes: Any) -> list[LivenessResult]:
        """Liveness of the ``(n, 4)`` boxes ``[x1, y1, x2, y2]`` of one ``(H, W, 3)`` ``uint8`` BGR image."""
        return self.predict([image], [boxes])[0]

    def predict_detections(
        self, images: Sequence[np.ndarray], detections: Sequence[Detections]
    ) -> list[dict[str, list]]:
        """Pipeline protocol: ``[{"liveness": [LivenessResult per face]}]`` per image."""
        imgs, dets = pair_images(images, detections)
        return [{"liveness": r} for r in self.predict(imgs, [d.boxes for d in dets])]

    def __repr__(self) -> str:
        names = [m.card.name for m in self.models]
        return f"LivenessRunner({names}, threshold={self.threshold}, batch={self.batch_size})"


def load_liveness(
    pack: str | os.PathLike = LIVENESS_PACK,
    *,
    home: str | os.PathLike | None = None,
    download: bool = True,
    runtime: RuntimeOptions | None = None,
    threshold: float = LIVENESS_THRESHOLD,
    batch_size: int = LIVENESS_BATCH,
) -> LivenessRunner:
    """The liveness runner of a zoo pack (default ``"liveness"``), downloading and converting it when needed.

    Args:
        pack: a registered pack name whose ``liveness`` members are used.
        home: facelab home (default ``$FACELAB_HOME`` or ``~/.facelab``).
        download: allow downloading missing files (``FACELAB_OFFLINE=1`` also forbids it).
        runtime: ONNX Runtime options.
        threshold: ``is_live`` threshold.
        batch_size: crops per ``run`` call.

    Raises:
        ModelNotFoundError: the files are missing and cannot be downloaded (the message names them).
        ModelError: the pack has no liveness model.
    """
    from facelab.zoo import resolve_pack

    resolved = resolve_pack(pack, home=home, download=download)
    members = [(c, p) for c, p in resolved.models if c.task == "liveness"]
    if not members:
        raise ModelError(f"pack {resolved.name!r} has no liveness model")
    return LivenessRunner.from_cards(members, runtime, threshold=threshold, batch_size=batch_size, home=home)
