"""Prometheus metrics of one service process: requests, latency per route and per stage, queue depth.

Each app has its own registry (no global state, so several apps can live in one test process).
``/metrics`` serves them in Prometheus's text format.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServiceMetrics"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    """The counters, histograms and gauges of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "facelab_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "facelab_request_seconds", "request latency", ["route"], buckets=_BUCKETS, registry=self.registry
        )
        self.stage = Histogram(
            "facelab_stage_seconds", "time per processing stage", ["stage"], buckets=_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge("facelab_queue_depth", "inference calls in flight or waiting", registry=self.registry)
        self.faces = Counter("facelab_faces", "faces returned or stored", ["route"], registry=self.registry)

    @contextmanager
    def time_stage(self, stage: str) -> Iterator[None]:
        """Record the time of the ``with`` block under ``stage``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage.labels(stage).observe(time.perf_counter() - start)

    def render(self) -> bytes:
        """The text exposition."""
        return generate_latest(self.registry)
