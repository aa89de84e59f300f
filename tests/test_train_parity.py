"""Parity with arcface_torch: its CombinedMarginLoss and PartialFC_V2 were run (outside this repo, on CPU,
gloo world size 1, source commit in the fixture) on the fixed inputs stored in
test_train_arcface_torch_reference.json; ours must give the same loss and gradients."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import shared_data

torch = shared_data.require_module("torch")

from facelab.train.margins import CombinedMarginLoss  # noqa: E402
from facelab.train.partial_fc import PartialFC  # noqa: E402

REF = json.loads((Path(__file__).with_name("test_train_arcface_torch_reference.json")).read_text())
MARGINS = {"arcface": (1.0, 0.5, 0.0), "cosface": (1.0, 0.0, 0.4)}


def _margin(name):
    # arcface_torch's CombinedMarginLoss: straight-through ArcFace margin, no th/mm fallback
    return CombinedMarginLoss(64.0, *MARGINS[name], straight_through=True, threshold=False)


@pytest.mark.parametrize("name", sorted(MARGINS))
def test_combined_margin_matches_arcface_torch(name):
    ref = REF[f"margin_{name}"]
    labels = torch.tensor(REF["inputs"]["labels"])
    cos = torch.tensor(REF["inputs"]["cos"], dtype=torch.float32, requires_grad=True)
    logits = _margin(name)(cos, labels)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    np.testing.assert_allclose(logits.detach().numpy(), ref["logits"], rtol=1e-5, atol=1e-4)
    assert loss.item() == pytest.approx(ref["ce_loss"], rel=1e-6)
    np.testing.assert_allclose(cos.grad.numpy(), ref["grad_cos"], atol=1e-6)


@pytest.mark.parametrize("name", sorted(MARGINS))
def test_partial_fc_matches_arcface_torch_partial_fc_v2(name):
    ref = REF[f"pfc_{name}"]
    inputs = REF["inputs"]
    weight = torch.tensor(inputs["weight"], dtype=torch.float32)
    pfc = PartialFC(_margin(name), weight.shape[1], weight.shape[0], sample_rate=1.0)
    with torch.no_grad():
        pfc.weight.copy_(weight)
    emb = torch.tensor(inputs["emb"], dtype=torch.float32, requires_grad=True)
    loss = pfc(emb, torch.tensor(inputs["labels"]))
    loss.backward()
    assert loss.item() == pytest.approx(ref["loss"], rel=1e-6)
    np.testing.assert_allclose(emb.grad.numpy(), ref["grad_emb"], atol=1e-5)
    np.testing.assert_allclose(pfc.weight.grad.numpy(), ref["grad_weight"], atol=1e-5)


@pytest.mark.parametrize("name", sorted(MARGINS))
def test_reference_logits_follow_the_published_formulas(name):
    # Guards the stored reference itself (it must not be regenerated from facelab): the ArcFace / CosFace
    # target logit is s * cos(acos(cos) + m2) - s * m3 (Deng et al. 2019, eq. 4; arcface_torch losses.py),
    # the other logits s * cos; cross entropy by hand in float64.
    m1, m2, m3 = MARGINS[name]
    cos = np.asarray(REF["inputs"]["cos"], np.float64)
    labels = np.asarray(REF["inputs"]["labels"])
    rows = np.arange(len(labels))
    target = np.cos(m1 * np.arccos(cos[rows, labels]) + m2) - m3
    logits = cos.copy()
    logits[rows, labels] = target
    logits *= 64.0
    np.testing.assert_allclose(REF[f"margin_{name}"]["logits"], logits, atol=1e-4)
    shifted = logits - logits.max(axis=1, keepdims=True)
    ce = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[rows, labels])
    assert REF[f"margin_{name}"]["ce_loss"] == pytest.approx(ce, rel=1e-6)
