"""Score kernels of the exact search, one per precision: how rows are stored and how they are scored.

A kernel turns L2-normalised ``float32`` vectors into its stored rows (:meth:`encode`, or
:meth:`encode_into` an existing block of the index's storage), prepares
queries (:meth:`prepare`), scores a block of stored rows against them (:meth:`scores`, shape
``(rows, queries)``, higher is better) and turns raw scores into the public ``float32`` scores
(:meth:`public`). Kernels are registered by precision name in :data:`KERNELS`.

NumPy has no fast FP16 or INT8 product (its float16 cast alone takes seconds per million rows), so
FP16 and INT8 use NumKong's SIMD kernels (``numkong``, extra ``facelab[search]``; AVX2, AVX-512,
AVX-512 VNNI/FP16, NEON... picked at run time), called on row blocks from a small thread pool
(the kernels release the GIL). Measured on 1M × 512 INT8 (2 shared cores): ONNX Runtime's
``MatMulInteger`` took 800 ms for one query and 40 ms/query in batches of 32 with the database as
input A (u8 with zero point 128; s8 × s8 was 4× slower batched), 390 ms and 17 ms/query with the
database stored transposed as input B; NumKong took 65 ms and 10 ms/query in the same conditions.
INT8 products are integers: NumKong returns them exactly (int32 from the packed GEMM, exact
integers in float64 from ``cdist``). Without ``numkong`` both precisions fall back to NumPy
(exact for INT8: int8 rows cast to float32 in blocks, whose BLAS dot is exact because every partial
sum is an integer below 2**24), with one warning naming the extra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.registry import Registry

__all__ = [
    "KERNELS",
    "BACKENDS",
    "INT8_SCALE",
    "quantize_int8",
    "Fp32Kernel",
    "Fp16Kernel",
    "Int8Kernel",
    "parallel_map",
]

_logger = logging.getLogger(__name__)

#: Score kernels by precision name ("fp32", "fp16", "int8"); each entry is a class taking ``(dim, backend)``.
KERNELS: Registry = Registry("search precision")
#: Kernel backends: ``"auto"`` (NumKong when installed, else NumPy), ``"numkong"``, ``"numpy"``.
BACKENDS = ("auto", "numkong", "numpy")
#: Threads that score row blocks in parallel for the NumKong kernels.
THREADS = max(1, min(4, os.cpu_count() or 1))

#: Scale of the INT8 quantisation (``int8_x736_v1``): ``q = clamp(round_half_away(x * 736), -128, 127)``.
INT8_SCALE = 736.0

_pool: ThreadPoolExecutor | None = None
_warned = False


def parallel_map(fn: Callable[[int], Any], items: Iterable[int], parallel: bool) -> list[Any]:
    """``[fn(i) for i in items]``, on the shared thread pool when ``parallel`` (and more than one thread)."""
    global _pool
    items = list(items)
    if not parallel or THREADS == 1 or len(items) == 1:
        return [fn(i) for i in items]
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="facelab-search")
    return list(_pool.map(fn, items))


#: Elements quantised per pass of :func:`quantize_int8` (8 MB of float32 scratch: stays in cache, no fresh pages).
_QUANT_BLOCK = 1 << 21


def quantize_int8(x: np.ndarray, scale: float = INT8_SCALE, *, out: np.ndarray | None = None) -> np.ndarray:
    """InsightFace Server's INT8 quantisation, computed in float32.

    Runs in blocks with one reused float32 scratch buffer (no float64, no full-size temporaries),
    writing straight into ``out`` when given.

    Args:
        x: vectors ``(n, d)`` (any shape) float32, L2-normalised (finite).
        scale: the scale ``S`` (736 for ``int8_x736_v1``, 1000 for ``int8_x1000_v1``).
        out: optional C-contiguous ``int8`` array of ``x``'s shape to write into.

    Returns:
        ``clamp(round_half_away_from_zero(x * S), -128, 127)`` as int8, same shape (``out`` when given).

    Example:
        >>> quantize_int8(np.array([[0.5 / 736, -0.5 / 736, 1.0, -0.01]], np.float32)).tolist()
        [[1, -1, 127, -7]]
    """
    src = np.ascontiguousarray(x, np.float32)
    if out is None:
        out = np.empty(src.shape, np.int8)
    elif out.shape != src.shape or out.dtype != np.int8 or not out.flags.c_contiguous:
        raise ConfigError(f"quantize_int8: out must be C-contiguous int8 of shape {src.shape}")
    flat_in, flat_out = src.reshape(-1), out.reshape(-1)
    size = flat_in.size
    scratch = np.empty(min(size, _QUANT_BLOCK), np.float32)
    half = np.empty_like(scratch)
    s32 = np.float32(scale)
    for a in range(0, size, _QUANT_BLOCK):
        block = flat_in[a : a + _QUANT_BLOCK]
        s, h = scratch[: len(block)], half[: len(block)]
        np.multiply(block, s32, out=s)
        np.copysign(np.float32(0.5), s, out=h)
        np.add(s, h, out=s)
        np.clip(s, -128, 127, out=s)
        # the float -> int8 cast truncates toward zero: with the +-0.5 above, round half away from zero
        np.copyto(flat_out[a : a + len(block)], s, casting="unsafe")
    return out


def _numkong(backend: str, precision: str) -> Any:
    """The ``numkong`` module for ``backend``, or ``None`` for the NumPy fallback."""
    global _warned
    if backend not in BACKENDS:
        raise ConfigError(f"unknown search kernel backend {backend!r}; known: {list(BACKENDS)}")
    if backend == "numpy":
        return None
    try:
        import numkong
    except ImportError:
        if backend == "numkong":
            raise ConfigError(
                f"{precision} search with backend='numkong' needs numkong: pip install 'facelab[search]'"
            ) from None
        if not _warned:
            _logger.warning(
                "numkong is not installed: %s search falls back to NumPy, which is many times slower; "
                "pip install 'facelab[search]'",
                precision,
            )
            _warned = True
        return None
    return numkong


@KERNELS.register("fp32")
class Fp32Kernel:
    """FP32 rows scored with NumPy's BLAS (``sgemv`` for one query, ``sgemm`` for a batch).

    Scores are the ``float32`` dot products; 4 bytes per dimension.
    """

    storage_dtype = np.dtype(np.float32)
    score_dtype = np.dtype(np.float32)
    #: BLAS threads itself: blocks are scored one after the other.
    parallel = False

    def __init__(self, dim: int, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown search kernel backend {backend!r}; known: {list(BACKENDS)}")
        self.dim = dim
        self.backend = "numpy"

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Stored rows of ``vectors`` ``(n, dim)`` float32: the vectors themselves."""
        return vectors

    def encode_into(self, vectors: np.ndarray, out: np.ndarray) -> None:
        """Write the stored rows of ``vectors`` ``(n, dim)`` float32 into ``out`` ``(n, dim)``."""
        np.copyto(out, vectors)

    def prepare(self, queries: np.ndarray) -> Any:
        """Queries ``(q, dim)`` float32, contiguous, as :meth:`scores` wants them."""
        return queries

    def scores(self, rows: np.ndarray, prepared: Any) -> np.ndarray:
        """Dot products of stored ``rows`` ``(b, dim)`` with the queries: ``(b, q)`` float32."""
        if prepared.shape[0] == 1:
            return (rows @ prepared[0])[:, None]
        return rows @ prepared.T

    def public(self, raw: np.ndarray) -> np.ndarray:
        """Public scores of raw ones (float32, unchanged)."""
        return raw.astype(np.float32, copy=False)


@KERNELS.register("fp16")
class Fp16Kernel:
    """FP16 rows (IEEE half, 2 bytes per dimension) scored against the query rounded to FP16.

    Scores are the dot products of the half-precision row and query, accumulated in float32
    (NumKong), or computed in float32 after casting both (NumPy fallback).
    """

    storage_dtype = np.dtype(np.float16)
    score_dtype = np.dtype(np.float32)

    def __init__(self, dim: int, backend: str = "auto") -> None:
        self.dim = dim
        self._nk = _numkong(backend, "fp16")
        self.backend = "numkong" if self._nk is not None else "numpy"
        self.parallel = self._nk is not None

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Stored rows: ``vectors`` rounded to float16 (round to nearest even)."""
        out = np.empty(vectors.shape, np.float16)
        self.encode_into(vectors, out)
        return out

    def encode_into(self, vectors: np.ndarray, out: np.ndarray) -> None:
        """Write ``vectors`` rounded to float16 into ``out`` (NumKong's SIMD cast: NumPy's is ~10x slower)."""
        if self._nk is not None and out.flags.c_contiguous and vectors.flags.c_contiguous:
            self._nk.astype(vectors, "float16", out=out)  # round to nearest even, as NumPy
        else:
            np.copyto(out, vectors, casting="same_kind")

    def prepare(self, queries: np.ndarray) -> Any:
        """Queries rounded to float16 (NumKong: packed when more than one)."""
        half = queries.astype(np.float16)
        if self._nk is None:
            return half.astype(np.float32)
        return half if len(half) == 1 else self._nk.dots_pack(half)

    def scores(self, rows: np.ndarray, prepared: Any) -> np.ndarray:
        """Dot products ``(b, q)`` float32 of stored rows with the prepared queries."""
        if self._nk is None:
            return rows.astype(np.float32) @ prepared.T
        if isinstance(prepared, np.ndarray):
            return np.asarray(self._nk.cdist(rows, prepared, metric="dot"), np.float64).astype(np.float32)
        return np.asarray(self._nk.dots_packed(rows, prepared))

    def public(self, raw: np.ndarray) -> np.ndarray:
        """Public scores of raw ones (float32, unchanged)."""
        return raw.astype(np.float32, copy=False)


@KERNELS.register("int8")
class Int8Kernel:
    """INT8 rows (InsightFace Server's ``int8_x736_v1``), 1 byte per dimension, exact integer dots.

    Rows and queries are quantised with :func:`quantize_int8`; the raw score is
    the exact ``int32`` dot (ordering uses it: the unclipped score), the public score
    ``float32(dot) / float32(736²)`` clamped to ``[-1, 1]`` (the dot fits float32 exactly: ``|dot| <= 2**23``
    for 512 dimensions).
    """

    storage_dtype = np.dtype(np.int8)
    score_dtype = np.dtype(np.int32)

    def __init__(self, dim: int, backend: str = "auto") -> None:
        if dim * 128 * 128 >= 2**31:
            raise ConfigError(f"int8 search supports at most {2**31 // 16384 - 1} dimensions, got {dim}")
        self.dim = dim
        self.scale = INT8_SCALE
        self._nk = _numkong(backend, "int8")
        self.backend = "numkong" if self._nk is not None else "numpy"
        self.parallel = self._nk is not None

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Stored rows: :func:`quantize_int8` of ``vectors``."""
        return quantize_int8(vectors, self.scale)

    def encode_into(self, vectors: np.ndarray, out: np.ndarray) -> None:
        """Write :func:`quantize_int8` of ``vectors`` into ``out`` (int8, C-contiguous)."""
        quantize_int8(vectors, self.scale, out=out)

    def prepare(self, queries: np.ndarray) -> Any:
        """Quantised queries (NumKong: packed when more than one)."""
        q = self.encode(queries)
        if self._nk is None:
            return q.astype(np.float32)
        return q if len(q) == 1 else self._nk.dots_pack(q)

    def scores(self, rows: np.ndarray, prepared: Any) -> np.ndarray:
        """Exact integer dot products ``(b, q)`` int32 of stored rows with the prepared queries."""
        if self._nk is None:
            return (rows.astype(np.float32) @ prepared.T).astype(np.int32)
        if isinstance(prepared, np.ndarray):
            return np.asarray(self._nk.cdist(rows, prepared, metric="dot")).astype(np.int32)
        return np.asarray(self._nk.dots_packed(rows, prepared))

    def public(self, raw: np.ndarray) -> np.ndarray:
        """``float32(dot) / float32(scale²)``, clamped to ``[-1, 1]``."""
        scores = raw.astype(np.float32) / np.float32(self.scale * self.scale)
        return np.clip(scores, np.float32(-1.0), np.float32(1.0))
