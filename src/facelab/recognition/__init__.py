"""Face recognition: aligned crops → embeddings, and comparing embeddings.

``create_recognizer("w600k_r50.onnx")`` loads a user-supplied InsightFace-style recogniser with
InsightFace's preprocessing; ``create_recognizer(card, path=...)`` uses a card's preprocessing.
Importing this package registers :class:`ArcFaceRecognizer` as the ``"recognition"`` runner in
:data:`facelab.registry.RUNNERS` (no ONNX Runtime import until a model is loaded).
"""

from __future__ import annotations

import os
from pathlib import Path

from facelab.errors import ConfigError, ModelNotFoundError
from facelab.recognition.arcface import DEFAULT_BATCH_SIZE as DEFAULT_BATCH_SIZE
from facelab.recognition.arcface import ArcFaceRecognizer as ArcFaceRecognizer
from facelab.recognition.arcface import default_recognizer_card as default_recognizer_card
from facelab.recognition.compare import compare as compare
from facelab.recognition.compare import cosine_to_squared_l2 as cosine_to_squared_l2
from facelab.recognition.compare import similarity_matrix as similarity_matrix
from facelab.recognition.compare import squared_l2_to_cosine as squared_l2_to_cosine
from facelab.runtime.session import RuntimeOptions
from facelab.zoo.card import ModelCard

__all__ = [
    "ArcFaceRecognizer",
    "DEFAULT_BATCH_SIZE",
    "compare",
    "cosine_to_squared_l2",
    "create_recognizer",
    "default_recognizer_card",
    "similarity_matrix",
    "squared_l2_to_cosine",
]


def create_recognizer(
    path_or_card: str | os.PathLike | ModelCard,
    runtime: RuntimeOptions | None = None,
    *,
    path: str | os.PathLike | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ArcFaceRecognizer:
    """Load a recogniser from an ONNX file or from a model card.

    Args:
        path_or_card: an ``.onnx`` file (InsightFace preprocessing: ArcFace template, RGB,
            ``(x - 127.5) / 127.5``) or a ``recognition`` :class:`~facelab.zoo.card.ModelCard`.
        runtime: providers and threads (default: :class:`~facelab.runtime.session.RuntimeOptions`).
        path: the model file, required with a card.
        batch_size: crops per ``run`` call.

    Returns:
        The loaded :class:`ArcFaceRecognizer`.

    Raises:
        ModelNotFoundError: the file does not exist.
        ConfigError: a card without ``path``, or a card of another task.
    """
    if isinstance(path_or_card, ModelCard):
        if path is None:
            raise ConfigError(f"create_recognizer: pass path= with the card {path_or_card.name!r} (its .onnx file)")
        card, model_path = path_or_card, Path(path)
    else:
        model_path = Path(path_or_card)
        card = default_recognizer_card(model_path)
    if not model_path.is_file():
        raise ModelNotFoundError(f"recogniser file not found: {model_path}")
    return ArcFaceRecognizer.from_card(card, model_path, runtime, batch_size=batch_size)
