"""A bounded pool of inference workers shared by all requests.

Model calls (decoding, detection, embedding, gallery writes) run on ``workers`` threads that share
one set of ONNX Runtime sessions. At most ``workers + queue`` calls may be in flight or waiting;
one more is answered at once with 503 ``overloaded`` and ``Retry-After``, so a saturated service
sheds load instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from facelab.serve.errors import ApiError

__all__ = ["InferencePool"]

T = TypeVar("T")


class InferencePool:
    """Run blocking calls on a fixed number of threads, refusing work beyond a bound.

    Args:
        workers: threads.
        queue: calls allowed to wait for a thread.
        retry_after_s: the ``Retry-After`` of the 503 answer.
    """

    def __init__(self, workers: int, queue: int, retry_after_s: int = 1) -> None:
        self.workers = workers
        self.limit = workers + queue
        self.retry_after_s = retry_after_s
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facelab-infer")
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def depth(self) -> int:
        """Calls in flight or waiting."""
        return self._pending

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker; 503 when the pool is full."""
        with self._lock:
            if self._pending >= self.limit:
                raise ApiError(
                    503,
                    "overloaded",
                    "the service is busy; retry shortly",
                    {"in_flight": self._pending, "limit": self.limit},
                    {"Retry-After": str(self.retry_after_s)},
                )
            self._pending += 1
        try:
            future = self._executor.submit(fn, *args, **kwargs)
            return await asyncio.wrap_future(future)
        finally:
            with self._lock:
                self._pending -= 1

    def shutdown(self) -> None:
        """Stop the threads (after running calls finish)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
