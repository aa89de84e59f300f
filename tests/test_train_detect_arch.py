"""Detector networks as published (InsightFace's own SCRFD files reproduced), sizes, anchors, assigners and losses."""

from __future__ import annotations

import math

import numpy as np
import pytest

import shared_data

torch = shared_data.require_module("torch")
onnx = shared_data.require_module("onnx")
ort = shared_data.require_module("onnxruntime")

from facelab.train.detection.losses import (  # noqa: E402
    atss_assign,
    bbox_overlaps,
    diou_loss,
    match_priors,
    quality_focal_loss,
    scrfd_anchors,
)
from facelab.train.detection.variants import DETECTOR_VARIANTS, ScrfdExportForm, build_detector  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load_insightface_weights(net, path):
    """Copy the (BN-folded) convolutions of an InsightFace SCRFD file into our graph, in execution order."""
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    order = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: order.append(mod))
        for m in net.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.no_grad():
        net(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert len(order) == len(convs)
    for node, conv in zip(convs, order):
        w = inits[node.input[1]]
        assert tuple(w.shape) == tuple(conv.weight.shape), node.name
        conv.weight.data = torch.from_numpy(w.copy())
        bias = torch.from_numpy(inits[node.input[2]].copy())
        if conv.bias is None:
            conv.bias = torch.nn.Parameter(bias)
        else:
            conv.bias.data = bias
    for m in net.modules():  # the file has the batch norms folded into the convolutions
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.fill_(1.0)
            m.bias.data.zero_()
            m.running_mean.zero_()
            m.running_var.fill_(1.0 - m.eps)
    scales = [
        float(inits.get(i, consts.get(i)))
        for n in graph.node
        if n.op_type == "Mul"
        for i in n.input
        if i in inits or i in consts
    ]
    if net.head.scales is None:
        assert not scales
    else:
        assert len(scales) == 3
        for module, value in zip(net.head.scales, scales):
            module.scale.data.fill_(value)


@pytest.mark.parametrize(
    ("file", "variant"), [("det_500m.onnx", "scrfd_500m_kps"), ("det_2.5g.onnx", "scrfd_2.5g_kps")]
)
def test_our_scrfd_graph_computes_insightfaces_packaged_file(file, variant):
    """With the weights of InsightFace's buffalo_s / buffalo_m detector, our network gives the file's outputs."""
    path = shared_data.shared_file(f"models/insightface/{file}")
    model = build_detector(variant).eval()
    _load_insightface_weights(model.net, path)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 320, 256)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input.1": x})
    with torch.no_grad():
        ours = [t.numpy() for t in ScrfdExportForm(model.net)(torch.from_numpy(x))]
    assert [r.shape for r in ref] == [o.shape for o in ours]
    for r, o in zip(ref, ours):
        np.testing.assert_allclose(o, r, atol=1e-4, rtol=1e-4)


PUBLISHED_PARAMS = {
    "scrfd_500m": 0.57,
    "scrfd_2.5g": 0.67,
    "scrfd_2.5g_kps": 0.82,
    "scrfd_10g": 3.86,
    "scrfd_10g_kps": 4.23,
}


def test_parameter_counts_and_flops_match_the_published_table():
    from facelab.train.backbones import count_macs, count_parameters

    for name, params in PUBLISHED_PARAMS.items():
        model = build_detector(name)
        assert round(count_parameters(model) / 1e6, 2) == params, name
        assert DETECTOR_VARIANTS.get(name).published["params_m"] == params
    for name, gflops in (("scrfd_500m", 0.5), ("scrfd_2.5g", 2.5)):
        macs = count_macs(build_detector(name).net, 640) * 0.75 / 1e9  # SCRFD's tools/get_flops.py convention
        assert abs(macs - gflops) / gflops < 0.05, (name, macs)
    mnet = build_detector("retinaface_mnet025_1mb")
    assert abs(count_parameters(mnet) / 1e6 - 0.44) < 0.02  # SCRFD's table: RetinaFace-MobileNet0.25 0.44M


def test_biubug6_weights_load_into_both_mobilenet_variants_and_r50_keeps_torchvision_names():
    pth = shared_data.shared_file("models/retinaface_biubug6/mobilenet0.25_Final.pth")
    for name in ("retinaface_mnet025_1mb", "retinaface_mnet025"):
        model = build_detector(name)
        model.load_pretrained(str(pth))
        ref = torch.load(pth, map_location="cpu", weights_only=True)
        key = "body.stage1.0.0.weight"
        assert torch.equal(model.net.state_dict()[key], ref.get(key, ref.get("module." + key)))
    keys = build_detector("retinaface_r50", width=0.25).net.state_dict().keys()
    for key in (
        "body.conv1.weight",
        "body.layer1.0.downsample.0.weight",
        "body.layer4.2.bn3.running_var",
        "fpn.output1.0.weight",
    ):
        assert key in keys
    from facelab.errors import ConfigError

    with pytest.raises(ConfigError, match="does not load into scrfd_500m"):
        build_detector("scrfd_500m").load_pretrained(str(pth))


def test_scrfd_anchors_follow_mmdet_order_and_sizes():
    anchors, stride, counts = scrfd_anchors([(2, 3), (1, 2)], strides=(8, 16), base_sizes=(16, 64))
    assert counts == [12, 4]
    # cell (row 0, col 1) of stride 8: centre (8, 0), sides 16 then 32
    np.testing.assert_array_equal(anchors[2:4].numpy(), [[0, -8, 16, 8], [-8, -16, 24, 16]])
    np.testing.assert_array_equal(anchors[12].numpy(), [-32, -32, 32, 32])
    assert stride.tolist() == [8.0] * 12 + [16.0] * 4


def test_atss_positives_follow_the_published_rule():
    anchors, _, counts = scrfd_anchors([(32, 32), (16, 16), (8, 8)])
    gt = torch.tensor([[70.0, 60.0, 110.0, 104.0], [150.0, 150.0, 230.0, 226.0]])
    assigned, _ = atss_assign(anchors, counts, gt)
    a, g = anchors.numpy().astype(np.float64), gt.numpy().astype(np.float64)
    # the rule, written out independently: per level the 9 closest centres, IoU >= mean + std, centre inside
    iou = bbox_overlaps(torch.from_numpy(a), torch.from_numpy(g)).numpy()
    centres = (a[:, :2] + a[:, 2:]) / 2
    expected = np.zeros(len(a), np.int64)
    best = np.full(len(a), -1.0)
    for j, box in enumerate(g):
        dist = np.linalg.norm(centres - (box[:2] + box[2:]) / 2, axis=1)
        cand, start = [], 0
        for n in counts:
            cand.extend(start + np.argsort(dist[start : start + n], kind="stable")[:9])
            start += n
        cand = np.array(cand)
        thr = iou[cand, j].mean() + iou[cand, j].std(ddof=1)
        for i in cand:
            cx, cy = centres[i]
            inside = (
                min(cx - box[0], cy - box[1], box[2] - cx, box[3] - cy)
                / math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
                > 0.001
            )
            if iou[i, j] >= thr and inside and iou[i, j] > best[i]:
                expected[i], best[i] = j + 1, iou[i, j]
    assert (assigned.numpy() == expected).all()
    assert (expected == 1).sum() >= 1 and (expected == 2).sum() >= 1
    ignored, _ = atss_assign(anchors, counts, gt[:1], ignore=gt[1:], ignore_iof_thr=0.5)
    inside_ignored = bbox_overlaps(anchors, gt[1:], mode="iof")[:, 0] > 0.5
    assert (ignored[inside_ignored] == -1).all() and (ignored[~inside_ignored] >= 0).all()


def test_quality_focal_and_diou_losses_by_hand():
    x = torch.tensor([0.3, -1.2])
    loss = quality_focal_loss(x, torch.tensor([True, False]), torch.tensor([0.8, 0.0]))
    s0, s1 = 1 / (1 + math.exp(-0.3)), 1 / (1 + math.exp(1.2))
    bce_pos = -(0.8 * math.log(s0) + 0.2 * math.log(1 - s0))
    assert loss[0].item() == pytest.approx(bce_pos * (0.8 - s0) ** 2, rel=1e-5)
    assert loss[1].item() == pytest.approx(-math.log(1 - s1) * s1**2, rel=1e-5)
    pred = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    target = torch.tensor([[2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    # disjoint: 1 - IoU (0) + centre distance² (4) / enclosing diagonal² (10); identical: 0
    np.testing.assert_allclose(diou_loss(pred, target).numpy(), [1.4, 0.0], atol=1e-6)


def test_prior_matching_forces_each_faces_best_prior_and_skips_hard_faces():
    priors = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.8, 0.8], [0.0, 0.6, 0.1, 0.7]])
    truths = torch.tensor([[0.1, 0.1, 0.3, 0.32], [0.6, 0.6, 0.75, 0.75], [0.0, 0.6, 0.02, 0.62]])
    pos, idx, _ = match_priors(truths, priors, 0.35)
    # prior 1 ~ face 0 (IoU 0.91), prior 2 ~ face 1 (IoU 0.56); face 2's best prior has IoU 0.04 < 0.2: not forced
    assert pos.tolist() == [False, True, True, False]
    assert idx[1].item() == 0 and idx[2].item() == 1
    low = torch.tensor([[0.65, 0.65, 0.8, 0.8]])  # IoU 0.5625 with prior 2 → positive even at threshold 0.9 (forced)
    pos, idx, _ = match_priors(low, priors, 0.9)
    assert pos.tolist() == [False, False, True, False]


@pytest.mark.parametrize("name", sorted(DETECTOR_VARIANTS.names()))
def test_every_published_variant_trains_one_step_and_has_its_export_signature(name):
    from facelab.train.detection.engine import DetectConfig, _criterion
    from facelab.train.detection.losses import Targets
    from facelab.train.detection.variants import export_signature

    model = build_detector(name).train()
    x = torch.randn(2, 3, 96, 128)
    boxes = torch.tensor([[20.0, 30.0, 60.0, 70.0]])
    kps = torch.tensor(
        [[[30.0, 45.0, 1.0], [50.0, 45.0, 1.0], [40.0, 55.0, 1.0], [32.0, 62.0, 1.0], [48.0, 62.0, 1.0]]]
    )
    targets = [
        Targets(boxes, kps, torch.zeros(0, 4)),
        Targets(torch.zeros(0, 4), torch.zeros(0, 5, 3), torch.zeros(0, 4)),
    ]
    loss, parts = _criterion(DetectConfig(model=name), model)(model(x), targets, (96, 128))
    loss.backward()
    assert np.isfinite(loss.item()) and all(np.isfinite(v) for v in parts.values())
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    _, outputs = export_signature(model.variant)
    with torch.no_grad():
        out = model.eval().export_form()(x[:1])
    assert len(out) == len(outputs) and [t.shape[-1] for t in out] == [o.shape[-1] for o in outputs]


def test_train_info_lists_detectors_with_published_figures(capsys):
    from facelab.cli import main

    assert main(["train", "info", "scrfd_2.5g_kps", "retinaface_mnet025"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    assert rows["scrfd_2.5g_kps"][2:4] == ["0.82", "0.82"]  # params ours, published
    assert float(rows["scrfd_2.5g_kps"][4]) == pytest.approx(2.5, rel=0.05) and rows["scrfd_2.5g_kps"][5] == "2.50"
    assert rows["retinaface_mnet025"][-1] == "87.78/81.16/47.32"
    assert (
        main(["train", "info", "scrfd_1g"]) == 2 and "unknown network or detector 'scrfd_1g'" in capsys.readouterr().err
    )
