"""Constant-velocity Kalman filter on face boxes, vectorised over tracks.

State per track (8 values): ``[cx, cy, a, h, vcx, vcy, va, vh]`` — box centre, aspect ratio
``a = w / h`` and height in pixels, and their velocities per frame. The box ``(cx, cy, a, h)`` is
observed directly. Noise is proportional to the box height, with the weights of ByteTrack's filter
(position 1/20, velocity 1/160 of the height; ifzhang/ByteTrack ``yolox/tracker/kalman_filter.py``,
MIT): a track starts with twice the position and ten times the velocity standard deviation, the
aspect ratio gets fixed small deviations (process 1e-2 / 1e-5, measurement 1e-1).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BoxKalman", "xyxy_to_xyah", "xyah_to_xyxy"]

#: Process/measurement noise as a fraction of the box height (ByteTrack's weights).
STD_POSITION = 1.0 / 20.0
STD_VELOCITY = 1.0 / 160.0


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` ``[x1, y1, x2, y2]`` to ``(N, 4)`` ``[cx, cy, w / h, h]`` (``float64``)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-3)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w / h, h], axis=1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """Inverse of :func:`xyxy_to_xyah`; ``(N, 4)`` ``float64`` boxes."""
    xyah = np.asarray(xyah, dtype=np.float64).reshape(-1, 4)
    h = np.maximum(xyah[:, 3], 1e-3)
    w = np.maximum(xyah[:, 2], 1e-3) * h
    return np.stack([xyah[:, 0] - w / 2, xyah[:, 1] - h / 2, xyah[:, 0] + w / 2, xyah[:, 1] + h / 2], axis=1)


class BoxKalman:
    """The filter's matrices and its three steps; states are plain arrays owned by the caller.

    Example:
        >>> kf = BoxKalman()
        >>> mean, cov = kf.initiate(xyxy_to_xyah(np.array([[0.0, 0.0, 10.0, 20.0]])))
        >>> mean, cov = kf.predict(mean, cov)
        >>> xyah_to_xyxy(mean[:, :4]).round(3).tolist()
        [[0.0, 0.0, 10.0, 20.0]]
    """

    def __init__(self) -> None:
        self.motion = np.eye(8)
        self.motion[:4, 4:] = np.eye(4)  # x += v per frame
        self.observe = np.eye(4, 8)

    @staticmethod
    def _scaled(h: np.ndarray, pos: float, vel: float, a_pos: float, a_vel: float) -> np.ndarray:
        n = len(h)
        return np.stack(
            [pos * h, pos * h, np.full(n, a_pos), pos * h, vel * h, vel * h, np.full(n, a_vel), vel * h], axis=1
        )

    def initiate(self, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New states from ``(N, 4)`` measurements: ``(N, 8)`` means and ``(N, 8, 8)`` covariances."""
        xyah = np.asarray(xyah, dtype=np.float64).reshape(-1, 4)
        mean = np.concatenate([xyah, np.zeros_like(xyah)], axis=1)
        std = self._scaled(xyah[:, 3], 2 * STD_POSITION, 10 * STD_VELOCITY, 1e-2, 1e-5)
        cov = np.einsum("ni,ij->nij", np.square(std), np.eye(8))
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance ``(N, 8)`` states by one frame."""
        if len(mean) == 0:
            return mean, cov
        std = self._scaled(mean[:, 3], STD_POSITION, STD_VELOCITY, 1e-2, 1e-5)
        q = np.einsum("ni,ij->nij", np.square(std), np.eye(8))
        mean = mean @ self.motion.T
        cov = self.motion @ cov @ self.motion.T + q
        return mean, cov

    def update(self, mean: np.ndarray, cov: np.ndarray, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct ``(N, 8)`` states with ``(N, 4)`` measurements (row ``i`` observes state ``i``)."""
        if len(mean) == 0:
            return mean, cov
        xyah = np.asarray(xyah, dtype=np.float64).reshape(-1, 4)
        h = mean[:, 3]
        r_std = np.stack([STD_POSITION * h, STD_POSITION * h, np.full(len(h), 1e-1), STD_POSITION * h], axis=1)
        r = np.einsum("ni,ij->nij", np.square(r_std), np.eye(4))
        hx = self.observe
        s = hx @ cov @ hx.T + r  # (N, 4, 4) innovation covariance
        pht = cov @ hx.T  # (N, 8, 4)
        gain = np.linalg.solve(s, np.transpose(pht, (0, 2, 1))).transpose(0, 2, 1)  # P H^T S^-1
        innovation = xyah - mean[:, :4]
        mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        cov = cov - gain @ s @ np.transpose(gain, (0, 2, 1))
        return mean, cov
