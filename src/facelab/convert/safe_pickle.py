"""A restricted unpickler: foreign weight files are read without letting them run code.

Pickle can call any importable function while loading, so a weight file is a program. Every
reader in facelab that meets a pickle (PyTorch checkpoints, joblib arrays, mean-shape files) loads
it through :class:`RestrictedUnpickler`, which resolves only the globals on an explicit allow-list
and raises :class:`UnsafePickleError` for anything else, before it is called.

An allow-list entry maps ``(module, name)`` either to ``None`` (import the real object: used for
numpy's array reconstruction) or to a replacement object (used to rebuild, say, PyTorch tensors as
numpy arrays without importing torch).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from typing import Any

from facelab.errors import ModelError

__all__ = ["RestrictedUnpickler", "UnsafePickleError", "NUMPY_GLOBALS", "resolve_global", "restricted_loads"]

#: The globals a pickle of plain numpy arrays (and scalars) needs, in numpy 1.x and 2.x spellings.
NUMPY_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): None,
    ("numpy._core.multiarray", "_reconstruct"): None,
    ("numpy.core.multiarray", "scalar"): None,
    ("numpy._core.multiarray", "scalar"): None,
    ("numpy", "ndarray"): None,
    ("numpy", "dtype"): None,
}


class UnsafePickleError(ModelError):
    """A pickle asked for a global that is not on the reader's allow-list (it was not loaded or run)."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals.

    Args:
        file: a binary file object.
        allowed: ``{(module, name): replacement or None}``; ``None`` imports the real object.
        what: the file being read, for error messages.

    Example:
        >>> import numpy as np
        >>> data = pickle.dumps(np.arange(3, dtype=np.float32))
        >>> restricted_loads(data, NUMPY_GLOBALS, "doctest").tolist()
        [0.0, 1.0, 2.0]
        >>> restricted_loads(pickle.dumps(print), NUMPY_GLOBALS, "doctest")
        Traceback (most recent call last):
        ...
        facelab.convert.safe_pickle.UnsafePickleError: doctest: refusing to load the global builtins.print ...
    """

    def __init__(self, file: Any, allowed: Mapping[tuple[str, str], Any], what: str) -> None:
        super().__init__(file)
        self._allowed = allowed
        self._what = what

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - pickle protocol
        return resolve_global(module, name, self._allowed, self._what)


def resolve_global(module: str, name: str, allowed: Mapping[tuple[str, str], Any], what: str) -> Any:
    """The object an allow-listed pickle global stands for (the one rule of every ``find_class``).

    Args:
        module: module of the global the pickle asks for.
        name: its name.
        allowed: ``{(module, name): replacement or None}``; ``None`` imports the real object.
        what: the file being read, for the error message.

    Raises:
        UnsafePickleError: ``(module, name)`` is not in ``allowed``.
    """
    key = (module, name)
    if key not in allowed:
        raise UnsafePickleError(
            f"{what}: refusing to load the global {module}.{name} (pickles can run code; this reader "
            "accepts only the array types it knows, so the file is either not what it claims or unsafe)"
        )
    replacement = allowed[key]
    if replacement is not None:
        return replacement
    import importlib

    return getattr(importlib.import_module(module), name)


def restricted_loads(data: bytes, allowed: Mapping[tuple[str, str], Any], what: str) -> Any:
    """Unpickle ``data`` through :class:`RestrictedUnpickler`.

    Raises:
        UnsafePickleError: a global outside ``allowed`` was requested.
        ModelError: the data is not a readable pickle.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), allowed, what).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure means an unreadable file
        raise ModelError(f"{what}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
