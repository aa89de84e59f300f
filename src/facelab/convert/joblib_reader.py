"""A reader for joblib's numpy pickles (``joblib.dump`` files, plain or lz4-compressed), without joblib.

joblib stores a pickle stream in which every numpy array is replaced by a small
``joblib.numpy_pickle.NumpyArrayWrapper`` object (its state: ``subclass``, ``shape``, ``order``,
``dtype``, ``allow_mmap`` and, from joblib 1.2, ``numpy_array_alignment_bytes``) followed, right
after that object's ``BUILD`` opcode and outside any pickle frame, by the array's raw bytes:

* when ``numpy_array_alignment_bytes`` is set (16): one byte ``n`` then ``n`` padding bytes, so
  that the data starts at a multiple of the alignment in the (uncompressed) stream;
* then ``prod(shape) * itemsize`` bytes in ``order`` (``"C"`` or ``"F"``).

Compressed files hold the same stream inside one compressor frame; the LZ4 frame format
(magic ``04 22 4D 18``) is read with the ``lz4`` package (the ``open`` extra). zlib/gzip/bz2/xz
frames are read with the standard library.

Nothing is executed: the stream goes through :class:`facelab.convert.safe_pickle`'s allow-list
(numpy's dtype and the wrapper, which this module replaces by its own inert class), and object
arrays (which joblib pickles instead of storing raw bytes) are refused.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from facelab.convert.cache import read_source
from facelab.convert.safe_pickle import NUMPY_GLOBALS, UnsafePickleError, resolve_global
from facelab.errors import ModelError

__all__ = ["JOBLIB_GLOBALS", "decompress_joblib", "load_joblib", "read_joblib_file"]

#: LZ4 frame magic number (little-endian 0x184D2204).
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_ZLIB_PREFIX = b"\x78"
_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ"


class _ArrayWrapper:
    """Inert stand-in for ``joblib.numpy_pickle.NumpyArrayWrapper``: holds the state only."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ModelError(f"joblib array wrapper with an unexpected state of type {type(state).__name__}")
        self.state = state


#: Globals a joblib numpy pickle may name: numpy's (see :data:`NUMPY_GLOBALS`) and the wrapper.
JOBLIB_GLOBALS: Mapping[tuple[str, str], Any] = {
    **NUMPY_GLOBALS,
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _ArrayWrapper,
}


class _JoblibUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Pure-Python unpickler (the array bytes sit in the stream between opcodes) with the allow-list."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, stream: io.BytesIO, allowed: Mapping[tuple[str, str], Any], what: str) -> None:
        super().__init__(stream)
        self._stream = stream
        self._allowed = allowed
        self._what = what

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - pickle protocol
        return resolve_global(module, name, self._allowed, self._what)

    def _load_build(self) -> None:
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        if isinstance(self.stack[-1], _ArrayWrapper):
            self.stack[-1] = self._read_array(self.stack[-1].state)

    dispatch[pickle.BUILD[0]] = _load_build

    def _read_array(self, state: dict[str, Any]) -> np.ndarray:
        what = self._what
        try:
            dtype = np.dtype(state["dtype"])
            shape = tuple(int(d) for d in state["shape"])
            order = str(state.get("order", "C"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{what}: malformed joblib array header {state!r} ({exc})") from exc
        if dtype.hasobject:
            raise UnsafePickleError(f"{what}: refusing a joblib object array (it would be unpickled as code)")
        if state.get("subclass", np.ndarray) is not np.ndarray:
            raise UnsafePickleError(f"{what}: refusing a numpy array subclass {state.get('subclass')!r}")
        if order not in ("C", "F") or any(d < 0 for d in shape):
            raise ModelError(f"{what}: malformed joblib array header (shape {shape}, order {order!r})")
        stream = self._stream
        if state.get("numpy_array_alignment_bytes") is not None:
            pad = stream.read(1)
            if len(pad) != 1 or len(stream.read(pad[0])) != pad[0]:
                raise ModelError(f"{what}: truncated joblib array padding at byte {stream.tell()}")
        count = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        raw = stream.read(count)
        if len(raw) != count:
            raise ModelError(
                f"{what}: truncated joblib array: {count} bytes expected for {dtype} {shape}, {len(raw)} left"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape, order=order).copy()  # type: ignore[call-overload]


def decompress_joblib(data: bytes, what: str = "<memory>") -> bytes:
    """The pickle stream of a joblib file: ``data`` itself, or its decompressed content.

    Args:
        data: the whole file.
        what: a name for error messages.

    Raises:
        ModelError: a compressed frame is corrupt, or ``lz4`` is needed but not installed.
    """
    try:
        if data.startswith(_LZ4_MAGIC):
            try:
                import lz4.frame
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ModelError(f"{what} is lz4-compressed; reading it needs: pip install 'facelab[open]'") from exc
            return lz4.frame.decompress(data)
        if data.startswith(_GZIP_MAGIC):
            return gzip.decompress(data)
        if data.startswith(_BZ2_MAGIC):
            return bz2.decompress(data)
        if data.startswith(_XZ_MAGIC):
            return lzma.decompress(data)
        if data.startswith(_ZLIB_PREFIX):
            return zlib.decompress(data)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - every codec raises its own error type
        raise ModelError(f"{what}: corrupt compressed joblib file ({type(exc).__name__}: {exc})") from exc
    return data


def load_joblib(data: bytes, what: str = "<memory>", allowed: Mapping[tuple[str, str], Any] | None = None) -> Any:
    """Load a joblib numpy pickle held in memory (compressed or not) without running code.

    Args:
        data: the file's bytes.
        what: a name for error messages (usually the path).
        allowed: the allow-list (default :data:`JOBLIB_GLOBALS`).

    Returns:
        The pickled object with its arrays as ``numpy`` arrays (a list of arrays for MTCNN weights).

    Raises:
        UnsafePickleError: the stream names a global outside the allow-list, or holds object arrays.
        ModelError: the data is not a readable joblib pickle.

    Example:
        >>> import pickle, numpy as np
        >>> load_joblib(pickle.dumps([np.arange(3)]), "doctest")[0].tolist()
        [0, 1, 2]
    """
    stream = io.BytesIO(decompress_joblib(data, what))
    if not stream.getbuffer()[:1].tobytes() == b"\x80":
        raise ModelError(f"{what}: not a joblib pickle (no pickle protocol header)")
    try:
        return _JoblibUnpickler(stream, JOBLIB_GLOBALS if allowed is None else allowed, what).load()
    except (UnsafePickleError, ModelError):
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure means an unreadable file
        raise ModelError(f"{what}: not a readable joblib pickle ({type(exc).__name__}: {exc})") from exc


def read_joblib_file(path: str | Path) -> Any:
    """:func:`load_joblib` of a file.

    Raises:
        ModelNotFoundError: the file does not exist.
        ModelError: it cannot be read or decoded.
    """
    return load_joblib(*read_source(path, "joblib file"))
