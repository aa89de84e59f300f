"""Training data: RecordIO / image-folder / synthetic datasets, flip, normalisation, seeded sharded sampling.

Datasets yield ``(image, label)`` with ``image`` a ``(H, W, 3)`` ``uint8`` **BGR** tensor (the
facelab image convention) and ``label`` an int. Normalisation happens on whole batches, on the
training device, with :func:`normalize_batch`, whose constants come from a
:class:`~facelab.ops.normalize.Normalization` (for ArcFace models
:data:`~facelab.ops.normalize.INSIGHTFACE_ARCFACE`: RGB, ``(x − 127.5) / 127.5``). Horizontal
flips are decided by ``(seed, epoch, index)`` so runs and resumed runs see the same augmentation
whatever the number of workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from facelab.errors import ConfigError
from facelab.io.image import load_image
from facelab.ops.normalize import INSIGHTFACE_ARCFACE, Normalization
from facelab.train.recordio import RecordIOError, RecordReader, scan_image_folder

__all__ = [
    "normalize_batch",
    "RecordIODataset",
    "ImageFolderDataset",
    "SyntheticDataset",
    "ShardSampler",
    "build_dataset",
]

_logger = logging.getLogger(__name__)


def normalize_batch(images: torch.Tensor, norm: Normalization = INSIGHTFACE_ARCFACE) -> torch.Tensor:
    """Turn ``(N, H, W, 3)`` ``uint8`` BGR images into the network's ``(N, 3, H, W)`` float32 input.

    The torch twin of :func:`facelab.ops.normalize.to_tensor`: channels reordered to
    ``norm.color_order``, then ``(x − norm.mean) / norm.std`` with the same constants.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError(f"normalize_batch: expected (N, H, W, 3) images, got {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2).float()
    if norm.color_order == "RGB":
        x = x.flip(1)
    mean = torch.tensor(norm.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


class _FlipMixin:
    seed: int = 0
    epoch: int = 0
    flip: bool = True

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose flips are drawn (the sampler's epoch)."""
        self.epoch = int(epoch)

    def _maybe_flip(self, image: np.ndarray, index: int) -> np.ndarray:
        if self.flip and np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5:
            return np.ascontiguousarray(image[:, ::-1])
        return image


class RecordIODataset(_FlipMixin, torch.utils.data.Dataset):
    """Images of an InsightFace ``train.rec`` / ``train.idx`` pair (label = header label or ``label[0]``).

    Args:
        rec_path: the ``.rec`` file, or a folder holding ``train.rec`` and ``train.idx``.
        flip: random horizontal flip with probability 0.5.
        seed: seed of the flips.
    """

    def __init__(self, rec_path: str | Path, flip: bool = True, seed: int = 0) -> None:
        path = Path(rec_path)
        if path.is_dir():
            path = path / "train.rec"
        self.reader = RecordReader(path)
        self.keys = self.reader.image_keys()
        if not self.keys:
            raise RecordIOError(f"{path}: no image records")
        self.flip, self.seed = flip, seed
        self._labels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        header, data = self.reader.read_header(self.keys[index])
        label = header.label[0] if isinstance(header.label, tuple) else header.label
        image = self._maybe_flip(load_image(data), index)
        return torch.from_numpy(image), int(label)

    @property
    def num_classes(self) -> int:
        """Number of identities: ``label[1] − label[0]`` of the header record, else ``max(label) + 1``."""
        if self._labels is None and 0 in self.reader.offsets:
            header, _ = self.reader.read_header(0)
            if header.flag >= 2:
                return int(header.label[1] - header.label[0])  # type: ignore[index]
        if self._labels is None:
            labels = []
            for key in self.keys:
                h, _ = self.reader.read_header(key)
                labels.append(int(h.label[0] if isinstance(h.label, tuple) else h.label))
            self._labels = labels
        return max(self._labels) + 1


class ImageFolderDataset(_FlipMixin, torch.utils.data.Dataset):
    """Images of a folder with one sub-folder per identity (labels by sorted folder name)."""

    def __init__(self, root: str | Path, flip: bool = True, seed: int = 0) -> None:
        self.items = scan_image_folder(root)
        self.num_classes = self.items[-1][1] + 1
        self.flip, self.seed = flip, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        return torch.from_numpy(self._maybe_flip(load_image(path), index)), label


class SyntheticDataset(_FlipMixin, torch.utils.data.Dataset):
    """Random but learnable data: each class has a fixed random image; samples add seeded noise.

    Args:
        num_classes: number of classes; sample ``i`` has label ``i % num_classes``.
        length: number of samples.
        image_size: side of the square images.
        seed: seed of the class images and the noise.
    """

    def __init__(self, num_classes: int, length: int, image_size: int = 112, seed: int = 0, flip: bool = False) -> None:
        if num_classes < 1 or length < 1:
            raise ConfigError(f"synthetic data needs num_classes >= 1 and length >= 1, got {num_classes}, {length}")
        self.num_classes, self.length, self.size, self.seed, self.flip = num_classes, length, image_size, seed, flip

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = index % self.num_classes
        base = np.random.default_rng([self.seed, label]).integers(0, 256, (self.size, self.size, 3))
        noise = np.random.default_rng([self.seed, label, index]).integers(-20, 21, base.shape)
        image = np.clip(base + noise, 0, 255).astype(np.uint8)
        return torch.from_numpy(self._maybe_flip(image, index)), label


class ShardSampler(torch.utils.data.Sampler):
    """Seeded, sharded, resumable sampler: each epoch one permutation of the dataset, split over ranks.

    Rank ``r`` takes positions ``r, r + W, r + 2W, ...`` of the epoch's permutation (seeded by
    ``seed + epoch``), truncated so every rank gets ``num_samples`` indices (a multiple of
    ``batch_size``; the tail is dropped). ``set_position(epoch, start)`` skips the first ``start``
    samples of this rank's share — how a resumed run continues where it stopped.
    """

    def __init__(
        self, length: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True
    ) -> None:
        per_rank = length // world_size
        self.num_samples = per_rank // batch_size * batch_size
        if self.num_samples == 0:
            raise ConfigError(
                f"dataset of {length} samples is too small for batch_size {batch_size} x {world_size} ranks"
            )
        self.length, self.rank, self.world_size, self.seed, self.shuffle = length, rank, world_size, seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning."""
        self.set_position(epoch, 0)

    def set_position(self, epoch: int, start: int) -> None:
        """Start epoch ``epoch`` at sample ``start`` of this rank's share."""
        self.epoch, self.start = int(epoch), int(start)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(
                self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch)
            ).tolist()
        else:
            order = list(range(self.length))
        mine = order[self.rank :: self.world_size][: self.num_samples]
        return iter(mine[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def build_dataset(
    rec: str = "",
    folder: str = "",
    synthetic: bool = False,
    num_classes: int = 0,
    seed: int = 0,
    flip: bool = True,
    synthetic_length: int = 10000,
    image_size: int = 112,
) -> torch.utils.data.Dataset:
    """Pick the dataset a config names: ``synthetic`` or ``rec == "synthetic"``, else ``rec``, else ``folder``."""
    if synthetic or rec == "synthetic":
        if num_classes < 1:
            raise ConfigError("synthetic data needs num_classes >= 1")
        return SyntheticDataset(num_classes, synthetic_length, image_size, seed, flip)
    if rec:
        return RecordIODataset(rec, flip, seed)
    if folder:
        return ImageFolderDataset(folder, flip, seed)
    raise ConfigError("no training data: set rec=PATH, folder=PATH or synthetic=true")
