"""Margin losses against hand-computed values (numpy, float64) — loss and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest

import shared_data

torch = shared_data.require_module("torch")

from facelab.errors import ConfigError  # noqa: E402
from facelab.train.margins import CombinedMarginLoss, margin_from_list, subcenter_max  # noqa: E402

COS = np.array([[0.6, -0.2, 0.1, 0.3], [0.05, 0.7, -0.5, 0.2], [-0.9, 0.1, 0.4, 0.0]])
LABELS = np.array([0, 1, 0])  # row 2's target cosine -0.9 lies beyond the ArcFace threshold


def _expected(cos, labels, s, m1, m2, m3, straight=False, easy=False):
    """Loss and dLoss/dcos by hand: margin on the target, softmax CE, mean over rows."""
    z = s * cos.copy()
    dtarget = np.ones(len(labels))
    for i, y in enumerate(labels):
        c = cos[i, y]
        theta = math.acos(c)
        if m1 == 1.0 and m2 == 0.0:
            t, d = c - m3, 1.0
        elif easy and c <= 0:
            t, d = c, 1.0
        elif not easy and m1 * theta + m2 > math.pi:
            t, d = c - m3 - m2 * math.sin(math.pi - m2), 1.0
        else:
            t = math.cos(m1 * theta + m2) - m3
            d = math.sin(m1 * theta + m2) * m1 / math.sqrt(1 - c * c)
        z[i, y] = s * t
        dtarget[i] = 1.0 if straight else d
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(len(labels)), labels]))
    g = p.copy()
    g[np.arange(len(labels)), labels] -= 1
    g *= s / len(labels)
    g[np.arange(len(labels)), labels] *= dtarget
    return loss, g


def _ours(loss_fn, cos, labels):
    x = torch.tensor(cos, dtype=torch.float64, requires_grad=True)
    logits = loss_fn(x, torch.tensor(labels))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    loss.backward()
    return loss.item(), x.grad.numpy()


@pytest.mark.parametrize(
    ("name", "m", "straight", "easy"),
    [
        ("arcface", (1.0, 0.5, 0.0), False, False),
        ("arcface_straight_through", (1.0, 0.5, 0.0), True, False),
        ("arcface_easy", (1.0, 0.5, 0.0), False, True),
        ("cosface", (1.0, 0.0, 0.4), False, False),
        ("combined", (1.0, 0.3, 0.2), False, False),
        ("sphereface_like", (1.35, 0.0, 0.0), False, False),
    ],
)
def test_margin_loss_and_gradient_match_hand_computation(name, m, straight, easy):
    s = 64.0
    fn = CombinedMarginLoss(s, *m, straight_through=straight, easy_margin=easy)
    loss, grad = _ours(fn, COS, LABELS)
    exp_loss, exp_grad = _expected(COS, LABELS, s, *m, straight=straight, easy=easy)
    assert loss == pytest.approx(exp_loss, rel=1e-12, abs=1e-10)
    np.testing.assert_allclose(grad, exp_grad, rtol=1e-9, atol=1e-12)


def test_arcface_known_target_value():
    # cos(acos(0.6) + 0.5) = 0.6*cos(.5) - 0.8*sin(.5) = 0.143007...
    fn = CombinedMarginLoss(1.0, 1.0, 0.5, 0.0)
    out = fn(torch.tensor([[0.6, 0.2]], dtype=torch.float64), torch.tensor([0]))
    assert out[0, 0].item() == pytest.approx(0.6 * math.cos(0.5) - 0.8 * math.sin(0.5), abs=1e-12)
    assert out[0, 1].item() == pytest.approx(0.2)


def test_rows_with_minus_one_label_get_no_margin():
    fn = CombinedMarginLoss(2.0, 1.0, 0.0, 0.4)
    cos = torch.tensor([[0.5, 0.1], [0.3, 0.2]], dtype=torch.float64)
    out = fn(cos, torch.tensor([-1, 1]))
    np.testing.assert_allclose(out.numpy(), [[1.0, 0.2], [0.6, (0.2 - 0.4) * 2]])


def test_interclass_filtering_zeroes_similar_negatives_only():
    fn = CombinedMarginLoss(1.0, 1.0, 0.0, 0.4, interclass_filtering_threshold=0.5)
    cos = torch.tensor([[0.9, 0.6, 0.2], [0.7, 0.55, 0.51]], dtype=torch.float64, requires_grad=True)
    out = fn(cos, torch.tensor([0, -1]))
    # row 0: target 0.9 kept (-0.4), 0.6 > 0.5 dirty -> 0; row 1 (no local target): all > 0.5 -> 0
    np.testing.assert_allclose(out.detach().numpy(), [[0.5, 0.0, 0.2], [0.0, 0.0, 0.0]], atol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(cos.grad.numpy(), [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])


def test_margin_from_list_and_bad_values():
    fn = margin_from_list([1.0, 0.0, 0.4], s=30.0)
    assert (fn.s, fn.m1, fn.m2, fn.m3) == (30.0, 1.0, 0.0, 0.4)
    with pytest.raises(ConfigError, match="3 values"):
        margin_from_list([1.0, 0.5])
    with pytest.raises(ConfigError, match="m2"):
        CombinedMarginLoss(64.0, 1.0, 4.0, 0.0)


def test_subcenter_max_pools_over_k():
    cos = torch.tensor([[0.1, 0.5, -0.2, 0.3, 0.0, 0.9]])
    np.testing.assert_allclose(subcenter_max(cos, 3).numpy(), [[0.5, 0.9]])
    np.testing.assert_allclose(subcenter_max(cos, 2).numpy(), [[0.5, 0.3, 0.9]])
    with pytest.raises(ConfigError):
        subcenter_max(cos, 4)
