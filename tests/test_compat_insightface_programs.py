"""InsightFace programs run unchanged but for their import: same output as the insightface 2.1 oracle.

Each program below is written the way InsightFace's own examples are (``examples/demo_analysis.py``,
the python-package README's quick example and "Call Detection / Recognition Models" snippets,
``examples/in_swapper/inswapper_main.py``, the CPU face-recognition and head-pose examples): it
imports ``insightface``, uses the default ``~/.insightface`` storage, ``get_image('t1')``, and
saves what it computed. The test writes each program out twice — as it is, and with its import
lines rewritten by :func:`compat_helpers.to_compat` (no other line changes) — and runs both as
real subprocesses with ``HOME`` pointing at a temporary folder whose ``.insightface/models/buffalo_l``
is the buffalo-like pack of :mod:`compat_helpers`. The saved boxes, keypoints, landmarks, pose,
gender/age, embeddings, similarities and images must agree within the core's parity tolerances.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import facelab
from cli_helpers import link_or_copy
from compat_helpers import IMPORT_LINE, assert_faces_close, build_buffalo_pack, to_compat
from onnx_builders import build_recognizer, build_swapper
from shared_data import require_module, shared_file

pytestmark = pytest.mark.oracle

# --------------------------------------------------------------------------------------- programs

DEMO_ANALYSIS = """\
import argparse

import cv2
import numpy as np
from insightface.app import FaceAnalysis
from insightface.data import get_image as ins_get_image

import insightface

assert insightface.__version__ >= "0.3"


def main(args):
    app = FaceAnalysis()
    app.prepare(ctx_id=args.ctx, det_size=(args.det_size, args.det_size))

    img = ins_get_image("t1")
    faces = app.get(img)
    assert len(faces) == 6
    rimg = app.draw_on(img, faces)
    cv2.imwrite(args.out + "t1_output.png", rimg)

    # all-to-all similarity of the normalised embeddings
    feats = np.array([face.normed_embedding for face in faces], dtype=np.float32)
    sims = np.dot(feats, feats.T)
    print(sims)
    fields = {f"{i}.{key}": np.asarray(value) for i, face in enumerate(faces) for key, value in face.items()}
    fields.update({f"{i}.sex": np.asarray(face.sex) for i, face in enumerate(faces)})
    np.savez(args.out + "result.npz", sims=sims, **fields)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="face analysis demo")
    parser.add_argument("--ctx", default=0, type=int, help="ctx id, <0 means using cpu")
    parser.add_argument("--det-size", default=640, type=int, help="detection size")
    parser.add_argument("--out", default="./")
    main(parser.parse_args())
"""

README_SNIPPETS = """\
import sys

import cv2
import numpy as np
import insightface
from insightface.app import FaceAnalysis
from insightface.data import get_image as ins_get_image

out = sys.argv[1]

# Quick example
app = FaceAnalysis(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
app.prepare(ctx_id=0, det_size=(640, 640))
img = ins_get_image("t1")
faces = app.get(img)
rimg = app.draw_on(img, faces)
cv2.imwrite(out + "t1_output.png", rimg)

# Call detection models. Method-1, use FaceAnalysis
det_app = FaceAnalysis(allowed_modules=["detection"])  # enable detection model only
det_app.prepare(ctx_id=0, det_size=(640, 640))
two = det_app.get(img, max_num=2)

# Method-2, load the model directly
detector = insightface.model_zoo.get_model("your_detection_model.onnx")
detector.prepare(ctx_id=0, input_size=(640, 640))
bboxes, kpss = detector.detect(img, max_num=3, metric="max")
auto_bboxes, _ = detector.detect(img, input_size=(0, 0))

# Call recognition models
handler = insightface.model_zoo.get_model("your_recognition_model.onnx")
handler.prepare(ctx_id=0)
feat = handler.get(img, faces[0])
crops = [insightface.utils.face_align.norm_crop(img, landmark=face.kps, image_size=112) for face in faces]
feats = handler.get_feat(crops)
sim = handler.compute_sim(feats[0], feats[1])

np.savez(
    out + "result.npz",
    bbox=np.stack([f.bbox for f in faces]),
    kps=np.stack([f.kps for f in faces]),
    det_score=np.array([f.det_score for f in faces]),
    det_only_bbox=np.stack([f.bbox for f in two]),
    det_only_keys=np.array(sorted(two[0].keys())),
    bboxes=bboxes,
    kpss=kpss,
    auto_bboxes=auto_bboxes,
    feat=feat,
    feats=feats,
    sim=np.float64(sim),
    names=np.array([handler.taskname, detector.taskname]),
    sizes=np.array([handler.input_size, detector.input_size]),
    norms=np.array([handler.input_mean, handler.input_std]),
)
"""

INSWAPPER_MAIN = """\
import sys

import cv2
import numpy as np
import insightface
from insightface.app import FaceAnalysis
from insightface.data import get_image as ins_get_image

assert insightface.__version__ >= "0.7"

if __name__ == "__main__":
    app = FaceAnalysis(name="buffalo_l")
    app.prepare(ctx_id=0, det_size=(640, 640))
    swapper = insightface.model_zoo.get_model("inswapper_128.onnx", download=True, download_zip=True)

    img = ins_get_image("t1")
    faces = app.get(img)
    faces = sorted(faces, key=lambda x: x.bbox[0])
    assert len(faces) == 6
    source_face = faces[2]
    res = img.copy()
    for face in faces:
        res = swapper.get(res, face, source_face, paste_back=True)
    cv2.imwrite(sys.argv[1] + "t1_swapped.png", res)
    crops, matrices = [], []
    for face in faces:
        _img, M = swapper.get(img, face, source_face, paste_back=False)
        crops.append(_img)
        matrices.append(M)
    np.savez(sys.argv[1] + "result.npz", swapped=res, crops=np.concatenate(crops, axis=1), matrices=np.stack(matrices))
"""

CPU_RECOGNITION_AND_POSE = """\
import json
import sys

import cv2
import numpy as np
from insightface.app import FaceAnalysis

# Initialize face analysis model on the CPU
app = FaceAnalysis(name="buffalo_l", providers=["CPUExecutionProvider"])
app.prepare(ctx_id=-1)  # ctx_id=-1 for CPU; det_size left to its default


def get_face_embedding(image_path):
    img = cv2.imread(image_path)
    if img is None:
        raise ValueError(f"Could not read image: {image_path}")
    faces = app.get(img)
    if len(faces) < 1:
        raise ValueError("No faces detected in the image")
    return faces[0].embedding


def compare_faces(emb1, emb2, threshold=0.65):
    similarity = np.dot(emb1, emb2) / (np.linalg.norm(emb1) * np.linalg.norm(emb2))
    return similarity, similarity > threshold


emb1 = get_face_embedding(sys.argv[2])
emb2 = get_face_embedding(sys.argv[3])
similarity_score, is_same_person = compare_faces(emb1, emb2)
print(f"Similarity Score: {similarity_score:.4f}")

pose_app = FaceAnalysis(allowed_modules=["detection", "landmark_3d_68"], providers=["CPUExecutionProvider"])
pose_app.prepare(ctx_id=0, det_size=(640, 640))
faces = pose_app.get(cv2.imread(sys.argv[3]))
for face in faces:
    landmark = face.landmark_3d_68
    pitch, yaw, roll = face.pose
    print("pitch: {:.2f}, yaw: {:.2f}, roll: {:.2f}".format(pitch, yaw, roll))
np.savez(
    sys.argv[1] + "result.npz",
    emb1=emb1,
    emb2=emb2,
    similarity=np.float64(similarity_score),
    landmarks=np.stack([f.landmark_3d_68 for f in faces]),
    poses=np.stack([f.pose for f in faces]),
    bbox=np.stack([f.bbox for f in faces]),
)
with open(sys.argv[1] + "keys.json", "w") as fh:
    json.dump([list(f.keys()) for f in faces], fh)
"""

PROGRAMS = {
    "demo_analysis": (DEMO_ANALYSIS, ["--ctx", "0", "--det-size", "640", "--out", "{out}"]),
    "readme_snippets": (README_SNIPPETS, ["{out}"]),
    "inswapper_main": (INSWAPPER_MAIN, ["{out}"]),
    "cpu_recognition_and_pose": (CPU_RECOGNITION_AND_POSE, ["{out}", "{t1}", "{couple}"]),
}


# ------------------------------------------------------------------------------------ machinery


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A HOME with ~/.insightface/models/buffalo_l, a working folder with single model files, and the env."""
    require_module("insightface")
    base = tmp_path_factory.mktemp("compat_programs")
    home = base / "home"
    build_buffalo_pack(home / ".insightface")
    work = base / "work"
    work.mkdir()
    link_or_copy(shared_file("models/insightface/det_500m.onnx"), work / "your_detection_model.onnx")
    build_recognizer(work / "your_recognition_model.onnx", seed=7)
    build_swapper(work / "inswapper_128.onnx")
    src = str(Path(facelab.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in ("INSIGHTFACE_HOME", "FACELAB_OFFLINE")}
    env.update(
        {
            "HOME": str(home),
            "FACELAB_HOME": str(base / "facelab_home"),
            "FACELAB_SAMPLE_IMAGES": str(shared_file("data/images")),
            "FACELAB_MEANSHAPE_68": str(shared_file("data/landmarks/meanshape_68.pkl")),
            "PYTHONPATH": os.pathsep.join([src, env.get("PYTHONPATH", "")]),
            "PYTHONWARNINGS": "ignore",
        }
    )
    paths = {
        "t1": str(shared_file("data/images/t1.jpg")),
        "couple": str(shared_file("data/verification/deepface/couple.jpg")),
    }
    return {"base": base, "work": work, "env": env, "paths": paths}


#: Runs several programs in one interpreter, each as ``__main__`` with its own ``sys.argv`` (saves
#: the interpreter and import start-up per program); prints a marker line before each.
DRIVER = """\
import json, runpy, sys
for name, script, argv in json.load(open(sys.argv[1])):
    print("=== program", name, flush=True)
    print("=== program", name, file=sys.stderr, flush=True)
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")
"""


def _split(text: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    name = None
    for line in text.splitlines(keepends=True):
        if line.startswith("=== program "):
            name = line.split()[-1]
            parts[name] = ""
        elif name is not None:
            parts[name] += line
    return parts


@pytest.fixture(scope="module")
def results(world) -> dict:
    """Every program run twice, as written and with facelab's import: ``{name: {flavour: (folder, stdout, stderr)}}``.

    One subprocess per flavour runs all programs; the two subprocesses run side by side.
    """
    procs = {}
    for flavour in ("insightface", "facelab"):
        jobs = []
        for name, (source, argv) in PROGRAMS.items():
            out = world["base"] / f"{name}_{flavour}"
            out.mkdir()
            script = out / f"{name}.py"
            script.write_text(to_compat(source) if flavour == "facelab" else source, encoding="utf-8")
            jobs.append([name, str(script), [a.format(out=str(out) + os.sep, **world["paths"]) for a in argv]])
        plan = world["base"] / f"plan_{flavour}.json"
        plan.write_text(json.dumps(jobs), encoding="utf-8")
        driver = world["base"] / "driver.py"
        driver.write_text(DRIVER, encoding="utf-8")
        procs[flavour] = subprocess.Popen(
            [sys.executable, str(driver), str(plan)],
            cwd=world["work"],
            env=world["env"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    outcome: dict = {name: {} for name in PROGRAMS}
    for flavour, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{flavour} programs failed:\n{stdout[-3000:]}\n{stderr[-3000:]}"
        outs, errs = _split(stdout), _split(stderr)
        for name in PROGRAMS:
            outcome[name][flavour] = (world["base"] / f"{name}_{flavour}", outs.get(name, ""), errs.get(name, ""))
    return outcome


def _npz(folder: Path) -> dict:
    with np.load(folder / "result.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _image(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path))
    assert img is not None, path
    return img


def _assert_images_close(ours: np.ndarray, theirs: np.ndarray, what: str, max_level: int = 0) -> None:
    assert ours.shape == theirs.shape, what
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    assert diff.max() <= max_level, f"{what}: pixels differ by up to {diff.max()} grey levels"


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_only_the_import_lines_change(name: str) -> None:
    source = PROGRAMS[name][0]
    rewritten = to_compat(source)
    changed = [(a, b) for a, b in zip(source.splitlines(), rewritten.splitlines()) if a != b]
    assert len(source.splitlines()) == len(rewritten.splitlines())
    assert changed and all(IMPORT_LINE.match(a) for a, _ in changed)
    assert all("facelab.compat.insightface" in b for _, b in changed)
    assert "import insightface\n" not in rewritten and "from insightface" not in rewritten


def test_demo_analysis_gives_the_same_faces(results) -> None:
    (theirs_dir, _, _), (ours_dir, ours_out, ours_err) = results["demo_analysis"].values()
    theirs, ours = _npz(theirs_dir), _npz(ours_dir)
    faces = sorted({k.split(".")[0] for k in theirs if "." in k}, key=int)
    assert len(faces) == 6

    def fields(d: dict, i: str) -> dict:
        return {k.split(".", 1)[1]: v for k, v in d.items() if k.startswith(f"{i}.") and k != f"{i}.sex"}

    for i in faces:
        assert_faces_close(fields(ours, i), fields(theirs, i), f"face {i}")
        assert str(ours[f"{i}.sex"]) == str(theirs[f"{i}.sex"])
    assert list(fields(ours, "0")) == [
        "bbox",
        "kps",
        "det_score",
        "landmark_3d_68",
        "pose",
        "landmark_2d_106",
        "gender",
        "age",
        "embedding",
    ]
    np.testing.assert_allclose(ours["sims"], theirs["sims"], atol=1e-5)
    assert ours["sims"].shape == (6, 6) and np.ptp(ours["sims"]) > 0.1  # the faces do differ
    _assert_images_close(_image(ours_dir / "t1_output.png"), _image(theirs_dir / "t1_output.png"), "draw_on")
    assert "Traceback" not in ours_err and "[[1." in ours_out.replace(" ", "")  # the similarity matrix printed


def test_readme_snippets_give_the_same_results(results) -> None:
    (theirs_dir, _, _), (ours_dir, _, ours_err) = results["readme_snippets"].values()
    theirs, ours = _npz(theirs_dir), _npz(ours_dir)
    assert set(ours) == set(theirs)
    assert len(theirs["bbox"]) == 6 and len(theirs["bboxes"]) == 3 and len(theirs["det_only_bbox"]) == 2
    for key in ("bbox", "kps", "det_only_bbox", "bboxes", "kpss", "auto_bboxes"):
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-3, err_msg=key)
    np.testing.assert_allclose(ours["det_score"], theirs["det_score"], atol=1e-5)
    for key in ("feat", "feats"):
        assert ours[key].shape == theirs[key].shape
        assert np.abs(ours[key] - theirs[key]).max() <= 1e-4 * np.abs(theirs[key]).max(), key
    assert float(ours["sim"]) == pytest.approx(float(theirs["sim"]), abs=1e-5)
    for key in ("det_only_keys", "names", "sizes", "norms"):
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    _assert_images_close(_image(ours_dir / "t1_output.png"), _image(theirs_dir / "t1_output.png"), "draw_on")
    # CUDA was asked for on a machine without it: facelab says so (InsightFace falls back silently).
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert "CUDAExecutionProvider" in ours_err and "running on CPU" in ours_err


def test_inswapper_main_gives_the_same_images(results) -> None:
    (theirs_dir, _, _), (ours_dir, _, _) = results["inswapper_main"].values()
    theirs, ours = _npz(theirs_dir), _npz(ours_dir)
    # As facelab's swap parity: crops and pasted images within one grey level.
    _assert_images_close(ours["crops"], theirs["crops"], "paste_back=False crops", max_level=1)
    _assert_images_close(ours["swapped"], theirs["swapped"], "paste_back=True image", max_level=1)
    np.testing.assert_allclose(ours["matrices"], theirs["matrices"], atol=5e-4)
    original = _image(Path(shared_file("data/images/t1.jpg")))
    assert (np.any(ours["swapped"] != original, axis=2)).sum() > 6 * 1000  # six faces were replaced


def test_cpu_recognition_and_pose_give_the_same_results(results) -> None:
    (theirs_dir, _, _), (ours_dir, ours_out, _) = results["cpu_recognition_and_pose"].values()
    theirs, ours = _npz(theirs_dir), _npz(ours_dir)
    for key in ("emb1", "emb2"):
        assert np.abs(ours[key] - theirs[key]).max() <= 1e-4 * np.abs(theirs[key]).max(), key
    assert float(ours["similarity"]) == pytest.approx(float(theirs["similarity"]), abs=1e-5)
    assert len(theirs["bbox"]) == 2
    for key, atol in (("bbox", 1e-3), ("landmarks", 5e-3), ("poses", 1e-3)):  # see assert_faces_close
        np.testing.assert_allclose(ours[key], theirs[key], atol=atol, err_msg=key)
    keys = json.loads((ours_dir / "keys.json").read_text())
    assert keys == json.loads((theirs_dir / "keys.json").read_text())
    assert keys[0] == ["bbox", "kps", "det_score", "landmark_3d_68", "pose"]
    assert "pitch:" in ours_out and "Similarity Score:" in ours_out
