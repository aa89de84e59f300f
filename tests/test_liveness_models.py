"""MiniFASNet liveness: our ONNX graphs against a torch reference, the original's crops, and real spoof/live photos.

Boxes for the photos come from InsightFace's SCRFD-500M (``models/insightface/det_500m.onnx``).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shared_data import require_module, shared_file

torch = require_module("torch")
ort = require_module("onnxruntime")

from facelab.convert.torch_reader import StateDict  # noqa: E402
from facelab.detection import create_detector  # noqa: E402
from facelab.errors import ConfigError, ImageError, ModelError  # noqa: E402
from facelab.io.image import load_image  # noqa: E402
from facelab.liveness import LIVENESS_THRESHOLD, LivenessRunner  # noqa: E402
from facelab.liveness.crop import silentface_box, silentface_crop, xyxy_to_silentface  # noqa: E402
from facelab.liveness.minifasnet import build_minifasnet_onnx, convert_minifasnet  # noqa: E402
from facelab.zoo import get_pack  # noqa: E402
from minifasnet_reference import load_reference  # noqa: E402

MODELS = {
    "minifasnet_v2": ("models/silentface/2.7_80x80_MiniFASNetV2.pth", "v2"),
    "minifasnet_v1se": ("models/silentface/4_0_0_80x80_MiniFASNetV1SE.pth", "v1se"),
}
SPOOFS = [
    "models/silentface/samples/image_F1.jpg",  # printed photo
    "models/silentface/samples/image_F2.jpg",  # photo on a tablet
    "data/images/inspireface/bulk/rgb_fake.jpg",  # photo of a computer screen
]
LIVE = "models/silentface/samples/image_T1.jpg"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("liveness_home")


@pytest.fixture(scope="module")
def members():
    pack = get_pack("liveness")
    return [(card, shared_file(MODELS[card.arch][0])) for card in pack.models]


@pytest.fixture(scope="module")
def runner(members, home):
    return LivenessRunner.from_cards(members, home=home)


@pytest.fixture(scope="module")
def scrfd():
    return create_detector(shared_file("models/insightface/det_500m.onnx"))


@pytest.mark.parametrize("arch", list(MODELS))
def test_onnx_equals_the_torch_reference(arch, members, home):
    relative, variant = MODELS[arch]
    card = next(c for c, _ in members if c.arch == arch)
    onnx_path, info = convert_minifasnet(shared_file(relative), card, home)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "prob"]
    assert session.get_inputs()[0].shape[1:] == [3, 80, 80]
    model = load_reference(shared_file(relative), variant)  # strict load: every layer's name and shape
    image = load_image(shared_file(LIVE))
    crops = np.stack([cv2.resize(image[100:400, 80:330], (80, 80)), cv2.resize(image[:240, :240], (80, 80))])
    rng = np.random.default_rng(0)
    for x in (
        crops.transpose(0, 3, 1, 2).astype(np.float32),  # BGR 0..255, as the original feeds it
        rng.uniform(0, 255, (5, 3, 80, 80)).astype(np.float32),
    ):
        logits, prob = session.run(None, {"input": x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x))
        np.testing.assert_allclose(logits, ref.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(prob, torch.softmax(ref, dim=1).numpy(), atol=1e-5, rtol=0)
    assert info["extra"]["source_sha256"] == card.files[0].sha256
    assert info["license"].startswith("Apache-2.0")


def test_conversion_is_cached_and_checked(members, home, tmp_path):
    card, pth = members[0]
    first, _ = convert_minifasnet(pth, card, home)
    stamp = first.stat().st_mtime_ns
    again, _ = convert_minifasnet(pth, card, home)
    assert again == first and again.stat().st_mtime_ns == stamp  # reused, not rebuilt
    with pytest.raises(ModelError, match="has no squeeze-and-excitation blocks, so it is not minifasnet_v1se"):
        build_minifasnet_onnx(StateDict.load(pth), "minifasnet_v1se")
    with pytest.raises(ConfigError, match="unknown MiniFASNet"):
        build_minifasnet_onnx(StateDict.load(pth), "minifasnet_v9")
    with pytest.raises(ModelError, match="does not fit a 112x112 input"):
        build_minifasnet_onnx(StateDict.load(pth), "minifasnet_v2", input_size=112)
    with pytest.raises(ModelError, match="not found"):
        convert_minifasnet(tmp_path / "none.pth", card, home)


def test_crop_box_facts():
    # facelab corners -> the original's [x, y, w, h] (its detector's int(left), int(right - left + 1), ...)
    assert xyxy_to_silentface([10.7, 20.2, 50.9, 80.0]) == (10, 20, 41, 60)
    # centred, scaled 2.7: 135 x 162 around (125, 130)
    assert silentface_box((100, 100, 50, 60), 640, 480, 2.7) == (57, 49, 192, 211)
    # shifted inside at the left/top and at the right/bottom, size kept
    assert silentface_box((0, 0, 50, 60), 640, 480, 2.7) == (0, 0, 135, 162)
    assert silentface_box((600, 430, 40, 50), 640, 480, 4.0) == (479, 279, 639, 479)
    # scale reduced so the crop fits: min(4.0, 479 / 200, 639 / 300) = 2.13 -> 639 x 426, then shifted
    assert silentface_box((100, 100, 300, 200), 640, 480, 4.0) == (0, 0, 639, 426)
    with pytest.raises(ConfigError, match="not finite"):
        xyxy_to_silentface([0, 0, np.nan, 5])


def test_crop_pixels_are_the_inclusive_slice_resized():
    image = load_image(shared_file(LIVE))
    box = [117.4, 109.8, 296.2, 351.0]
    x1, y1, x2, y2 = silentface_box(xyxy_to_silentface(box), image.shape[1], image.shape[0], 2.7)
    want = cv2.resize(image[y1 : y2 + 1, x1 : x2 + 1], (80, 80), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(silentface_crop(image, box, 2.7, 80), want)


def test_original_sample_results_are_reproduced(runner):
    """The repository's sample results (images/sample/*_result.jpg) with the original's own boxes.

    The boxes ([x, y, w, h]) were read from the rectangles its test.py drew; the printed scores are
    ``prediction[label] / 2``: F1 "FakeFace Score: 0.73", F2 "FakeFace Score: 0.82", T1
    "RealFace Score: 0.99".
    """
    for name, (x, y, w, h), live, printed in [
        ("image_F1.jpg", (178, 136, 223, 225), False, 0.73),
        ("image_F2.jpg", (120, 252, 252, 256), False, 0.82),
        ("image_T1.jpg", (106, 147, 207, 213), True, 0.99),
    ]:
        image = load_image(shared_file(f"models/silentface/samples/{name}"))
        result = runner.check(image, [[x, y, x + w - 1, y + h - 1]])[0]
        assert (result.label == 1) == live, name
        assert round(result.probs[result.label], 2) == printed, (name, result.probs)


@pytest.mark.parametrize("relative", SPOOFS + [LIVE])
def test_spoofs_and_live_face_at_the_threshold(runner, scrfd, relative):
    image = load_image(shared_file(relative))
    dets = scrfd.detect(image)
    assert len(dets) == 1
    (result,) = runner.check(image, dets.boxes)
    assert result.threshold == LIVENESS_THRESHOLD == 0.5
    assert result.is_live == (relative == LIVE), (relative, result)
    assert (result.label == 1) == result.is_live  # the original's argmax agrees here
    assert result.score == pytest.approx(result.probs[1])
    assert sum(result.probs) == pytest.approx(1.0, abs=1e-5)
    assert set(result.model_scores) == {"minifasnet_v2.silentface", "minifasnet_v1se.silentface"}
    assert result.score == pytest.approx(np.mean(list(result.model_scores.values())), abs=1e-6)
    if relative == LIVE:
        assert result.score > 0.95
    else:
        assert result.score < 0.35


def test_batched_across_images_equals_one_by_one(runner, scrfd):
    images = [load_image(shared_file(p)) for p in SPOOFS + [LIVE]]
    boxes = [scrfd.detect(im).boxes for im in images]
    boxes[0] = np.concatenate([boxes[0], boxes[0] + [5, -3, 8, 2]])  # two faces in one image
    boxes.insert(1, np.zeros((0, 4), np.float32))
    images.insert(1, images[0])  # an image without faces
    batched = LivenessRunner(runner.models, batch_size=3).predict(images, boxes)
    assert [len(r) for r in batched] == [len(b) for b in boxes]
    for image, image_boxes, results in zip(images, boxes, batched):
        for box, result in zip(image_boxes, results):
            alone = runner.check(image, box[None])[0]
            assert result.score == pytest.approx(alone.score, abs=1e-5)
            assert result.label == alone.label


def test_threshold_and_bad_input(members, home, runner):
    image = load_image(shared_file(LIVE))
    strict = LivenessRunner.from_cards(members, home=home, threshold=0.9999)
    box = [[117, 109, 296, 351]]
    assert runner.check(image, box)[0].is_live and not strict.check(image, box)[0].is_live
    assert runner.check(image, np.zeros((0, 4))) == []
    with pytest.raises(ConfigError, match="threshold"):
        LivenessRunner(runner.models, threshold=1.5)
    with pytest.raises(ConfigError, match=r"shape \(N, 4\)"):
        runner.check(image, [1, 2, 3])
    with pytest.raises(ConfigError, match="not finite"):
        runner.check(image, [[0, 0, np.inf, 10]])
    with pytest.raises(ImageError, match="expected an"):
        runner.check(np.zeros((10, 10), np.uint8), box)
    assert runner.check(image, [[-50, -40, 30, 20]])[0].probs  # a box partly outside the image still crops


def test_result_is_json_safe(runner):
    import json

    image = load_image(shared_file(LIVE))
    result = runner.check(image, [[117, 109, 296, 351]])[0]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["is_live"] is True and data["label"] == 1 and len(data["probs"]) == 3
