import io

import cv2
import numpy as np
import pytest
from PIL import Image

from facelab import ImageError
from facelab.io import load_image
from shared_data import shared_file


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient_rgb(w=40, h=30) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 6 % 256, y * 8 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


def test_path_matches_opencv_decoder():
    path = shared_file("data/images/t1.jpg")
    ours = load_image(path)
    ref = cv2.imread(str(path))
    assert ours.shape == ref.shape == (886, 1280, 3)
    assert ours.dtype == np.uint8
    # Two JPEG decoders may differ by rounding only.
    assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 1.0


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP"])
def test_lossless_formats_from_bytes_are_bgr(fmt):
    rgb = _gradient_rgb()
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = load_image(_encode(Image.fromarray(rgb), fmt, **kw))
    np.testing.assert_array_equal(out, rgb[:, :, ::-1])


def test_pil_and_numpy_sources():
    rgb = _gradient_rgb()
    np.testing.assert_array_equal(load_image(Image.fromarray(rgb)), rgb[:, :, ::-1])
    np.testing.assert_array_equal(load_image(rgb, color_order="RGB"), rgb[:, :, ::-1])
    bgr = rgb[:, :, ::-1].copy()
    assert load_image(bgr) is not None and np.array_equal(load_image(bgr), bgr)


def test_exif_orientation_applied():
    rgb = _gradient_rgb(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = _encode(Image.fromarray(rgb), "JPEG", exif=exif, quality=100)
    out = load_image(data)
    assert out.shape == (40, 30, 3)
    expected = np.rot90(rgb, k=-1)[:, :, ::-1]
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 3


def test_grayscale_rgba_16bit_conversions():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = load_image(_encode(Image.fromarray(gray), "PNG"))
    assert out.shape == (3, 4, 3) and np.array_equal(out[:, :, 0], gray) and np.array_equal(out[:, :, 2], gray)

    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    out = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out.shape == (3, 4, 3) and (out[..., 2] == 200).all() and (out[..., 0] == 0).all()

    g16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    ok, png16 = cv2.imencode(".png", g16)
    assert ok
    out = load_image(png16.tobytes())
    assert out.shape == (3, 4, 3)
    np.testing.assert_allclose(out[..., 1].astype(int), (g16.astype(int) * 255 // 65535), atol=1)


def test_decompression_bomb_guard():
    data = _encode(Image.new("L", (3000, 2000)), "PNG")
    with pytest.raises(ImageError, match="over the limit"):
        load_image(data, max_pixels=5_000_000)
    assert load_image(data, max_pixels=7_000_000).shape == (2000, 3000, 3)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(empty)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    with pytest.raises(ImageError, match="not an image"):
        load_image(text)
    good = _encode(Image.fromarray(_gradient_rgb(200, 200)), "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageError, match="truncated|corrupt|cannot read"):
        load_image(truncated)
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="unsupported"):
        load_image(12345)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match="empty"):
        load_image(np.zeros((0, 4, 3), np.uint8))
