"""Face quality (InsightFace Server's formula) and the enrollment policy."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from facelab.alignment.templates import arcface_points
from facelab.attributes.quality import QualityPolicy, face_quality, pose_from_kps
from facelab.errors import ConfigError
from facelab.io import load_image
from shared_data import shared_file


def _rotate(points: np.ndarray, degrees: float, center: np.ndarray) -> np.ndarray:
    t = math.radians(degrees)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return (points - center) @ rot.T + center


def test_pose_frontal_template_is_near_zero():
    yaw, pitch, roll = pose_from_kps(arcface_points(112))
    assert abs(yaw) < 1 and abs(roll) < 1
    # the template's nose sits at 0.495 of the eye-to-mouth height, 0.045 * 90 = 4 degrees
    assert pitch == pytest.approx((20.1403 / 40.6865 - 0.45) * 90, abs=0.05)


def test_in_plane_rotation_changes_only_roll():
    pts = arcface_points(112).astype(np.float64)
    turned = _rotate(pts, 30.0, pts.mean(axis=0))
    yaw0, pitch0, _ = pose_from_kps(pts)
    yaw, pitch, roll = pose_from_kps(turned)
    assert roll == pytest.approx(30.0 + pose_from_kps(pts)[2], abs=1e-6)
    assert yaw == pytest.approx(yaw0, abs=1e-6) and pitch == pytest.approx(pitch0, abs=1e-6)


def test_nose_shift_gives_yaw_by_the_servers_formula():
    pts = arcface_points(112).astype(np.float64)
    eye_dist = pts[1, 0] - pts[0, 0]
    pts[2, 0] = (pts[0, 0] + pts[1, 0]) / 2 + 0.25 * eye_dist  # nose a quarter eye-distance right
    yaw, _, _ = pose_from_kps(pts)
    assert yaw == pytest.approx(22.5, abs=0.4)  # 0.25 * 90, up to the template's tiny eye tilt


def test_pose_rejects_bad_shape():
    with pytest.raises(ConfigError, match="5, 2"):
        pose_from_kps(np.zeros((4, 2)))


def test_quality_terms_on_constructed_inputs():
    img = np.zeros((300, 300, 3), np.uint8)
    img[:, :] = 255  # white: brightness 1 -> brightness score 0
    q = face_quality(img, np.array([10, 10, 50, 90]), None, 1.7)
    assert q.det == 1.0 and q.face_size == 40 and q.size == pytest.approx(0.5)
    assert q.brightness == pytest.approx(1.0) and q.sharpness == 0.0 and q.pose == 0.5
    assert q.score == pytest.approx(0.35 * 1.0 + 0.15 * 0.5 + 0.10 * 0.5)
    checker = (np.indices((300, 300)).sum(axis=0) % 2 * 255).astype(np.uint8)
    sharp = face_quality(np.dstack([checker] * 3), np.array([0, 0, 112, 112]), None, 0.0)
    assert sharp.sharpness > 0.999


def test_quality_orders_sharp_blurred_and_tiny_crops_of_a_real_photo():
    img = load_image(shared_file("data/verification/deepface/img1.jpg"))
    h, w = img.shape[:2]
    box = np.array([w * 0.3, h * 0.2, w * 0.7, h * 0.7], np.float32)
    sharp = face_quality(img, box, None, 0.9)
    blurred = face_quality(cv2.GaussianBlur(img, (0, 0), 6), box, None, 0.9)
    small = cv2.resize(img, (w // 20, h // 20), interpolation=cv2.INTER_AREA)
    tiny = face_quality(small, box / 20, None, 0.9)
    assert sharp.sharpness > blurred.sharpness + 0.2
    assert sharp.score > blurred.score and sharp.score > tiny.score
    assert tiny.size < 0.5 <= sharp.size


def test_policy_reasons_and_off():
    img = np.full((200, 200, 3), 128, np.uint8)
    pts = arcface_points(112).astype(np.float64) + 40
    pts[2, 0] += 30  # nose far to the side: |yaw| > 45
    q = face_quality(img, np.array([40, 40, 152, 152]), pts, 0.95)
    assert q.yaw == pytest.approx(30 / (pts[1, 0] - pts[0, 0]) * 90, abs=1.0)
    assert QualityPolicy().reasons(q, 0.95) == ["extreme_pose"]
    assert QualityPolicy(min_quality=0.9).reasons(q, 0.95) == ["extreme_pose", "low_quality"]
    assert QualityPolicy.off().reasons(q, 0.0) == []
    with pytest.raises(ConfigError, match="min_face"):
        QualityPolicy(min_face=-1)
