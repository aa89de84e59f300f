"""RecordIO without mxnet: pack a real image folder and read it back; read a hand-built reference file."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import shared_data
from facelab.train.recordio import (
    IRHeader,
    RecordIOError,
    RecordReader,
    RecordWriter,
    pack_image_folder,
    pack_record,
    scan_image_folder,
    unpack_record,
)
from small_dataset import unpack_identity_folders


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """small_dataset.tar's 10 images laid out as one sub-folder per identity (label.txt)."""
    return unpack_identity_folders(tmp_path_factory.mktemp("small"))


def test_pack_real_folder_and_read_back_identical_bytes(small_folder, tmp_path):
    folder, pairs = small_folder
    n = pack_image_folder(folder, tmp_path / "train")
    assert n == 10
    reader = RecordReader(tmp_path / "train.rec")
    keys = reader.image_keys()
    assert keys == list(range(1, 11))
    got = {}
    for key in keys:
        header, data = reader.read_header(key)
        assert header.flag == 0
        got[data] = header.label
    assert {p.read_bytes(): float(label) for p, label in pairs} == got
    h0, rest = reader.read_header(0)
    assert (h0.flag, h0.label, h0.id2, rest) == (2, (11.0, 21.0), 1, b"")
    h_id, _ = reader.read_header(11)  # identity record of class 0
    assert h_id.label == (1.0, 2.0)
    assert (tmp_path / "property").read_text() == "10,112,112\n"
    # .idx is 'key\toffset' text and every offset points at a magic word
    raw = (tmp_path / "train.rec").read_bytes()
    for line in (tmp_path / "train.idx").read_text().splitlines():
        key, off = map(int, line.split("\t"))
        assert struct.unpack_from("<I", raw, off)[0] == 0xCED7230A


def _reference_record(payload: bytes) -> bytes:
    lrec = len(payload)  # cflag 0
    return struct.pack("<II", 0xCED7230A, lrec) + payload + b"\0" * (-len(payload) % 4)


def test_read_rec_written_byte_by_byte_in_reference_layout(tmp_path):
    img_a = b"\xff\xd8fake-jpeg-A"  # 13 bytes -> 3 bytes padding after the header
    img_b = b"PNGDATA!"
    recs = [
        struct.pack("<IfQQ", 2, 0.0, 0, 1) + struct.pack("<ff", 3.0, 5.0),  # header record
        struct.pack("<IfQQ", 0, 7.0, 1, 0) + img_a,
        struct.pack("<IfQQ", 3, 0.0, 2, 0) + struct.pack("<fff", 4.0, 0.5, 0.25) + img_b,
        struct.pack("<IfQQ", 2, 0.0, 3, 0) + struct.pack("<ff", 1.0, 3.0),
        struct.pack("<IfQQ", 2, 0.0, 4, 0) + struct.pack("<ff", 3.0, 3.0),
    ]
    blob, idx = b"", ""
    for key, r in enumerate(recs):
        idx += f"{key}\t{len(blob)}\n"
        blob += _reference_record(r)
    (tmp_path / "t.rec").write_bytes(blob)
    (tmp_path / "t.idx").write_text(idx)
    reader = RecordReader(tmp_path / "t.rec")
    assert reader.image_keys() == [1, 2]
    h1, d1 = reader.read_header(1)
    assert (h1.flag, h1.label, h1.id, d1) == (0, 7.0, 1, img_a)
    h2, d2 = reader.read_header(2)
    assert (h2.flag, h2.label, d2) == (3, (4.0, 0.5, 0.25), img_b)
    # our writer produces the very same bytes
    with RecordWriter(tmp_path / "w.rec") as w:
        for key, r in enumerate(recs):
            w.write(key, r)
    assert (tmp_path / "w.rec").read_bytes() == blob
    assert (tmp_path / "w.idx").read_text() == idx


def test_split_record_when_payload_contains_magic(tmp_path):
    magic = struct.pack("<I", 0xCED7230A)
    payload = b"abcd" + magic + b"efgh" + magic + b"xy"
    with RecordWriter(tmp_path / "s.rec") as w:
        w.write(0, payload)
    raw = (tmp_path / "s.rec").read_bytes()
    flags = []
    pos = 0
    while pos < len(raw):
        _, lrec = struct.unpack_from("<II", raw, pos)
        flags.append(lrec >> 29)
        pos += 8 + (lrec & (2**29 - 1)) + (-(lrec & (2**29 - 1)) % 4)
    assert flags == [1, 2, 3]
    assert RecordReader(tmp_path / "s.rec").read(0) == payload


def test_pack_unpack_roundtrip():
    rec = pack_record(IRHeader(0, 3.0, 9, 0), b"img")
    assert len(rec) == 27
    assert unpack_record(rec) == (IRHeader(0, 3.0, 9, 0), b"img")


def test_truncated_rec_and_mismatched_idx_are_clear_errors(tmp_path):
    with RecordWriter(tmp_path / "a.rec") as w:
        w.write(0, pack_record(IRHeader(0, 1.0), b"x" * 100))
        w.write(1, pack_record(IRHeader(0, 2.0), b"y" * 100))
    raw = (tmp_path / "a.rec").read_bytes()
    (tmp_path / "a.rec").write_bytes(raw[:-40])
    reader = RecordReader(tmp_path / "a.rec")
    with pytest.raises(RecordIOError, match="truncated"):
        reader.read(1)
    (tmp_path / "a.rec").write_bytes(raw)
    (tmp_path / "a.idx").write_text("0\t0\n1\t12\n")
    with pytest.raises(RecordIOError, match="magic"):
        RecordReader(tmp_path / "a.rec").read(1)
    (tmp_path / "a.idx").write_text("0\t0\n1\t99999\n")
    with pytest.raises(RecordIOError, match="beyond the end"):
        RecordReader(tmp_path / "a.rec")
    with pytest.raises(RecordIOError, match="no record with key 5"):
        reader.read(5)


def test_empty_class_folder_is_an_error(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "1.jpg").write_bytes(b"x")
    (tmp_path / "bob").mkdir()
    with pytest.raises(RecordIOError, match="bob.*no images"):
        scan_image_folder(tmp_path)
    with pytest.raises(RecordIOError, match="no identity sub-folders"):
        scan_image_folder(tmp_path / "alice")


def test_datasets_decode_flip_and_normalise(small_folder, tmp_path):
    torch = shared_data.require_module("torch")
    from facelab.ops.normalize import INSIGHTFACE_ARCFACE, to_tensor
    from facelab.train.data import ImageFolderDataset, RecordIODataset, normalize_batch

    folder, _ = small_folder
    pack_image_folder(folder, tmp_path / "train")
    rec = RecordIODataset(tmp_path, flip=False)
    fol = ImageFolderDataset(folder, flip=False)
    assert len(rec) == len(fol) == 10 and rec.num_classes == fol.num_classes == 10
    img, label = rec[0]
    img2, label2 = fol[0]
    assert img.shape == (112, 112, 3) and img.dtype == torch.uint8
    assert label == label2 and torch.equal(img, img2)
    flipped = RecordIODataset(tmp_path, flip=True, seed=1)
    flips = [not torch.equal(flipped[i][0], rec[i][0]) for i in range(10)]
    assert 0 < sum(flips) < 10
    assert all(torch.equal(flipped[i][0], rec[i][0].flip(1)) for i in range(10) if flips[i])
    batch = torch.stack([rec[i][0] for i in range(3)])
    ours = normalize_batch(batch, INSIGHTFACE_ARCFACE).numpy()
    np.testing.assert_allclose(ours, to_tensor(batch.numpy(), INSIGHTFACE_ARCFACE), atol=1e-6)
    # (x/255 - 0.5) / 0.5 on RGB
    rgb = batch.numpy()[..., ::-1].transpose(0, 3, 1, 2).astype(np.float64)
    np.testing.assert_allclose(ours, (rgb / 255 - 0.5) / 0.5, atol=1e-5)


def test_recordio_dataset_in_worker_processes(small_folder, tmp_path):
    torch = shared_data.require_module("torch")
    from facelab.train.data import RecordIODataset, ShardSampler

    folder, _ = small_folder
    pack_image_folder(folder, tmp_path / "train")
    ds = RecordIODataset(tmp_path / "train.rec", flip=True, seed=3)
    sampler = ShardSampler(len(ds), 5, seed=7)
    direct = [ds[i] for i in sampler]
    loader = torch.utils.data.DataLoader(ds, batch_size=5, sampler=sampler, num_workers=2, drop_last=True)
    batches = list(loader)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches]).tolist()
    assert labels == [lab for _, lab in direct]
    assert torch.equal(images, torch.stack([img for img, _ in direct]))
