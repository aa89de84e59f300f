"""Draw analysed faces on an image (OpenCV only; no matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facelab.structures import Face

__all__ = ["draw"]

_BOX = (0, 0, 255)
_KPS = [(0, 255, 0), (0, 0, 255), (0, 0, 255), (0, 255, 0), (0, 0, 255)]
_LANDMARK = (255, 200, 0)


def draw(image: np.ndarray, faces: Sequence[Face], *, thickness: int = 2, labels: bool = True) -> np.ndarray:
    """Return a copy of ``image`` with boxes, keypoints, landmarks and labels drawn.

    Args:
        image: ``(H, W, 3)`` ``uint8`` BGR.
        faces: results of :meth:`facelab.FaceAnalyzer.analyze`.
        thickness: box line width in pixels.
        labels: write the score and, when known, ``sex,age`` above each box.

    Returns:
        ``(H, W, 3)`` ``uint8`` BGR copy with the drawing.
    """
    import cv2

    canvas = np.ascontiguousarray(image).copy()
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), _BOX, thickness)
        for points in (face.landmark_2d_106, face.landmark_3d_68):
            if points is not None:
                for x, y in np.asarray(points)[:, :2]:
                    cv2.circle(canvas, (int(round(x)), int(round(y))), 1, _LANDMARK, -1)
        if face.kps is not None:
            for (x, y), colour in zip(np.asarray(face.kps), _KPS):
                cv2.circle(canvas, (int(round(x)), int(round(y))), max(1, thickness), colour, -1)
        if labels:
            text = f"{face.score:.2f}"
            if face.gender is not None and face.age is not None:
                text += f" {face.sex},{face.age}"
            cv2.putText(canvas, text, (x1, max(0, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1, cv2.LINE_AA)
    return canvas
