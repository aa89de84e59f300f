"""``small_dataset.tar`` (10 aligned faces, labels 0-9) unpacked as one sub-folder per identity."""

from __future__ import annotations

import tarfile
from pathlib import Path

import shared_data


def unpack_identity_folders(root: Path) -> tuple[Path, list[tuple[Path, int]]]:
    """Unpack the tar under ``root`` into ``root/ids/idNNN/<image>`` (from its ``label.txt``).

    Returns:
        The ``ids`` folder and the ``(image path, label)`` pairs in ``label.txt`` order.
    """
    tar = shared_data.shared_file("data/recognition/small_dataset.tar")
    with tarfile.open(tar) as tf:
        tf.extractall(root, filter="data")
    base = root / "small_dataset"
    folder = root / "ids"
    pairs = []
    for line in (base / "label.txt").read_text().splitlines():
        rel, label = line.split("\t")
        dst = folder / f"id{int(label):03d}" / rel.split("/")[-1]
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((base / rel).read_bytes())
        pairs.append((dst, int(label)))
    return folder, pairs
