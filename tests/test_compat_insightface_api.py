"""facelab.compat.insightface in process: Face semantics, every model class, face_align, providers, errors.

Compared side by side with the installed insightface 2.1 oracle on the same buffalo-like pack
(:mod:`compat_helpers`): the same calls must give the same fields, types, key order and values.
"""

from __future__ import annotations

import copy
import logging
import pickle
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest

from compat_helpers import PACK_FILES, assert_faces_close, build_buffalo_pack
from facelab.errors import ConfigError, ImageError, ModelError, ModelNotFoundError
from onnx_builders import T1_KPS, build_swapper
from shared_data import require_module, shared_file


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A pack root, with FACELAB_HOME and the mean-shape file set for the module's tests."""
    base = tmp_path_factory.mktemp("compat_api")
    root = base / "insightface_root"
    build_buffalo_pack(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACELAB_HOME", str(base / "facelab_home"))
        mp.setenv("FACELAB_MEANSHAPE_68", str(shared_file("data/landmarks/meanshape_68.pkl")))
        mp.delenv("FACELAB_OFFLINE", raising=False)
        yield {"root": root, "base": base, "folder": root / "models" / "buffalo_l"}


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    img = cv2.imread(str(shared_file("data/images/t1.jpg")))
    assert img is not None
    return img


def _oracle():
    insightface = require_module("insightface")
    warnings.filterwarnings("ignore", category=FutureWarning)  # scikit-image's estimate() deprecation
    return insightface


@pytest.fixture(scope="module")
def apps(env):
    """(facelab's FaceAnalysis, insightface's FaceAnalysis) on the same pack, prepared alike."""
    theirs_module = _oracle()
    from facelab.compat.insightface.app import FaceAnalysis

    kwargs = {"name": "buffalo_l", "root": str(env["root"]), "providers": ["CPUExecutionProvider"]}
    ours, theirs = FaceAnalysis(**kwargs), theirs_module.app.FaceAnalysis(**kwargs)
    for app in (ours, theirs):
        app.prepare(ctx_id=-1, det_size=(640, 640))
    return ours, theirs


# ------------------------------------------------------------------------------------------ Face


def _exercise(face_cls) -> list:
    """What a program can observe of a Face class, as a list of plain values."""
    seen: list = []
    face = face_cls({"a": {"b": 1}, "items": [{"c": 2}, 3], "pair": (4, {"d": 5})}, gender=0)
    seen += [type(face.a).__name__, type(face.items).__name__, type(face.items[0]).__name__, type(face.pair).__name__]
    seen += [face.a.b, face.a.missing, face.sex, face.zz, "zz" in face, face.get("zz"), list(face)]
    face.x = 1
    face["y"] = 2
    face.z = {"w": 3}
    seen += [face.x, face["x"], face.y, face["y"], type(face.z).__name__, face.z.w]
    face.update(u=1)
    seen += [face.get("u"), face.u]  # dict.update bypasses the attribute (InsightFace's quirk)
    try:
        face["nokey"]
    except KeyError:
        seen.append("KeyError")
    try:
        face.sex = "M"
    except AttributeError:
        seen.append("sex is read-only")
    seen += [face.embedding, face.embedding_norm, face.normed_embedding]
    face.embedding = np.array([3.0, 4.0], np.float32)
    seen += [type(face.embedding_norm).__name__, float(face.embedding_norm), face.normed_embedding.tolist()]
    seen += [face.normed_embedding.dtype.name]
    for gender in (1, 0, np.int64(1)):
        face.gender = gender
        seen.append(face.sex)
    del face["gender"]
    seen += ["gender" in face, face.gender]  # the attribute survives the item (InsightFace's quirk)
    delattr(face, "x")
    seen += ["x" in face, face.x]
    seen += [dict(face_cls(None)), dict(face_cls({}, k=1)), face_cls(gender=1) == {"gender": 1}, len(face)]
    seen += [hasattr(face_cls(), "anything"), getattr(face_cls(), "anything", "default")]
    return [v.tolist() if isinstance(v, np.ndarray) else v for v in seen]


@pytest.mark.oracle
def test_face_behaves_like_insightfaces_face() -> None:
    insightface = _oracle()
    from facelab.compat.insightface.app.common import Face

    assert _exercise(Face) == _exercise(insightface.app.common.Face)
    # The one deliberate difference: ours can be pickled and copied (InsightFace's raises TypeError).
    face = Face(bbox=np.arange(4, dtype=np.float32), nested={"k": 1}, gender=1)
    for clone in (pickle.loads(pickle.dumps(face)), copy.deepcopy(face), copy.copy(face)):
        assert type(clone) is Face and list(clone) == list(face) and clone.nested.k == 1 and clone.sex == "M"
        np.testing.assert_array_equal(clone.bbox, face.bbox)
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(insightface.app.common.Face(gender=1)))


@pytest.mark.oracle
def test_app_faces_have_insightfaces_fields_types_and_values(apps, t1: np.ndarray) -> None:
    ours_app, theirs_app = apps
    assert (
        list(ours_app.models)
        == list(theirs_app.models)
        == ["landmark_3d_68", "landmark_2d_106", "detection", "genderage", "recognition"]
    )
    for task, model in ours_app.models.items():
        other = theirs_app.models[task]
        assert (model.taskname, tuple(model.input_size), model.input_mean, model.input_std) == (
            other.taskname,
            tuple(other.input_size),
            other.input_mean,
            other.input_std,
        ), task
    ours, theirs = ours_app.get(t1), theirs_app.get(t1)
    assert len(ours) == len(theirs) == 6
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_faces_close(dict(a), dict(b), f"face {i}")
        for key in b:
            assert type(a[key]) is type(b[key]), (key, type(a[key]), type(b[key]))
            if isinstance(b[key], np.ndarray):
                assert (a[key].dtype, a[key].shape) == (b[key].dtype, b[key].shape), key
            assert getattr(a, key) is a[key]
        assert (a.sex, a.liveness, a.no_such_field) == (b.sex, None, None)
        assert type(a.embedding_norm) is type(b.embedding_norm) and a.embedding_norm == pytest.approx(
            b.embedding_norm, rel=1e-5
        )
        np.testing.assert_allclose(a.normed_embedding, b.normed_embedding, atol=1e-5)
    assert len({f.sex for f in ours}) == 2  # both values of gender occur, so sex is really compared
    np.testing.assert_array_equal(ours_app.draw_on(t1, ours), theirs_app.draw_on(t1, theirs))
    assert ours_app.get(np.zeros((64, 64, 3), np.uint8)) == theirs_app.get(np.zeros((64, 64, 3), np.uint8)) == []


@pytest.mark.oracle
def test_detector_settings_follow_insightface(env, t1: np.ndarray) -> None:
    insightface = _oracle()
    from facelab.compat.insightface.app import FaceAnalysis

    kwargs = {
        "name": "buffalo_l",
        "root": str(env["root"]),
        "allowed_modules": ["detection"],
        "providers": ["CPUExecutionProvider"],
    }
    ours, theirs = FaceAnalysis(**kwargs), insightface.app.FaceAnalysis(**kwargs)
    assert list(ours.models) == list(theirs.models) == ["detection"]
    crowd = cv2.imread(str(shared_file("data/verification/deepface/selfie-many-people.jpg")))
    cases = [(None, 0.5, t1, 0, "default"), ((0, 0), 0.5, crowd, 3, "max"), ((320, 320), 0.6, t1, 0, "default")]
    cases += [([(256, 256), (640, 640)], 0.45, crowd, 0, "default"), ((640, 640), 0.5, crowd, 2, "default")]
    for det_size, det_thresh, img, max_num, metric in cases:
        for app in (ours, theirs):
            app.prepare(ctx_id=-1, det_thresh=det_thresh, det_size=det_size)
        assert ours.det_size == theirs.det_size and ours.det_model.input_sizes == [
            tuple(s) for s in theirs.det_model.input_sizes
        ]
        a, b = ours.get(img, max_num=max_num, det_metric=metric), theirs.get(img, max_num=max_num, det_metric=metric)
        assert len(a) == len(b) > 1, (det_size, max_num)
        for fa, fb in zip(a, b):
            assert_faces_close(dict(fa), dict(fb), f"{det_size} {max_num} {metric}")
    assert ours.analyzer.detector is ours.det_model.runner  # the analyzer uses the re-prepared detector


@pytest.mark.oracle
def test_first_model_per_task_wins_and_odd_files_are_set_aside(env, t1: np.ndarray, caplog) -> None:
    insightface = _oracle()
    from cli_helpers import link_or_copy
    from facelab.compat.insightface.app import FaceAnalysis
    from onnx_builders import build_recognizer

    root = env["base"] / "two_recognisers"
    folder = root / "models" / "pack"
    link_or_copy(shared_file("models/insightface/det_500m.onnx"), folder / "det_500m.onnx")
    build_recognizer(folder / "w600k_a.onnx", seed=11)
    build_recognizer(folder / "w600k_b.onnx", seed=12)
    kwargs = {"name": "pack", "root": str(root), "providers": ["CPUExecutionProvider"]}
    ours, theirs = FaceAnalysis(**kwargs), insightface.app.FaceAnalysis(**kwargs)
    assert ours.models["recognition"].model_file.endswith("w600k_a.onnx")
    assert theirs.models["recognition"].model_file.endswith("w600k_a.onnx")
    a, b = ours.get(t1), theirs.get(t1)
    for fa, fb in zip(a, b):
        assert_faces_close(dict(fa), dict(fb), "first recogniser")
    # A face swapper and an unreadable file in the folder: InsightFace fails on either; facelab sets
    # the swapper aside and skips the bad file with a warning.
    build_swapper(folder / "inswapper_128.onnx")
    (folder / "zz_broken.onnx").write_bytes(b"truncated download")
    with caplog.at_level(logging.WARNING, logger="facelab"):
        app = FaceAnalysis(**kwargs)
    assert list(app.models) == ["detection", "recognition"]
    assert any("zz_broken.onnx" in r.getMessage() for r in caplog.records)
    for fa, fb in zip(app.get(t1), b):
        assert_faces_close(dict(fa), dict(fb), "with odd files")


def test_one_run_per_model_per_image_not_per_face(apps, t1: np.ndarray) -> None:
    ours, _ = apps
    calls: dict[str, int] = {}
    originals = {}
    for task, model in ours.models.items():
        session = model.runner.session
        originals[task] = session.run

        def counting(feeds, output_names=None, _task=task, _run=session.run):
            calls[_task] = calls.get(_task, 0) + 1
            return _run(feeds, output_names)

        session.run = counting
    try:
        faces = ours.get(t1)
    finally:
        for task, model in ours.models.items():
            model.runner.session.run = originals[task]
    assert len(faces) == 6
    # InsightFace runs each per-face model 6 times here (once per face); facelab once per image.
    assert calls == {"landmark_3d_68": 1, "landmark_2d_106": 1, "detection": 1, "genderage": 1, "recognition": 1}


# ------------------------------------------------------------------------------------- model_zoo


@pytest.mark.oracle
def test_model_zoo_objects_match_insightfaces(env, t1: np.ndarray) -> None:
    insightface = _oracle()
    import facelab.compat.insightface as ours_module

    folder = env["folder"]
    ours = {
        name: ours_module.model_zoo.get_model(str(folder / name), providers=["CPUExecutionProvider"])
        for name in PACK_FILES
    }
    theirs = {
        name: insightface.model_zoo.get_model(str(folder / name), providers=["CPUExecutionProvider"])
        for name in PACK_FILES
    }
    for name in PACK_FILES:
        a, b = ours[name], theirs[name]
        assert type(a).__name__ == type(b).__name__, name
        for attr in ("taskname", "input_mean", "input_std", "lmk_dim", "lmk_num", "require_pose"):
            assert getattr(a, attr, None) == getattr(b, attr, None), (name, attr)
        assert tuple(a.input_size) == tuple(b.input_size), name
        a.prepare(ctx_id=-1)
        b.prepare(ctx_id=-1)
    assert ours["det_500m.onnx"].providers == ["CPUExecutionProvider"]

    det_a, det_b = ours["det_500m.onnx"], theirs["det_500m.onnx"]
    for model in (det_a, det_b):
        model.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)
    for kwargs in (
        {},
        {"max_num": 2, "metric": "max"},
        {"input_size": (0, 0)},
        {"input_size": (320, 320), "det_thresh": 0.7},
    ):
        (bb_a, kp_a), (bb_b, kp_b) = det_a.detect(t1, **kwargs), det_b.detect(t1, **kwargs)
        assert bb_a.shape == bb_b.shape and bb_a.dtype == bb_b.dtype == np.float32, kwargs
        np.testing.assert_allclose(bb_a[:, :4], bb_b[:, :4], atol=1e-3)
        np.testing.assert_allclose(bb_a[:, 4], bb_b[:, 4], atol=1e-5)
        np.testing.assert_allclose(kp_a, kp_b, atol=1e-3)
    assert det_a.input_sizes == [(640, 640)] and det_a.det_thresh == 0.5  # per-call overrides left it alone

    bboxes, kpss = det_b.detect(t1)
    face_of = lambda cls, i: cls(bbox=bboxes[i, :4], kps=kpss[i], det_score=bboxes[i, 4])  # noqa: E731
    from facelab.compat.insightface.app.common import Face

    their_face = insightface.app.common.Face
    for name in ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "w600k_mbf.onnx"):
        for i in range(len(bboxes)):
            fa, fb = face_of(Face, i), face_of(their_face, i)
            ra, rb = ours[name].get(t1, fa), theirs[name].get(t1, fb)
            assert_faces_close(dict(fa), dict(fb), f"{name} face {i}")
            if name == "genderage.onnx":
                assert ra == rb and type(ra[0]) is type(rb[0])
    rec_a, rec_b = ours["w600k_mbf.onnx"], theirs["w600k_mbf.onnx"]
    crops = [insightface.utils.face_align.norm_crop(t1, k) for k in T1_KPS] + [
        cv2.resize(t1[300:450, 450:600], (150, 150))
    ]
    feats_a, feats_b = rec_a.get_feat(crops), rec_b.get_feat(crops)
    assert feats_a.shape == feats_b.shape == (7, 512)
    assert np.abs(feats_a - feats_b).max() <= 1e-4 * np.abs(feats_b).max()
    np.testing.assert_allclose(rec_a.get_feat(crops[0]), rec_b.get_feat(crops[0]), atol=1e-4 * np.abs(feats_b).max())
    assert rec_a.compute_sim(feats_a[0], feats_a[1]) == pytest.approx(
        float(rec_b.compute_sim(feats_b[0], feats_b[1])), abs=1e-6
    )
    batch = np.random.default_rng(0).uniform(0, 255, (3, 3, 112, 112)).astype(np.float32)
    np.testing.assert_allclose(rec_a.forward(batch), rec_b.forward(batch), atol=1e-4)
    # A face with only keypoints is enough for the recogniser, as in InsightFace.
    np.testing.assert_allclose(rec_a.get(t1, Face(kps=T1_KPS[0])), rec_b.get(t1, their_face(kps=T1_KPS[0])), atol=1e-3)


@pytest.mark.oracle
def test_inswapper_object_matches_insightfaces(env, t1: np.ndarray, capsys) -> None:
    insightface = _oracle()
    import facelab.compat.insightface as ours_module
    from facelab.compat.insightface.app.common import Face

    path = build_swapper(env["base"] / "inswapper_128.onnx")
    ours, theirs = ours_module.model_zoo.get_model(str(path)), insightface.model_zoo.get_model(str(path))
    capsys.readouterr()
    assert not hasattr(ours, "taskname") and not hasattr(theirs, "taskname")
    assert (tuple(ours.input_size), ours.input_mean, ours.input_std) == (
        theirs.input_size,
        theirs.input_mean,
        theirs.input_std,
    )
    np.testing.assert_array_equal(ours.emap, theirs.emap)
    source = np.random.default_rng(3).normal(0, 1, 512).astype(np.float32)
    crop_a, m_a = ours.get(t1, Face(kps=T1_KPS[1]), Face(embedding=source), paste_back=False)
    crop_b, m_b = theirs.get(
        t1, insightface.app.common.Face(kps=T1_KPS[1]), insightface.app.common.Face(embedding=source), paste_back=False
    )
    assert np.abs(crop_a.astype(int) - crop_b).max() <= 1 and crop_a.dtype == np.uint8
    np.testing.assert_allclose(m_a, m_b, atol=5e-4)
    with pytest.raises(ConfigError, match="no embedding"):
        ours.get(t1, Face(kps=T1_KPS[1]), Face())
    with pytest.raises(ConfigError, match="no kps"):
        ours.get(t1, Face(), Face(embedding=source))


@pytest.mark.oracle
def test_face_align_matches_insightfaces(t1: np.ndarray) -> None:
    insightface = _oracle()
    from facelab.compat.insightface.utils import face_align as ours

    theirs = insightface.utils.face_align
    np.testing.assert_array_equal(ours.arcface_dst, theirs.arcface_dst)
    for kps in T1_KPS[:3]:
        for size in (112, 128, 224, 256):
            np.testing.assert_allclose(ours.estimate_norm(kps, size), theirs.estimate_norm(kps, size), atol=1e-4)
            crop_a, m_a = ours.norm_crop2(t1, kps, size)
            crop_b, m_b = theirs.norm_crop2(t1, kps, size)
            assert np.abs(crop_a.astype(int) - crop_b).max() <= 1 and crop_a.shape == (size, size, 3)
            assert np.abs(ours.norm_crop(t1, kps, size).astype(int) - theirs.norm_crop(t1, kps, size)).max() <= 1
    for size in (640, 333):
        (ca, sa), (cb, sb) = ours.square_crop(t1, size), theirs.square_crop(t1, size)
        np.testing.assert_array_equal(ca, cb)
        assert sa == sb
        tall = np.ascontiguousarray(t1.transpose(1, 0, 2))
        np.testing.assert_array_equal(ours.square_crop(tall, size)[0], theirs.square_crop(tall, size)[0])
    for rotation in (0, 30, -90):
        (ca, ma), (cb, mb) = (
            ours.transform(t1, (600.0, 400.0), 192, 0.8, rotation),
            theirs.transform(t1, (600.0, 400.0), 192, 0.8, rotation),
        )
        np.testing.assert_allclose(ma, mb, atol=1e-9)
        assert np.abs(ca.astype(int) - cb).max() <= 1
    points3 = np.random.default_rng(1).uniform(0, 100, (10, 3)).astype(np.float32)
    for pts in (points3[:, :2].copy(), points3):
        np.testing.assert_allclose(ours.trans_points(pts, ma), theirs.trans_points(pts, mb), atol=1e-3)
    with pytest.raises(ConfigError):
        ours.estimate_norm(np.zeros((4, 2)), 112)
    with pytest.raises(ConfigError):
        ours.norm_crop(t1, T1_KPS[0], 100)


# ----------------------------------------------------------------------------- providers, ctx_id


def test_runtime_options_from_insightface_arguments() -> None:
    from facelab.compat.insightface.model_zoo.model_zoo import runtime_options

    assert runtime_options().providers == "auto"
    opts = runtime_options(["CUDAExecutionProvider", "CPUExecutionProvider"], [{"device_id": 1}, {}])
    assert opts.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert opts.provider_options == {"CUDAExecutionProvider": {"device_id": 1}, "CPUExecutionProvider": {}}
    assert runtime_options(["CUDAExecutionProvider"], {"device_id": 2}).provider_options == {
        "CUDAExecutionProvider": {"device_id": 2}
    }
    keyed = runtime_options(None, {"CUDAExecutionProvider": {"device_id": 3}})
    assert keyed.providers == "auto" and keyed.provider_options == {"CUDAExecutionProvider": {"device_id": 3}}
    assert (
        runtime_options([("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]).providers[0][0]
        == "CUDAExecutionProvider"
    )
    import onnxruntime

    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 2
    assert runtime_options(["CPUExecutionProvider"], sess_options=so).intra_op_threads == 2
    with pytest.raises(ConfigError, match="provider_options has 2 entries"):
        runtime_options(["CPUExecutionProvider"], [{}, {}])
    with pytest.raises(ConfigError, match="keyed by provider name"):
        runtime_options(["CUDAExecutionProvider", "CPUExecutionProvider"], {"device_id": 0})


def test_gpu_request_warns_and_ctx_id_below_zero_means_cpu(env, t1, caplog) -> None:
    import onnxruntime

    from facelab.compat.insightface.app import FaceAnalysis

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this check needs an onnxruntime without CUDA (GPU granted here)")
    with caplog.at_level(logging.WARNING, logger="facelab"):
        app = FaceAnalysis(
            name="buffalo_l", root=str(env["root"]), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and all("CUDAExecutionProvider" in m and "running on CPU" in m for m in warned)
    runners = {task: model.runner for task, model in app.models.items()}
    app.prepare(ctx_id=-1, det_size=(640, 640))
    assert all(model.providers == ["CPUExecutionProvider"] for model in app.models.values())
    # Already on the CPU: nothing is reloaded except the detector, whose size changed.
    assert all(app.models[t].runner is r for t, r in runners.items() if t != "detection")
    assert len(app.get(t1)) == 6


# ---------------------------------------------------------------------------------------- the rest


def test_open_pack_through_the_same_api(env, t1: np.ndarray, monkeypatch) -> None:
    from cli_helpers import open_pack_or_skip
    from facelab.compat.insightface.app import FaceAnalysis
    from facelab.pipeline import FaceAnalyzer

    home = env["base"] / "open_home"
    monkeypatch.setenv("FACELAB_HOME", str(home))
    open_pack_or_skip(home)
    app = FaceAnalysis(name="open")
    app.prepare(ctx_id=-1)
    photo = cv2.imread(str(shared_file("data/verification/lfw_samples/Anthony_Hopkins_0001.jpg")))
    faces = app.get(photo)
    reference = FaceAnalyzer("open", home=home).analyze(photo)
    assert set(app.models) == {"detection", "landmark_5", "recognition"}
    assert len(faces) == len(reference) == 1
    for face, ref in zip(faces, reference):
        assert list(face)[:3] == ["bbox", "kps", "det_score"]
        np.testing.assert_allclose(face.bbox, ref.bbox, atol=1e-4)
        assert face.kps.shape == (5, 2)  # the open pack's MTCNN gives ArcFace-order keypoints
        np.testing.assert_allclose(face.kps, ref.kps, atol=1e-4)
        assert face.embedding.shape == (128,) and face.normed_embedding.dtype == np.float32
        np.testing.assert_allclose(face.embedding, ref.embedding, atol=1e-5)
        assert face.dlib_shape_5.shape == (5, 2)


def test_clear_errors_instead_of_asserts(env, t1: np.ndarray) -> None:
    import facelab.compat.insightface as insightface
    from facelab.compat.insightface.app import FaceAnalysis

    root = str(env["root"])
    with pytest.raises(ModelNotFoundError, match="no_such_pack"):
        FaceAnalysis(name="no_such_pack", root=root)
    with pytest.raises(ConfigError, match="must include 'detection'"):
        FaceAnalysis(name="buffalo_l", root=root, allowed_modules=["recognition"])
    with pytest.raises(ConfigError, match="unknown task 'landmarks'"):
        FaceAnalysis(name="buffalo_l", root=root, allowed_modules=["detection", "landmarks"])
    with pytest.raises(ConfigError, match="unsupported argument"):
        FaceAnalysis(name="buffalo_l", root=root, ctx=0)
    with pytest.raises(ConfigError, match="addons"):
        FaceAnalysis(name="buffalo_l", root=root, addons=["liveness"])
    empty = env["base"] / "empty_pack"
    empty.mkdir(exist_ok=True)
    with pytest.raises(ModelError):
        FaceAnalysis(name=str(empty))
    app = FaceAnalysis(name="buffalo_l", root=root, allowed_modules=["detection"])
    for bad in (None, np.zeros((0, 0, 3), np.uint8), "no/such/file.jpg"):
        with pytest.raises(ImageError):
            app.get(bad)
    with pytest.raises(ConfigError, match="metric"):
        app.get(t1, det_metric="largest")
    with pytest.raises(ModelNotFoundError, match="model file not found.*does not download"):
        insightface.model_zoo.get_model(str(env["base"] / "inswapper_missing.onnx"), download=True)
    with pytest.raises(ModelNotFoundError, match="no .onnx file"):
        insightface.model_zoo.get_model("no_such_folder", root=root)
    with pytest.raises(ConfigError, match="unsupported argument"):
        insightface.model_zoo.get_model(str(env["folder"] / "det_500m.onnx"), model_task="detection")
    bogus = env["base"] / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="bogus.onnx"):
        insightface.model_zoo.get_model(str(bogus))
    detector = insightface.model_zoo.get_model(str(env["folder"] / "det_500m.onnx"))
    with pytest.raises(ConfigError, match="unknown option"):
        detector.prepare(0, input_sizes=(640, 640))
    with pytest.raises(ConfigError, match="input_size"):
        detector.prepare(0, input_size=640)
    landmark = insightface.model_zoo.get_model(str(env["folder"] / "2d106det.onnx"))
    with pytest.raises(ConfigError, match="face.bbox"):
        landmark.get(t1, insightface.app.common.Face(kps=T1_KPS[0]))


def test_get_image(monkeypatch, tmp_path) -> None:
    from facelab.compat.insightface import data

    t1_path = shared_file("data/images/t1.jpg")
    monkeypatch.setenv(data.SAMPLE_IMAGES_ENV, str(tmp_path) + ":" + str(t1_path.parent))
    img = data.get_image("t1")
    np.testing.assert_array_equal(img, cv2.imread(str(t1_path)))
    assert data.get_image("t1") is img  # cached, as InsightFace's
    np.testing.assert_array_equal(data.get_image("t1", to_rgb=True), img[:, :, ::-1])
    np.testing.assert_array_equal(data.get_image(str(t1_path), use_cache=False), img)
    with pytest.raises(ImageError) as info:
        data.get_image("no_such_photo")
    message = str(info.value)
    assert "does not ship InsightFace's sample photos" in message and data.SAMPLE_IMAGES_ENV in message
    assert "get_image('/path/to/no_such_photo.jpg')" in message
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        data.get_image("broken")
    monkeypatch.setenv("FACELAB_MEANSHAPE_68", str(shared_file("data/landmarks/meanshape_68.pkl")))
    assert data.get_object("meanshape_68.pkl").shape == (68, 3)
    with pytest.raises(ModelNotFoundError):
        data.get_object("objects.pkl")


def test_import_facelab_does_not_load_the_layer_and_the_layer_loads_no_runtime() -> None:
    code = (
        "import sys\n"
        "import facelab\n"
        "facelab.FaceAnalyzer\n"
        "assert not [m for m in sys.modules if m.startswith('facelab.compat')], 'facelab.compat was loaded'\n"
        "import facelab.compat.insightface as insightface\n"
        "insightface.app.FaceAnalysis, insightface.model_zoo.get_model, insightface.utils.face_align.norm_crop\n"
        "from facelab.compat.insightface.model_zoo.inswapper import INSwapper\n"
        "from facelab.compat.insightface.model_zoo.arcface_onnx import ArcFaceONNX\n"
        "from facelab.compat.insightface.model_zoo.scrfd import SCRFD\n"
        "assert insightface.model_zoo.SCRFD is SCRFD and insightface.model_zoo.INSwapper is INSwapper\n"
        "heavy = [m for m in ('onnxruntime', 'onnx', 'torch', 'insightface') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert insightface.__version__ >= '0.7'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
