"""Run a model over many inputs in chunks: one ``session.run`` per chunk.

Models with a dynamic batch axis get chunks of ``batch_size``; a model whose batch axis is fixed
(``[1, 3, H, W]`` or ``[B, 3, H, W]``) gets chunks of exactly that size, the last one padded with
zeros and the padding's outputs dropped. Runners call :func:`run_in_chunks` instead of writing
their own loop, so batching behaves the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from facelab.errors import ConfigError
from facelab.runtime.session import OrtSession

__all__ = [
    "batch_limit",
    "check_batch_size",
    "crop_model_input_size",
    "run_in_chunks",
    "split_per_image",
    "square_input_size",
]


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` as an ``int``.

    Raises:
        ConfigError: ``batch_size`` is smaller than 1.
    """
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    return int(batch_size)


def batch_limit(session: OrtSession, batch_size: int) -> int:
    """Images per ``run`` call: the model's fixed batch size if it has one, else ``batch_size``.

    Raises:
        ConfigError: ``batch_size`` is smaller than 1.
    """
    check_batch_size(batch_size)
    shape = session.inputs[0].shape
    fixed = shape[0] if shape else None
    return int(fixed) if fixed else int(batch_size)


def run_in_chunks(
    session: OrtSession,
    items: np.ndarray,
    batch_size: int,
    prepare: Callable[[np.ndarray], np.ndarray],
    extra_feeds: Mapping[str, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Feed ``items`` to the model's first input in chunks and concatenate every output.

    Args:
        session: the model.
        items: ``(N, ...)`` array of raw inputs (e.g. ``uint8`` crops); chunks of it are turned
            into the input tensor by ``prepare`` (so only one chunk's tensor exists at a time).
        batch_size: chunk size for a dynamic batch axis (see :func:`batch_limit`).
        prepare: maps an ``(n, ...)`` chunk of ``items`` to the ``(n, ...)`` input tensor.
        extra_feeds: other inputs, passed unchanged to every call.

    Returns:
        One array per model output, ``(N, ...)`` in the order of ``items``. For ``N == 0`` the
        model is not run and each array has shape ``(0, *known_dims)`` (unknown dims become 0).
    """
    count = len(items)
    if count == 0:
        return [np.zeros((0, *(d or 0 for d in o.shape[1:])), dtype=np.float32) for o in session.outputs]
    chunk = batch_limit(session, batch_size)
    fixed = bool(session.inputs[0].shape and session.inputs[0].shape[0])
    name = session.inputs[0].name
    parts: list[list[np.ndarray]] = []
    for start in range(0, count, chunk):
        tensor = prepare(items[start : start + chunk])
        used = len(tensor)
        if fixed and used < chunk:
            pad = np.zeros((chunk - used, *tensor.shape[1:]), dtype=tensor.dtype)
            tensor = np.concatenate([tensor, pad], axis=0)
        outputs = session.run({name: tensor, **(extra_feeds or {})})
        parts.append([np.asarray(o)[:used] for o in outputs])
    return [np.concatenate([p[i] for p in parts], axis=0) for i in range(len(parts[0]))]


def split_per_image(values: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Cut the outputs of all items of several images back into one array per image.

    Args:
        values: ``(sum(counts), ...)`` array, the items of image 0 first.
        counts: items per image.

    Returns:
        One ``(counts[i], ...)`` view of ``values`` per image (an empty list for no images).

    Raises:
        ConfigError: ``values`` does not have ``sum(counts)`` rows.

    Example:
        >>> [part.tolist() for part in split_per_image(np.arange(5), [2, 0, 3])]
        [[0, 1], [], [2, 3, 4]]
    """
    if len(values) != sum(counts):
        raise ConfigError(f"{len(values)} outputs for {sum(counts)} items ({list(counts)} per image)")
    return np.split(values, np.cumsum(counts)[:-1]) if len(counts) else []


def crop_model_input_size(
    session: OrtSession, card_size: tuple[int, int] | None, label: str, kind: str, batch_size: int
) -> int:
    """Checks shared by the runners of one-output models on square crops; returns the crop side.

    Args:
        session: the model.
        card_size: the card's ``(width, height)``, or ``None``.
        label: model name for error messages.
        kind: what the model is, for error messages (``"a recogniser"``, ``"a landmark model"``).
        batch_size: the runner's chunk size.

    Raises:
        ModelError: the model has more or fewer than one output, or no square ``(N, 3, S, S)``
            input (see :func:`square_input_size`).
        ConfigError: ``batch_size`` is smaller than 1.
    """
    from facelab.errors import ModelError

    if len(session.outputs) != 1:
        raise ModelError(f"{label}: {kind} must have one output, this one has {len(session.outputs)}")
    check_batch_size(batch_size)
    return square_input_size(session.inputs[0].shape, card_size, label)


def square_input_size(shape: tuple[int | None, ...], card_size: tuple[int, int] | None, label: str) -> int:
    """Side of a model's square image input, from the graph or (for dynamic axes) the card.

    Args:
        shape: the image input's shape ``(N, 3, H, W)`` (``None`` for dynamic axes), as
            :attr:`~facelab.runtime.session.TensorInfo.shape`.
        card_size: the card's ``(width, height)``, or ``None``.
        label: model name for error messages.

    Raises:
        ModelError: the input is not 4-D, not square, disagrees with the card, or has a
            dynamic size the card does not state.
    """
    from facelab.errors import ModelError

    if len(shape) != 4:
        raise ModelError(f"{label}: expected an (N, 3, H, W) input, got shape {shape}")
    height, width = shape[2], shape[3]
    if height is None or width is None:
        if card_size is None:
            raise ModelError(f"{label}: the model's input size is dynamic and its card states no input_size")
        width, height = card_size
    elif card_size is not None and tuple(card_size) != (width, height):
        raise ModelError(f"{label}: the card says input {tuple(card_size)} but the model takes {(width, height)}")
    if height != width:
        raise ModelError(f"{label}: expected a square input, got {width}x{height}")
    return int(width)
