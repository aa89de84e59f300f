"""Partial FC against a plain full-softmax cross-entropy, in one process and in two gloo processes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import shared_data
from gloo_ranks import run_gloo_ranks

torch = shared_data.require_module("torch")

import torch.nn.functional as F  # noqa: E402

from facelab.train.margins import CombinedMarginLoss  # noqa: E402
from facelab.train.partial_fc import PartialFC, shard_range  # noqa: E402

S, M2 = 64.0, 0.5
C, D, B = 10, 16, 6  # B per rank


def _reference(emb, weight, labels, cols=None):
    """Full softmax CE with an ArcFace margin written out with plain torch ops (float64)."""
    if cols is not None:
        weight = weight[cols]
        labels = torch.searchsorted(cols, labels)
    cos = F.normalize(emb) @ F.normalize(weight).t()
    cos = cos.clamp(-1, 1)
    rows = torch.arange(len(labels))
    c = cos[rows, labels]
    target = torch.where(c > math.cos(math.pi - M2), torch.cos(torch.acos(c) + M2), c - M2 * math.sin(math.pi - M2))
    onehot = F.one_hot(labels, cos.shape[1]).bool()
    logits = S * torch.where(onehot, target[:, None], cos)
    return F.cross_entropy(logits, labels)


def _data(world):
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(B * world, D, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (B * world,), generator=g)
    return emb, labels


def test_shard_range_covers_all_classes():
    for c, w in [(10, 1), (10, 3), (7, 7), (1000003, 8)]:
        spans = [shard_range(c, r, w) for r in range(w)]
        assert spans[0][0] == 0
        assert all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))
        assert sum(n for _, n in spans) == c
        assert max(n for _, n in spans) - min(n for _, n in spans) <= 1


def test_full_rate_equals_full_softmax_single_process():
    torch.manual_seed(0)
    pfc = PartialFC(CombinedMarginLoss(S, 1.0, M2, 0.0), D, C, sample_rate=1.0).double()
    emb, labels = _data(1)
    emb_a = emb.clone().requires_grad_()
    loss = pfc(emb_a, labels)
    loss.backward()
    w_ref = pfc.weight.detach().clone().requires_grad_()
    emb_b = emb.clone().requires_grad_()
    ref = _reference(emb_b, w_ref, labels)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    assert torch.allclose(emb_a.grad, emb_b.grad, atol=1e-5)
    assert torch.allclose(pfc.weight.grad, w_ref.grad, atol=1e-5)


def test_sampled_keeps_positives_and_matches_softmax_over_sampled_columns():
    pfc = PartialFC(CombinedMarginLoss(S, 1.0, M2, 0.0), D, 50, sample_rate=0.3, seed=11).double()
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(8, D, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([3, 3, 17, 40, 41, 0, 49, 17])
    loss = pfc(emb, labels)
    loss.backward()
    cols = pfc.last_index
    assert len(cols) == 15  # int(0.3 * 50)
    assert set(labels.tolist()) <= set(cols.tolist())
    assert torch.equal(cols, torch.sort(cols).values)
    w_ref = pfc.weight.detach().clone().requires_grad_()
    emb_b = emb.detach().clone().requires_grad_()
    ref = _reference(emb_b, w_ref, labels, cols)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    assert torch.allclose(emb.grad, emb_b.grad, atol=1e-5)
    assert torch.allclose(pfc.weight.grad, w_ref.grad, atol=1e-5)
    unsampled = sorted(set(range(50)) - set(cols.tolist()))
    assert float(pfc.weight.grad[unsampled].abs().max()) == 0.0
    # the step counter advances the sampling; same seed and step -> same set
    second = pfc.sample_global(labels, 1)
    again = PartialFC(CombinedMarginLoss(), D, 50, sample_rate=0.3, seed=11).sample_global(labels, 1)
    assert torch.equal(second, again)
    assert not torch.equal(second, pfc.sample_global(labels, 0))


def test_sample_rate_zero_uses_positives_only():
    pfc = PartialFC(CombinedMarginLoss(), D, 100, sample_rate=0.0)
    labels = torch.tensor([5, 9, 5, 77])
    pfc(torch.randn(4, D), labels)
    assert pfc.last_index.tolist() == [5, 9, 77]


def test_subcenters_take_max_and_drop_to_dominant():
    pfc = PartialFC(CombinedMarginLoss(S, 1.0, 0.0, 0.0), 4, 3, num_subcenters=2).double()
    with torch.no_grad():
        pfc.weight.copy_(torch.eye(4, dtype=torch.float64)[[0, 1, 2, 3, 0, 1]] + 0.0)
    emb = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    loss = pfc(emb, labels)
    # class cosines: class0 = max(e0, e1), class1 = max(e2, e3), class2 = max(e0, e1)
    cos = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    assert loss.item() == pytest.approx(F.cross_entropy(S * cos, labels).item(), abs=1e-9)
    dom = pfc.dominant_subcenters(emb, labels)
    assert dom.tolist()[:2] == [1, 1]
    pfc.drop_subcenters(dom)
    assert pfc.num_subcenters == 1 and tuple(pfc.weight.shape) == (3, 4)
    assert pfc.weight[0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert pfc.weight[1].tolist() == [0.0, 0.0, 0.0, 1.0]


def _worker(rank, world, out_dir):
    import torch.distributed as dist

    emb, labels = _data(world)
    local = slice(rank * B, (rank + 1) * B)
    results = {}
    pfc = PartialFC(CombinedMarginLoss(S, 1.0, M2, 0.0), D, C, sample_rate=1.0).double()
    mine = emb[local].clone().requires_grad_()
    loss = pfc(mine, labels[local])
    loss.backward()
    shards = [None] * world
    dist.all_gather_object(shards, pfc.weight.detach())
    full_w = torch.cat(shards).requires_grad_()
    emb_ref = emb.clone().requires_grad_()
    ref = _reference(emb_ref, full_w, labels)
    ref.backward()
    start, n = pfc.class_start, pfc.num_local
    results["loss"] = (loss.item(), ref.item())
    results["emb_grad"] = float((mine.grad - emb_ref.grad[local]).abs().max())
    results["w_grad"] = float((pfc.weight.grad - full_w.grad[start : start + n]).abs().max())
    sampled = PartialFC(CombinedMarginLoss(), D, 40, sample_rate=0.5, seed=3)
    big_labels = torch.arange(world * B) * 3 % 40
    sampled(torch.randn(B, D), big_labels[local])
    results["sampled_local"] = (sampled.last_index + sampled.class_start).tolist()
    results["sampled_global"] = sampled.sample_global(big_labels, 0).tolist()
    torch.save(results, f"{out_dir}/rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_processes_match_full_softmax_and_agree_on_sampling(tmp_path):
    world = 2
    run_gloo_ranks(_worker, world, tmp_path)
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for r in res:
        ours, ref = r["loss"]
        assert ours == pytest.approx(ref, abs=1e-5)
        assert r["emb_grad"] < 1e-5
        assert r["w_grad"] < 1e-5
    assert res[0]["loss"][0] == pytest.approx(res[1]["loss"][0], abs=1e-12)
    # every rank derives the same global sampled set; the union of the shards' parts is that set
    assert res[0]["sampled_global"] == res[1]["sampled_global"]
    union = sorted(res[0]["sampled_local"] + res[1]["sampled_local"])
    assert union == res[0]["sampled_global"]
    big_labels = (np.arange(world * B) * 3 % 40).tolist()
    assert set(big_labels) <= set(union)
    assert len(union) == 20
    # and it is the same set a single process computes for the same seed and step
    single = PartialFC(CombinedMarginLoss(), D, 40, sample_rate=0.5, seed=3)
    assert single.sample_global(torch.tensor(big_labels), 0).tolist() == union


def test_vpl_mixes_recent_memory_into_prototypes_and_updates_it():
    lam, k = 0.25, 5
    pfc = PartialFC(
        CombinedMarginLoss(S, 1.0, 0.0, 0.0), 4, k, vpl=True, vpl_start_iters=3, vpl_allowed_delta=2, vpl_lambda=lam
    )
    pfc = pfc.double()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        pfc.weight.copy_(torch.randn(k, 4, generator=g, dtype=torch.float64))
        pfc.vpl_memory.copy_(F.normalize(torch.randn(k, 4, generator=g, dtype=torch.float64)))
        pfc.step.fill_(4)  # this forward is iteration 5 (> start 3)
        pfc.vpl_iters.copy_(torch.tensor([5, 3, 2, 0, 4]))  # recent (5 - it <= 2): classes 0, 1, 4
    emb = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 3, 1])
    memory = pfc.vpl_memory.clone()
    loss = pfc(emb, labels)
    # by hand: prototypes of recent classes are normalize(0.75 * w_hat + 0.25 * memory)
    w_hat = F.normalize(pfc.weight.detach())
    mix = torch.tensor([lam, lam, 0.0, 0.0, lam], dtype=torch.float64).view(-1, 1)
    proto = F.normalize(w_hat * (1 - mix) + memory * mix)
    cos = F.normalize(emb.detach()) @ proto.t()
    assert loss.item() == pytest.approx(F.cross_entropy(S * cos, labels).item(), abs=1e-10)
    # the memory of the batch's classes now holds their last normalised feature, stamped with step 5
    assert torch.allclose(pfc.vpl_memory[3], F.normalize(emb.detach()[1:2])[0])
    assert torch.allclose(pfc.vpl_memory[1], F.normalize(emb.detach()[2:3])[0])
    assert torch.equal(pfc.vpl_memory[[0, 2, 4]], memory[[0, 2, 4]])
    assert pfc.vpl_iters.tolist() == [5, 5, 2, 5, 4]
    loss.backward()
    assert pfc.weight.grad is not None and emb.grad is not None


def test_vpl_is_off_before_start_iters():
    pfc = PartialFC(CombinedMarginLoss(S, 1.0, 0.0, 0.0), 4, 3, vpl=True, vpl_start_iters=10).double()
    emb = torch.randn(2, 4, dtype=torch.float64)
    labels = torch.tensor([0, 2])
    loss = pfc(emb, labels)
    cos = F.normalize(emb) @ F.normalize(pfc.weight.detach()).t()
    assert loss.item() == pytest.approx(F.cross_entropy(S * cos, labels).item(), abs=1e-10)


def test_bf16_autocast_on_cpu_is_close_to_fp32():
    torch.manual_seed(0)
    ref = PartialFC(CombinedMarginLoss(S, 1.0, 0.0, 0.4), D, C)
    amp = PartialFC(CombinedMarginLoss(S, 1.0, 0.0, 0.4), D, C, fp16=True, autocast_dtype=torch.bfloat16)
    amp.load_state_dict(ref.state_dict())
    emb, labels = _data(1)
    a, b = ref(emb.float(), labels), amp(emb.float(), labels)
    assert b.dtype == torch.float32
    assert b.item() == pytest.approx(a.item(), rel=0.05)
