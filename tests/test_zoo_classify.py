"""Folder resolution and signature classification on tiny ONNX models with InsightFace's signatures."""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

import shared_data
from facelab.errors import ModelError, ModelNotFoundError
from facelab.zoo import get_card, identify_model, resolve_folder, resolve_pack
from facelab.zoo._inspect import USER_LICENSE, classify_signature, read_signature

onnx = shared_data.require_module("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

DET_500M_SHA = "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a"


def make_model(
    path: Path,
    *,
    size: tuple[int, int] | None,
    out_dims: list[int],
    prenorm: str = "none",
    second_input: bool = False,
    out_names: list[str] | None = None,
) -> Path:
    """A small ONNX Runtime-loadable model: input (1, 3, H, W) -> pooled -> one MatMul per output (N, D).

    prenorm: "none" (first node Conv-like name), "submul" (Sub + Mul at the start) or "bn_data".
    """
    h, w = size if size else ("h", "w")
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, h, w])
    inputs = [x]
    nodes = []
    inits = []
    current = "input.1"
    if prenorm == "submul":
        inits += [
            numpy_helper.from_array(np.array(127.5, np.float32), "c_mean"),
            numpy_helper.from_array(np.array(1 / 128, np.float32), "c_scale"),
        ]
        nodes += [
            helper.make_node("Sub", [current, "c_mean"], ["x_sub"], name="_minus0"),
            helper.make_node("Mul", ["x_sub", "c_scale"], ["x_mul"], name="_mul0"),
        ]
        current = "x_mul"
    elif prenorm == "bn_data":
        nodes.append(helper.make_node("Identity", [current], ["x_bn"], name="bn_data"))
        current = "x_bn"
    nodes.append(helper.make_node("GlobalAveragePool", [current], ["pooled"], name="GlobalAveragePool_0"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="Flatten_1"))
    outputs = []
    names = out_names or [f"out{i}" for i in range(len(out_dims))]
    if second_input:  # a swapper: one output mixing both inputs
        inputs.append(helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512]))
        inits.append(numpy_helper.from_array(np.zeros((512, out_dims[0]), np.float32), "w_src"))
        nodes.append(helper.make_node("MatMul", ["source", "w_src"], ["src_proj"], name="MatMul_src"))
    for i, (name, dim) in enumerate(zip(names, out_dims)):
        inits.append(numpy_helper.from_array(np.full((3, dim), 0.01 * (i + 1), np.float32), f"w{i}"))
        target = f"{name}_img" if second_input else name
        nodes.append(helper.make_node("MatMul", ["flat", f"w{i}"], [target], name=f"MatMul_{i + 2}"))
        if second_input:
            nodes.append(helper.make_node("Add", [target, "src_proj"], [name], name=f"Add_{i + 2}"))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, dim]))
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def detector(path: Path, n: int = 9) -> Path:
    dims = ([1] * 3 + [4] * 3 + [10] * 3)[:n] if n == 9 else [1] * n
    return make_model(path, size=None, out_dims=dims)


def build_pack_folder(folder: Path) -> dict[str, Path]:
    return {
        "det": detector(folder / "det_x.onnx"),
        "lmk106": make_model(folder / "2d106det.onnx", size=(192, 192), out_dims=[212], prenorm="bn_data"),
        "lmk68": make_model(folder / "1k3d68.onnx", size=(192, 192), out_dims=[3309], prenorm="submul"),
        "ga": make_model(folder / "genderage.onnx", size=(96, 96), out_dims=[3]),
        "rec": make_model(folder / "w600k_x.onnx", size=(112, 112), out_dims=[512]),
        "swap": make_model(folder / "inswapper_128.onnx", size=(128, 128), out_dims=[8], second_input=True),
    }


def test_folder_is_classified_like_insightface(tmp_path):
    files = build_pack_folder(tmp_path / "mypack")
    resolved = resolve_pack(str(tmp_path / "mypack"), home=tmp_path / "home")
    assert resolved.source == "folder"
    assert resolved.root == tmp_path / "mypack"
    by_task = {card.task: (card, path) for card, path in resolved.models}
    assert resolved.tasks[0] == "detection"
    assert set(by_task) == {"detection", "landmark_2d_106", "landmark_3d_68", "genderage", "recognition"}
    assert by_task["detection"][1] == files["det"]
    det = by_task["detection"][0]
    assert (det.arch, det.color_order, det.mean, det.std) == ("scrfd", "RGB", (127.5,) * 3, (128.0,) * 3)
    assert det.extra["strides"] == [8, 16, 32] and det.extra["num_anchors"] == 2 and det.extra["use_kps"] is True
    rec = by_task["recognition"][0]
    assert rec.input_size == (112, 112) and rec.embedding_dim == 512
    assert rec.mean == (127.5,) * 3 and rec.std == (127.5,) * 3  # no Sub/Mul nodes
    assert rec.align_template == "arcface_112_5pt"
    # landmark with bn_data among the first 3 nodes / with _minus + _mul: the graph normalises itself
    assert by_task["landmark_2d_106"][0].mean == (0.0,) * 3 and by_task["landmark_2d_106"][0].std == (1.0,) * 3
    assert by_task["landmark_3d_68"][0].std == (1.0,) * 3
    ga = by_task["genderage"][0]
    assert ga.input_size == (96, 96) and ga.mean == (127.5,) * 3 and ga.std == (128.0,) * 3
    for card, path in resolved.models:
        assert card.license == USER_LICENSE
        assert card.files[0].filename == path.name
        assert card.files[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert card.files[0].size_bytes == path.stat().st_size
    # the swapper does not break the pack: kept aside
    assert [(c.task, p) for c, p in resolved.extras] == [("swap", files["swap"])]
    assert resolved.extras[0][0].std == (255.0,) * 3


@pytest.mark.oracle
def test_classification_matches_insightface_router(tmp_path):
    shared_data.require_module("insightface")
    from insightface.model_zoo import get_model

    files = build_pack_folder(tmp_path / "p")
    files["rec_mx"] = make_model(tmp_path / "p2" / "rec_mx.onnx", size=(112, 112), out_dims=[512], prenorm="submul")
    files["attr"] = make_model(tmp_path / "p2" / "attr.onnx", size=(96, 96), out_dims=[7], prenorm="bn_data")
    for key, path in files.items():
        ours = identify_model(path, home=tmp_path / "home")
        theirs = get_model(str(path), providers=["CPUExecutionProvider"])
        assert theirs is not None, key
        task = getattr(theirs, "taskname", "swap")
        expected_task = "attribute" if task.startswith("attribute_") else task
        assert ours.task == expected_task, key
        assert ours.mean[0] == pytest.approx(theirs.input_mean), key
        assert ours.std[0] == pytest.approx(theirs.input_std), key


def test_first_model_per_task_wins_and_nested_folder(tmp_path):
    outer = tmp_path / "pk"
    inner = outer / "pk"
    detector(inner / "a_det.onnx")
    make_model(inner / "b_rec.onnx", size=(112, 112), out_dims=[512])
    make_model(inner / "c_rec.onnx", size=(128, 128), out_dims=[256])
    resolved = resolve_folder(outer, home=tmp_path / "home")
    assert resolved.root == inner
    assert [p.name for _, p in resolved.models] == ["a_det.onnx", "b_rec.onnx"]
    assert [p.name for _, p in resolved.extras] == ["c_rec.onnx"]
    assert resolved.extras[0][0].embedding_dim == 256


def test_junk_and_unrecognised_files(tmp_path, caplog):
    folder = tmp_path / "f"
    detector(folder / "det.onnx")
    junk = folder / "junk.onnx"
    junk.write_bytes(b"definitely not a protobuf \xff\xfe\x00" * 20)
    with pytest.raises(ModelError, match="junk.onnx"):
        resolve_folder(folder, home=tmp_path / "home")
    junk.unlink()
    odd = make_model(folder / "odd.onnx", size=(100, 100), out_dims=[10])
    with pytest.raises(ModelError) as info:
        resolve_folder(folder, home=tmp_path / "home")
    message = str(info.value)
    assert "odd.onnx" in message and "unrecognised" in message
    assert "input.1 (1, 3, 100, 100)" in message and "(1, 10)" in message
    with caplog.at_level(logging.WARNING):
        resolved = resolve_folder(folder, home=tmp_path / "home", strict=False)
    assert resolved.tasks == ["detection"]
    assert [p for p, _ in resolved.skipped] == [odd]
    assert "odd.onnx" in caplog.text


def test_unsupported_landmark_output_is_an_error(tmp_path):
    path = make_model(tmp_path / "lmk68_2d.onnx", size=(192, 192), out_dims=[136])
    with pytest.raises(ModelError, match=r"lmk68_2d\.onnx.*136"):
        identify_model(path, home=tmp_path / "home")


def test_folder_without_detector(tmp_path):
    folder = tmp_path / "nodet"
    make_model(folder / "rec.onnx", size=(112, 112), out_dims=[512])
    with pytest.raises(ModelError, match="no face detector") as info:
        resolve_pack(folder, home=tmp_path / "home")
    assert "rec.onnx=recognition" in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no .onnx files"):
        resolve_folder(empty)


def test_unknown_name_is_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="buffalo_l"):
        resolve_pack("no_such_pack_xyz", home=tmp_path / "home", insightface_root=tmp_path / "ins")


def test_custom_pack_under_insightface_root(tmp_path):
    folder = tmp_path / "ins" / "models" / "my_licensed"
    detector(folder / "det.onnx")
    resolved = resolve_pack("my_licensed", home=tmp_path / "home", insightface_root=tmp_path / "ins")
    assert resolved.root == folder and resolved.tasks == ["detection"]


def test_real_det_500m_identified_by_sha256(tmp_path):
    path = shared_data.shared_file("models/insightface/det_500m.onnx")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DET_500M_SHA
    card = identify_model(path, home=tmp_path / "home")
    assert card.name in ("scrfd_500m.buffalo_s", "scrfd_500m.buffalo_sc")
    assert card.license == "non-commercial research only (InsightFace)"
    assert card is get_card(card.name)
    # the same file classified by its signature alone also comes out as an SCRFD detector
    sig = read_signature(path)
    assert len(sig.outputs) == 9 and sig.inputs[0].shape == (1, 3, None, None)
    classified = classify_signature(sig, path)
    assert (classified.task, classified.arch, classified.extra["strides"]) == ("detection", "scrfd", [8, 16, 32])


def test_real_yunet_recognised_by_output_names(tmp_path):
    path = shared_data.shared_file("models/yunet/face_detection_yunet_2026may.onnx")
    card = classify_signature(read_signature(path), path)
    assert (card.task, card.arch, card.color_order) == ("detection", "yunet", "BGR")
    assert card.extra["strides"] == [8, 16, 32]


def test_retinaface_output_names(tmp_path):
    path = make_model(tmp_path / "rf.onnx", size=(640, 640), out_dims=[4, 2, 10], out_names=["loc", "conf", "landms"])
    card = identify_model(path, home=tmp_path / "home")
    assert (card.task, card.arch, card.mean) == ("detection", "retinaface", (104.0, 117.0, 123.0))


def test_signature_without_onnx_package(tmp_path, monkeypatch, caplog):
    shared_data.require_module("onnxruntime")
    path = make_model(tmp_path / "rec.onnx", size=(112, 112), out_dims=[512])
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with caplog.at_level(logging.WARNING):
        sig = read_signature(path)
    assert sig.source == "onnxruntime"
    assert "onnx package is not installed" in caplog.text
    card = classify_signature(sig, path)
    assert card.task == "recognition" and card.embedding_dim == 512
    assert "onnx not installed" in card.notes


def test_real_detectors_in_a_folder_first_by_filename_wins(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("det_500m.onnx", "det_2.5g.onnx"):
        (folder / name).symlink_to(shared_data.shared_file(f"models/insightface/{name}"))
    make_model(folder / "w_rec.onnx", size=(112, 112), out_dims=[512])
    resolved = resolve_pack(folder, home=tmp_path / "home")
    assert [c.name for c, _ in resolved.models][0] == "scrfd_2.5g.buffalo_m"  # "det_2.5g" sorts before "det_500m"
    assert [c.name for c, _ in resolved.extras] == ["scrfd_500m.buffalo_s"]
    assert resolved.model("recognition")[0].name == "w_rec.mixed"
