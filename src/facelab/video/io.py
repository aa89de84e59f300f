"""Video files in and out: PyAV with real timestamps and audio copied unchanged, OpenCV as a frames-only fallback.

Reading (:func:`open_video`): frames come as ``(H, W, 3)`` ``uint8`` **BGR** arrays, turned upright
when the file carries a rotation (phone videos), each with its index, its ``pts`` in the stream's
time base and its time in seconds. With PyAV (extra ``video``) the times are the stream's own,
so variable frame rate files keep every frame's timestamp; OpenCV's ``VideoCapture`` gives
``CAP_PROP_POS_MSEC`` and no audio.

Writing (:class:`VideoWriter`, PyAV only): H.264 (``libx264``, ``yuv420p``, CRF 23, as
PrivateFrame) in the source's time base, each frame at the ``pts`` it had in the source, and the
source's audio streams copied packet by packet (no re-encoding: their bytes and timestamps are
those of the input). The file is written under a temporary name beside the target and renamed at
the end, so an error never leaves a half-written file at the output path (:func:`atomic_output`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError, VideoError

__all__ = [
    "VideoInfo",
    "Frame",
    "VideoReader",
    "PyAVReader",
    "OpenCVReader",
    "VideoWriter",
    "open_video",
    "atomic_output",
    "require_av",
    "VIDEO_SUFFIXES",
    "BACKENDS",
]

_logger = logging.getLogger(__name__)

#: File endings treated as videos when a folder or an output name is examined.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".3gp", ".flv"})

#: Reader backends accepted by :func:`open_video`.
BACKENDS = ("auto", "pyav", "opencv")


def require_av() -> Any:
    """Import PyAV, or raise a :class:`~facelab.errors.ConfigError` naming the extra to install."""
    try:
        import av
    except ImportError as exc:
        raise ConfigError("video support needs PyAV: pip install 'facelab[video]'") from exc
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds.

    Attributes:
        path: the file.
        width: frame width in pixels, upright (after rotation).
        height: frame height, upright.
        fps: average frame rate (frames per second).
        frames: number of video frames when the container says, else ``None``.
        duration: seconds, when known.
        codec: video codec name.
        rotation: degrees the frames are turned (counter-clockwise) to be upright.
        audio: codec names of the audio streams.
        backend: ``"pyav"`` or ``"opencv"``.
        time_base: seconds per ``pts`` unit of the video stream (``None`` for OpenCV).
    """

    path: str
    width: int
    height: int
    fps: float
    frames: int | None
    duration: float | None
    codec: str
    rotation: int = 0
    audio: tuple[str, ...] = ()
    backend: str = "pyav"
    time_base: Fraction | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "fps": round(self.fps, 6),
            "frames": self.frames,
            "duration": None if self.duration is None else round(self.duration, 6),
            "codec": self.codec,
            "rotation": self.rotation,
            "audio": list(self.audio),
            "backend": self.backend,
        }


@dataclass
class Frame:
    """One decoded video frame.

    Attributes:
        index: 0-based position in the stream.
        time: timestamp in seconds.
        pts: timestamp in the stream's time base (``None`` when the container has none).
        image: ``(H, W, 3)`` ``uint8`` BGR upright, or ``None`` when the caller did not ask for pixels.
    """

    index: int
    time: float
    pts: int | None
    image: np.ndarray | None = None
    _native: Any = field(default=None, repr=False)


class VideoReader:
    """Common interface of the readers: ``info``, ``frames()``, context manager."""

    info: VideoInfo

    def frames(
        self, want_image: Callable[[int], bool] | None = None, audio_sink: Callable[[Any], None] | None = None
    ) -> Iterator[Frame]:
        """Yield every frame in order.

        Args:
            want_image: ``want_image(index)`` says whether to convert a frame to pixels (skipping the
                colour conversion of frames nobody looks at); ``None`` = every frame.
            audio_sink: receives the audio packets met while demuxing (PyAV only).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


class PyAVReader(VideoReader):
    """Decode with PyAV (threaded decoding, real timestamps, audio packets available for remuxing).

    Raises:
        VideoError: the file is missing, not a video, has no video stream or is corrupt.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        av = require_av()
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"{self.path}: no such file")
        try:
            self.container = av.open(str(self.path))
        except av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: not a readable video ({exc.strerror or exc})") from None
        if not self.container.streams.video:
            kinds = sorted({s.type for s in self.container.streams}) or ["nothing"]
            self.container.close()
            raise VideoError(f"{self.path}: no video stream (the file holds {', '.join(kinds)})")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.audio_streams = list(self.container.streams.audio)
        cc = self.stream.codec_context
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        fps = float(rate) if rate else 0.0
        tb = self.stream.time_base
        duration = None
        if self.stream.duration and tb:
            duration = float(self.stream.duration * tb)
        elif self.container.duration:
            duration = self.container.duration / 1_000_000
        if not cc.width or not cc.height:
            self.container.close()
            raise VideoError(f"{self.path}: the video stream has no frame size (corrupt header?)")
        self.rotation = self._probe_rotation()
        w, h = (cc.height, cc.width) if self.rotation % 180 else (cc.width, cc.height)
        self.info = VideoInfo(
            path=str(self.path),
            width=int(w),
            height=int(h),
            fps=fps if fps > 0 else 30.0,
            frames=int(self.stream.frames) or None,
            duration=duration,
            codec=cc.name,
            rotation=self.rotation,
            audio=tuple(a.codec_context.name for a in self.audio_streams),
            backend="pyav",
            time_base=Fraction(tb) if tb else None,
        )

    def _probe_rotation(self) -> int:
        # The display matrix is on the frames (PyAV's VideoFrame.rotation, FFmpeg's convention:
        # degrees counter-clockwise); read the first frame, then rewind.
        rotation = 0
        try:
            for frame in self.container.decode(self.stream):
                rotation = int(round(getattr(frame, "rotation", 0) or 0))
                break
        except Exception:  # noqa: BLE001 - a damaged first frame is reported when decoding for real
            rotation = 0
        # a fresh container is the only rewind that works for every format
        av = require_av()
        self.container.close()
        self.container = av.open(str(self.path))
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.audio_streams = list(self.container.streams.audio)
        return rotation % 360

    def frames(
        self, want_image: Callable[[int], bool] | None = None, audio_sink: Callable[[Any], None] | None = None
    ) -> Iterator[Frame]:
        """Decode every frame (see :meth:`VideoReader.frames`).

        Raises:
            VideoError: the stream is corrupt, or a file truncated before its first frame.
        """
        av = require_av()
        streams = [self.stream] + (self.audio_streams if audio_sink is not None else [])
        index = 0
        tb = self.stream.time_base
        fps = self.info.fps
        try:
            for packet in self.container.demux(*streams):
                if packet.stream.type == "audio":
                    if packet.size:  # size-0 packets only flush the demuxer (PyAV's remux example)
                        audio_sink(packet)
                    continue
                for frame in packet.decode():
                    yield self._frame(frame, index, tb, fps, want_image)
                    index += 1
        except av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: cannot decode frame {index} ({exc.strerror or exc})") from None
        if index == 0:
            raise VideoError(f"{self.path}: no video frame could be decoded (truncated or corrupt file)")

    def _frame(self, frame: Any, index: int, tb: Any, fps: float, want_image: Callable[[int], bool] | None) -> Frame:
        pts = frame.pts
        time = float(pts * tb) if pts is not None and tb else index / fps
        image = None
        if want_image is None or want_image(index):
            image = _upright(frame.to_ndarray(format="bgr24"), self.rotation)
        return Frame(index, time, pts, image, frame)

    def close(self) -> None:
        """Close the container."""
        with contextlib.suppress(Exception):
            self.container.close()


class OpenCVReader(VideoReader):
    """Decode with OpenCV's ``VideoCapture``: frames only, times from ``CAP_PROP_POS_MSEC``, no audio.

    Raises:
        VideoError: the file cannot be opened.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import cv2

        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"{self.path}: no such file")
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise VideoError(f"{self.path}: OpenCV cannot open this video")
        fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        w = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w <= 0 or h <= 0:
            self.capture.release()
            raise VideoError(f"{self.path}: no video stream OpenCV can read")
        fourcc = int(self.capture.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") or "unknown"
        fps = fps if fps > 0 else 30.0
        self.info = VideoInfo(
            str(self.path), w, h, fps, count or None, count / fps if count else None, codec, backend="opencv"
        )

    def frames(
        self, want_image: Callable[[int], bool] | None = None, audio_sink: Callable[[Any], None] | None = None
    ) -> Iterator[Frame]:
        """Read every frame (``audio_sink`` is ignored: OpenCV reads no audio)."""
        import cv2

        index = 0
        while True:
            ok, image = self.capture.read()
            if not ok or image is None:
                break
            msec = self.capture.get(cv2.CAP_PROP_POS_MSEC)
            time = msec / 1000.0 if msec and msec > 0 or index == 0 else index / self.info.fps
            yield Frame(index, float(time), None, image)
            index += 1
        if index == 0:
            raise VideoError(f"{self.path}: no video frame could be decoded (truncated or corrupt file)")

    def close(self) -> None:
        """Release the capture."""
        self.capture.release()


def open_video(path: str | os.PathLike, backend: str = "auto") -> VideoReader:
    """Open a video file for reading.

    Args:
        path: the file.
        backend: ``"pyav"``, ``"opencv"``, or ``"auto"`` (PyAV when installed, else OpenCV).

    Raises:
        VideoError: the file cannot be read as a video.
        ConfigError: unknown backend, or ``"pyav"`` without PyAV installed.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown video backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "auto":
        try:
            require_av()
            backend = "pyav"
        except ConfigError:
            _logger.warning("PyAV is not installed: reading %s with OpenCV (no audio, approximate times)", path)
            backend = "opencv"
    return PyAVReader(path) if backend == "pyav" else OpenCVReader(path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same ending); rename it to ``path`` on success, delete it on error.

    Raises:
        ConfigError: the output folder does not exist.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise ConfigError(f"output folder {target.parent} does not exist")
    temp = target.with_name(f".{target.stem}.partial-{uuid.uuid4().hex[:8]}{target.suffix}")
    try:
        yield temp
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


class VideoWriter:
    """Encode BGR frames to H.264 at their source timestamps, copying the source's audio packets.

    Args:
        path: the output file (its ending chooses the container: ``.mp4``, ``.mkv``, ``.mov``...).
        source: the :class:`PyAVReader` the frames come from (frame size, time base, rate, audio).
        audio: copy the source's audio streams.
        crf: x264 constant rate factor (lower = better quality; 23 is x264's and PrivateFrame's default).
        preset: x264 speed preset (``ultrafast`` ... ``veryslow``).
        codec: encoder name.

    Raises:
        VideoError: the container cannot be created, or cannot hold the audio codec.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        source: PyAVReader,
        *,
        audio: bool = True,
        crf: int = 23,
        preset: str = "medium",
        codec: str = "libx264",
    ) -> None:
        av = require_av()
        self.path = Path(path)
        info = source.info
        try:
            self.container = av.open(str(self.path), "w")
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoError(f"{self.path}: cannot create this video file ({exc})") from None
        try:
            rate = source.stream.average_rate or Fraction(info.fps).limit_denominator(1001)
            self.stream = self.container.add_stream(codec, rate=rate)
            self.width, self.height = info.width + info.width % 2, info.height + info.height % 2
            self.stream.width, self.stream.height = self.width, self.height
            self.stream.pix_fmt = "yuv420p"
            self.time_base = source.stream.time_base or Fraction(1, 90000)
            self.stream.time_base = self.time_base
            self.stream.codec_context.time_base = self.time_base
            if codec == "libx264":
                self.stream.codec_context.options = {"crf": str(int(crf)), "preset": preset}
            self.audio_map: dict[int, Any] = {}
            if audio:
                for a in source.audio_streams:
                    self.audio_map[a.index] = self.container.add_stream_from_template(a)
        except (av.error.FFmpegError, ValueError, TypeError) as exc:
            self.container.close()
            raise VideoError(f"{self.path}: cannot set up the output streams ({exc})") from None
        self.fps = float(rate)
        self._last_pts: int | None = None
        self._av = av

    def write(self, image: np.ndarray, pts: int | None, index: int) -> None:
        """Encode one ``(H, W, 3)`` ``uint8`` BGR frame at ``pts`` (source time base; ``None`` = from ``index``)."""
        if image.shape[0] != self.height or image.shape[1] != self.width:
            pad_y, pad_x = self.height - image.shape[0], self.width - image.shape[1]
            if pad_y < 0 or pad_x < 0 or pad_y > 1 or pad_x > 1:
                raise VideoError(
                    f"frame {index} is {image.shape[1]}x{image.shape[0]}, expected {self.width}x{self.height}"
                )
            image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
        self._encode(self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24"), pts, index)

    def write_native(self, frame: Any, pts: int | None, index: int) -> None:
        """Encode a decoded PyAV frame unchanged (no colour conversion); same timestamp rules as :meth:`write`."""
        if frame.width != self.width or frame.height != self.height:
            self.write(frame.to_ndarray(format="bgr24"), pts, index)
            return
        frame.pict_type = 0  # let the encoder choose frame types (a decoded I-frame would force one)
        self._encode(frame, pts, index)

    def _encode(self, frame: Any, pts: int | None, index: int) -> None:
        if pts is None:
            pts = int(round(index / self.fps / self.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # the encoder needs strictly increasing timestamps
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = self.time_base
        try:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        except self._av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: encoding frame {index} failed ({exc})") from None

    def mux_audio(self, packet: Any) -> None:
        """Copy one source audio packet into the output (bytes and timestamps unchanged)."""
        out = self.audio_map.get(packet.stream.index)
        if out is None:
            return
        packet.stream = out
        try:
            self.container.mux(packet)
        except self._av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: cannot copy the audio stream into this container ({exc})") from None

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        except self._av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: finishing the video failed ({exc})") from None
        finally:
            self.container.close()

    def abort(self) -> None:
        """Close without flushing (the caller deletes the file)."""
        with contextlib.suppress(Exception):
            self.container.close()
