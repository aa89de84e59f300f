import logging
import subprocess
import sys
import threading

import numpy as np
import pytest

import shared_data
from facelab import ConfigError, ModelError, ProviderError
from facelab.runtime import RuntimeOptions, create_session, resolve_providers

onnx = shared_data.require_module("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _double_model() -> bytes:
    node = helper.make_node("Add", ["x", "x"], ["y"])
    graph = helper.make_graph(
        [node],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def test_cpu_session_runs_and_reports_granted_providers(tmp_path, caplog):
    path = tmp_path / "m.onnx"
    path.write_bytes(_double_model())
    with caplog.at_level(logging.INFO, logger="facelab.runtime.session"):
        sess = create_session(path, RuntimeOptions(providers=["cpu"], intra_op_threads=1))
    assert sess.providers == ["CPUExecutionProvider"]
    assert "providers granted ['CPUExecutionProvider']" in caplog.text
    assert sess.inputs[0].shape == (None, 3)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(sess.run(x)[0], 2 * x)


def test_requested_gpu_not_granted_warns_or_raises_when_strict(caplog):
    model = _double_model()
    with caplog.at_level(logging.WARNING, logger="facelab.runtime.session"):
        sess = create_session(model, RuntimeOptions(providers=["cuda", "cpu"]))
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build offers CUDA; the not-granted path needs a CPU-only build")
    assert sess.providers == ["CPUExecutionProvider"]
    assert "requested ['CUDAExecutionProvider']" in caplog.text and "running on CPU" in caplog.text
    with pytest.raises(ProviderError, match="CUDAExecutionProvider"):
        create_session(model, RuntimeOptions(providers=["cuda:0"], strict=True))


def test_auto_providers_end_with_cpu_and_aliases_resolve():
    names, _ = resolve_providers("auto")
    assert names[-1] == "CPUExecutionProvider"
    names, opts = resolve_providers(["cuda:1", ("cpu", {})])
    assert names == ["CUDAExecutionProvider", "CPUExecutionProvider"] and opts[0] == {"device_id": 1}
    with pytest.raises(ConfigError, match="unknown execution provider"):
        resolve_providers(["warp-drive"])


def test_bad_model_files_raise_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        create_session(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not a protobuf" * 10)
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        create_session(junk)


def test_session_shared_across_threads():
    sess = create_session(_double_model())
    results = {}

    def work(i):
        x = np.full((4, 3), i, np.float32)
        results[i] = [float(sess.run(x)[0][0, 0]) for _ in range(20)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: [2.0 * i] * 20 for i in range(4)}


def test_import_facelab_pulls_in_no_heavy_framework():
    code = (
        "import sys, facelab; facelab.Face; facelab.structures;"
        "bad=[m for m in ('torch','fastapi','starlette','flask','onnxruntime','onnx') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_split_per_image_cuts_rows_by_counts_and_rejects_a_wrong_total():
    from facelab.runtime.batching import split_per_image

    parts = split_per_image(np.arange(12).reshape(6, 2), [1, 0, 3, 2])
    assert [p.shape for p in parts] == [(1, 2), (0, 2), (3, 2), (2, 2)]
    assert parts[2].tolist() == [[2, 3], [4, 5], [6, 7]]
    assert split_per_image(np.zeros((0, 4)), []) == []
    with pytest.raises(ConfigError, match="5 outputs for 6 items"):
        split_per_image(np.zeros((5, 2)), [3, 3])


def test_crop_model_checks_name_the_problem(tmp_path):
    from facelab.runtime.batching import check_batch_size, crop_model_input_size

    assert check_batch_size(4) == 4
    with pytest.raises(ConfigError, match="batch_size must be at least 1, got 0"):
        check_batch_size(0)
    path = tmp_path / "m.onnx"
    path.write_bytes(_double_model())
    session = create_session(path, RuntimeOptions(providers=["cpu"]))
    with pytest.raises(ModelError, match=r"toy: expected an \(N, 3, H, W\) input"):
        crop_model_input_size(session, None, "toy", "a recogniser", 8)
    with pytest.raises(ConfigError, match="batch_size"):
        crop_model_input_size(session, None, "toy", "a recogniser", 0)


def test_spinning_is_off_by_default_and_can_be_enabled():
    key = "session.intra_op.allow_spinning"
    off = create_session(_double_model())
    assert off.session.get_session_options().get_session_config_entry(key) == "0"
    on = create_session(_double_model(), RuntimeOptions(allow_spinning=True))
    assert on.session.get_session_options().get_session_config_entry(key) == "1"
