import numpy as np
import pytest

from facelab.ops.normalize import INSIGHTFACE_ARCFACE, INSIGHTFACE_DETECTOR, Normalization, to_tensor


def _by_hand(bgr: np.ndarray, norm: Normalization) -> np.ndarray:
    out = np.empty((bgr.shape[0], 3, *bgr.shape[1:3]), np.float64)
    order = [2, 1, 0] if norm.color_order == "RGB" else [0, 1, 2]
    for c, src in enumerate(order):
        out[:, c] = (bgr[..., src].astype(np.float64) - norm.mean[c]) / norm.std[c]
    return out


@pytest.mark.parametrize(
    "norm",
    [
        INSIGHTFACE_ARCFACE,
        INSIGHTFACE_DETECTOR,
        Normalization("BGR", (10.0, 20.0, 30.0), (2.0, 2.0, 2.0)),
        Normalization("RGB", (122.782, 117.001, 104.298), (256.0,)),
        Normalization("RGB", (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
    ],
)
def test_to_tensor_matches_a_hand_computation(norm):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    out = to_tensor(images, norm)
    assert out.shape == (3, 3, 17, 23) and out.dtype == np.float32
    np.testing.assert_allclose(out, _by_hand(images, norm), rtol=0, atol=1e-5)
    # one image gives a batch of one; float16 on request
    single = to_tensor(images[1], norm, dtype=np.float16)
    assert single.shape == (1, 3, 17, 23) and single.dtype == np.float16
