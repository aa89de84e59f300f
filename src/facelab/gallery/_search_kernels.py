"""Score kernels of the exact search, one per precision: how rows are stored and how they are scored.

A kernel turns L2-normalised ``float32`` vectors into its stored rows (:meth:`encode`), prepares
queries (:meth:`prepare`), scores a block of stored rows against them (:meth:`scores`, shape
``(rows, queries)``, higher is better) and turns raw scores into the public ``float32`` scores
(:meth:`public`). Kernels are registered by precision name in :data:`KERNELS`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facelab.registry import Registry

__all__ = ["KERNELS", "Fp32Kernel"]

#: Score kernels by precision name ("fp32", "fp16", "int8"); each entry is a class taking ``dim``.
KERNELS: Registry = Registry("search precision")


@KERNELS.register("fp32")
class Fp32Kernel:
    """FP32 rows scored with NumPy's BLAS (``sgemv`` for one query, ``sgemm`` for a batch).

    Scores are the ``float32`` dot products; 4 bytes per dimension.
    """

    storage_dtype = np.dtype(np.float32)
    score_dtype = np.dtype(np.float32)

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Stored rows of ``vectors`` ``(n, dim)`` float32: the vectors themselves."""
        return vectors

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
