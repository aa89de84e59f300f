"""Webcams and network streams (RTSP, HTTP, ...) with a newest-frame policy: no backlog, ever.

A reader thread decodes the source as fast as it delivers and keeps only the newest frame; the
consumer takes the newest frame when it is ready for one. Frames that arrived while the consumer
was busy are dropped and counted (:attr:`LiveStats.skipped`), so a slow analyser never falls
behind a live camera — the policy of InsightFace Server's RTSP monitors (OpenCV FFmpeg capture
with open/read timeouts, newest frame only, skipped-frame counting). Times are seconds since the
source was opened (wall clock), since network streams have no common clock with the viewer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from facelab.errors import VideoError
from facelab.video.io import Frame

__all__ = ["LiveSource", "LiveStats", "is_live_source", "LIVE_SCHEMES"]

_logger = logging.getLogger(__name__)

#: URL schemes opened as live streams (an HTTP URL is taken to be a camera's MJPEG/HLS stream).
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "udp://", "srt://", "tcp://", "http://", "https://")

#: Prefix of a camera device (``cam:0`` is the first webcam).
CAMERA_PREFIX = "cam:"


def is_live_source(source: str) -> bool:
    """Whether ``source`` names a camera (``cam:N``) or a stream URL with a live scheme."""
    text = str(source).lower()
    return text.startswith(CAMERA_PREFIX) or text.startswith(LIVE_SCHEMES)


@dataclass
class LiveStats:
    """Counters of a live source.

    Attributes:
        decoded: frames the reader thread decoded.
        delivered: frames handed to the consumer.
        skipped: frames dropped because a newer one arrived before the consumer asked.
    """

    decoded: int = 0
    delivered: int = 0
    skipped: int = 0


class LiveSource:
    """Read a webcam or stream keeping only the newest frame.

    Args:
        source: ``cam:N`` (webcam ``N``), or a URL (``rtsp://...``, ``http://...``), or a file path
            (useful to test the policy).
        open_timeout: seconds to wait for the stream to open.
        read_timeout: seconds without a frame after which :meth:`read` gives up.

    Raises:
        VideoError: the source cannot be opened.

    Example:
        >>> with LiveSource("rtsp://camera/stream") as cam:   # doctest: +SKIP
        ...     for frame in cam:
        ...         handle(frame.image, frame.time)
    """

    def __init__(self, source: str, *, open_timeout: float = 5.0, read_timeout: float = 5.0) -> None:
        import cv2

        self.source = str(source)
        self.read_timeout = float(read_timeout)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(read_timeout * 1000),
        ]
        if self.source.lower().startswith(CAMERA_PREFIX):
            try:
                device = int(self.source[len(CAMERA_PREFIX) :])
            except ValueError:
                raise VideoError(f"{self.source}: a camera is named cam:N with N a number") from None
            self.capture = cv2.VideoCapture(device)
        else:
            self.capture = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, params)
        if not self.capture.isOpened():
            raise VideoError(f"{self.redacted}: cannot open the live source")
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
        self.stats = LiveStats()
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = None
        self._latest_seq = 0
        self._taken_seq = 0
        self._latest_time = 0.0
        self._ended = False
        self._error: str | None = None
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._reader, name="facelab-live-reader", daemon=True)
        self._thread.start()

    @property
    def redacted(self) -> str:
        """The source without credentials (``rtsp://user:pass@host`` → ``rtsp://host``)."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.source)
        if parts.scheme and parts.hostname:
            port = f":{parts.port}" if parts.port else ""
            return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
        return self.source

    def _reader(self) -> None:
        try:
            while not self._stop.is_set():
                ok, image = self.capture.read()
                if not ok or image is None:
                    break
                with self._cond:
                    if self._latest_seq > self._taken_seq:
                        self.stats.skipped += 1  # the previous newest frame was never taken
                    self._latest = image
                    self._latest_seq += 1
                    self._latest_time = time.monotonic() - self._start
                    self.stats.decoded += 1
                    self._cond.notify_all()
        except Exception as exc:  # noqa: BLE001 - reported to the consumer
            self._error = str(exc)
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def read(self) -> Frame | None:
        """The newest frame not yet returned; waits for one. ``None`` at the end of the stream.

        The frame's ``index`` is its number in the source, so skipped frames show as gaps.

        Raises:
            VideoError: no frame arrived within ``read_timeout`` seconds, or the reader failed.
        """
        deadline = time.monotonic() + self.read_timeout
        with self._cond:
            while self._latest_seq == self._taken_seq:
                if self._ended:
                    if self._error:
                        raise VideoError(f"{self.redacted}: {self._error}")
                    if self.stats.decoded == 0:
                        raise VideoError(f"{self.redacted}: the stream ended before its first frame")
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VideoError(f"{self.redacted}: no frame for {self.read_timeout:g} s")
                self._cond.wait(left)
            self._taken_seq = self._latest_seq
            self.stats.delivered += 1
            return Frame(self._latest_seq - 1, self._latest_time, None, self._latest)

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        """Stop the reader thread and release the source."""
        self._stop.set()
        self._thread.join(timeout=self.read_timeout + 1.0)
        with contextlib.suppress(Exception):
            self.capture.release()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
