"""dlib's shape predictor (an ensemble of regression trees, Kazemi & Sullivan 2014): reader and model.

A ``shape_predictor_*.dat`` file holds (see dlib's ``image_processing/shape_predictor.h``):

* the integer version ``1``;
* ``initial_shape``: a column ``matrix<float>`` of ``2*K`` values ``x0, y0, x1, y1, ...`` in the
  normalised face-box space where the box's top-left corner is ``(0, 0)`` and its bottom-right
  corner is ``(1, 1)``;
* ``forests``: ``vector<vector<regression_tree>>``, one forest per cascade level. A tree is a
  complete binary tree stored as ``splits`` (``vector<split_feature>``: ``idx1``, ``idx2`` as
  unsigned integers and ``thresh`` as float; node ``i`` has children ``2i+1`` / ``2i+2``) and
  ``leaf_values`` (``vector<matrix<float,0,1>>``, each a ``2*K`` shape increment);
* ``anchor_idx``: ``vector<vector<unsigned long>>``, per level and feature pixel, the index of the
  shape point the pixel is anchored to;
* ``deltas``: ``vector<vector<vector<float,2>>>``, per level and feature pixel, the pixel's offset
  ``(dx, dy)`` from its anchor point in the normalised space of ``initial_shape``.

The numpy evaluator (:func:`predict`) follows dlib's ``shape_predictor::operator()``.
"""

from __future__ import annotations

import io
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.convert.cache import atomic_write
from facelab.convert.dlib_reader import DlibReader, compose_floats, read_model_bytes
from facelab.errors import ConfigError, ImageError, ModelError

__all__ = [
    "RegressionTree",
    "ShapePredictorModel",
    "load_shape_predictor",
    "parse_shape_predictor",
    "predict",
    "predict_many",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegressionTree:
    """One complete binary regression tree.

    Attributes:
        split_idx1: ``(S,)`` int64, first feature-pixel index of each split node.
        split_idx2: ``(S,)`` int64, second feature-pixel index of each split node.
        split_thresh: ``(S,)`` float32; at node ``i`` go left (``2i+1``) when
            ``pixel[idx1] - pixel[idx2] > thresh``, else right (``2i+2``).
        leaf_values: ``(L, 2K)`` float32 shape increments, ``L == S + 1``.
    """

    split_idx1: np.ndarray
    split_idx2: np.ndarray
    split_thresh: np.ndarray
    leaf_values: np.ndarray

    @property
    def num_splits(self) -> int:
        """Number of split (internal) nodes."""
        return int(self.split_thresh.shape[0])

    @property
    def num_leaves(self) -> int:
        """Number of leaves."""
        return int(self.leaf_values.shape[0])


@dataclass(frozen=True)
class ShapePredictorModel:
    """A parsed dlib shape predictor.

    Attributes:
        initial_shape: ``(K, 2)`` float32 mean shape, ``(x, y)`` in the unit face-box space.
        forests: one list of :class:`RegressionTree` per cascade level.
        anchor_idx: per level, ``(F,)`` int64 index of the shape point each feature pixel hangs on.
        deltas: per level, ``(F, 2)`` float32 offsets ``(dx, dy)`` of the feature pixels from their
            anchors, in the space of ``initial_shape``.
        source: the file the model came from (for messages).
    """

    initial_shape: np.ndarray
    forests: list[list[RegressionTree]]
    anchor_idx: list[np.ndarray]
    deltas: list[np.ndarray]
    source: str = ""

    @property
    def num_parts(self) -> int:
        """Number of landmarks ``K``."""
        return int(self.initial_shape.shape[0])

    @property
    def cascade_depth(self) -> int:
        """Number of cascade levels (forests)."""
        return len(self.forests)

    @property
    def num_trees_per_level(self) -> int:
        """Trees in the first forest (dlib trains the same number at every level)."""
        return len(self.forests[0]) if self.forests else 0

    @property
    def feature_pool_size(self) -> int:
        """Feature pixels sampled per level (of the first level)."""
        return int(self.anchor_idx[0].shape[0]) if self.anchor_idx else 0

    @property
    def tree_depth(self) -> int:
        """Depth of the trees (``log2`` of the leaf count of the first tree)."""
        if not self.forests or not self.forests[0]:
            return 0
        return int(np.log2(self.forests[0][0].num_leaves))


class _Tokens:
    """The integers of a shape predictor file (every field is an integer or a float pair)."""

    def __init__(self, reader: DlibReader) -> None:
        self.reader = reader
        self.values, self.offsets = reader.read_int_tokens(what="the shape predictor")
        self.pos = 0

    def error(self, message: str) -> ModelError:
        where = int(self.offsets[self.pos]) if self.pos < len(self.offsets) else len(self.reader.data)
        return self.reader.error(message, where)

    def take(self, count: int, what: str) -> np.ndarray:
        if count < 0 or self.pos + count > len(self.values):
            self.pos = len(self.values)
            raise self.error(f"file is truncated: {what} runs past the end of the data")
        out = self.values[self.pos : self.pos + count]
        self.pos += count
        return out

    def one(self, what: str, unsigned: bool = True) -> int:
        value = int(self.take(1, what)[0])
        if unsigned and value < 0:
            self.pos -= 1
            raise self.error(f"negative {what} {value}")
        return value


def _floats(pairs: np.ndarray) -> np.ndarray:
    """``(..., 2*n)`` interleaved (mantissa, exponent) integers -> ``(..., n)`` float32."""
    return compose_floats(pairs[..., 0::2], pairs[..., 1::2], np.float32)


def parse_shape_predictor(data: bytes, source: str = "<memory>") -> ShapePredictorModel:
    """Parse the bytes of a dlib ``shape_predictor`` file.

    Args:
        data: the file contents.
        source: name for error messages.

    Returns:
        The parsed :class:`ShapePredictorModel`.

    Raises:
        ModelError: the data is not a dlib shape predictor, is truncated or inconsistent (the
            message names ``source`` and a byte offset).
    """
    reader = DlibReader(data, source)
    reader.expect_int(1, "shape_predictor version (is this a dlib shape predictor file?)")
    tokens = _Tokens(reader)  # decodes every remaining integer in one pass
    nr = abs(int(tokens.take(1, "initial_shape rows")[0]))
    nc = abs(int(tokens.take(1, "initial_shape columns")[0]))
    if nc != 1 or nr == 0 or nr % 2:
        tokens.pos -= 2
        raise tokens.error(f"initial shape is {nr}x{nc}, expected a column of a positive even size")
    initial = _floats(tokens.take(2 * nr, "initial_shape"))
    parts2 = nr
    leaf_width = 2 + 2 * parts2  # matrix rows, columns, then the (mantissa, exponent) pairs
    num_levels = tokens.one("cascade depth")
    if num_levels > 10000:
        raise tokens.error(f"implausible cascade depth {num_levels}")
    # Per tree: the split block (S, 4) and the leaf block (L, leaf_width) as raw integers; the
    # floats are composed once per level.
    raw_levels: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for _ in range(num_levels):
        num_trees = tokens.one("number of trees in a forest")
        trees = []
        for _ in range(num_trees):
            num_splits = tokens.one("number of splits of a regression tree")
            splits = tokens.take(4 * num_splits, "the splits of a regression tree").reshape(num_splits, 4)
            num_leaves = tokens.one("number of leaves of a regression tree")
            if num_leaves != num_splits + 1:
                tokens.pos -= 1
                raise tokens.error(f"a regression tree with {num_splits} splits has {num_leaves} leaves")
            leaves = tokens.take(num_leaves * leaf_width, "the leaves of a regression tree")
            leaves = leaves.reshape(num_leaves, leaf_width)
            if (np.abs(leaves[:, 0]) != parts2).any() or (np.abs(leaves[:, 1]) != 1).any():
                raise tokens.error(f"a leaf value is not a {parts2}x1 matrix")
            trees.append((splits, leaves))
        raw_levels.append(trees)
    forests: list[list[RegressionTree]] = []
    for trees in raw_levels:
        forest = []
        if trees:
            thresholds = _floats(np.concatenate([s[:, 2:4] for s, _ in trees]))[:, 0]
            leaf_values = _floats(np.concatenate([leaf[:, 2:] for _, leaf in trees]))
            t0 = l0 = 0
            for splits, leaves in trees:
                if (splits[:, :2] < 0).any():
                    raise reader.error("a split feature index is negative")
                n_s, n_l = splits.shape[0], leaves.shape[0]
                forest.append(
                    RegressionTree(
                        splits[:, 0].copy(), splits[:, 1].copy(), thresholds[t0 : t0 + n_s], leaf_values[l0 : l0 + n_l]
                    )
                )
                t0 += n_s
                l0 += n_l
        forests.append(forest)
    if tokens.one("number of anchor_idx levels") != num_levels:
        tokens.pos -= 1
        raise tokens.error(f"anchor_idx does not have {num_levels} levels")
    anchor_idx = []
    for _ in range(num_levels):
        count = tokens.one("number of anchors")
        anchors = tokens.take(count, "anchor_idx").copy()
        if (anchors < 0).any():
            raise tokens.error("a negative anchor index")
        anchor_idx.append(anchors)
    if tokens.one("number of deltas levels") != num_levels:
        tokens.pos -= 1
        raise tokens.error(f"deltas does not have {num_levels} levels")
    deltas = []
    for level in range(num_levels):
        count = tokens.one("number of deltas")
        if count != anchor_idx[level].shape[0]:
            tokens.pos -= 1
            raise tokens.error(f"level {level}: {count} deltas for {anchor_idx[level].shape[0]} anchors")
        deltas.append(_floats(tokens.take(4 * count, "deltas")).reshape(count, 2))
    if tokens.pos != len(tokens.values):
        raise tokens.error(f"{len(tokens.values) - tokens.pos} unexpected trailing value(s) after the shape predictor")
    num_parts = parts2 // 2
    for level in range(num_levels):
        if anchor_idx[level].size and int(anchor_idx[level].max()) >= num_parts:
            raise ModelError(f"{source}: level {level} anchors a feature to a point beyond the {num_parts} parts")
        pool = anchor_idx[level].shape[0]
        for tree in forests[level]:
            if tree.num_splits and (int(tree.split_idx1.max()) >= pool or int(tree.split_idx2.max()) >= pool):
                raise ModelError(f"{source}: level {level} has a split on a feature beyond the pool of {pool}")
    return ShapePredictorModel(initial.reshape(-1, 2).copy(), forests, anchor_idx, deltas, source)


#: Bumped when the layout of the parsed-model cache changes.
_CACHE_VERSION = 1


def _cache_file(folder: Path, source_sha: str) -> Path:
    return folder / f"shape_predictor.{source_sha[:32]}.v{_CACHE_VERSION}.npz"


def _save_cache(model: ShapePredictorModel, path: Path) -> None:
    """Store the model as stacked arrays (only when every level has trees of one shape)."""
    shapes = {(len(f), t.num_splits, t.num_leaves) for f in model.forests for t in f}
    pools = {a.shape[0] for a in model.anchor_idx}
    if len(shapes) != 1 or len(pools) != 1:
        return
    arrays = {
        "initial_shape": model.initial_shape,
        "idx1": np.stack([np.stack([t.split_idx1 for t in f]) for f in model.forests]),
        "idx2": np.stack([np.stack([t.split_idx2 for t in f]) for f in model.forests]),
        "thresh": np.stack([np.stack([t.split_thresh for t in f]) for f in model.forests]),
        "leaves": np.stack([np.stack([t.leaf_values for t in f]) for f in model.forests]),
        "anchor_idx": np.stack(model.anchor_idx),
        "deltas": np.stack(model.deltas),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def _load_cache(path: Path, source: str) -> ShapePredictorModel | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        forests = [
            [
                RegressionTree(a["idx1"][lv, t], a["idx2"][lv, t], a["thresh"][lv, t], a["leaves"][lv, t])
                for t in range(a["idx1"].shape[1])
            ]
            for lv in range(a["idx1"].shape[0])
        ]
        return ShapePredictorModel(a["initial_shape"], forests, list(a["anchor_idx"]), list(a["deltas"]), source)
    except (OSError, KeyError, ValueError, IndexError) as exc:
        logger.warning("ignoring unreadable shape predictor cache %s: %s", path, exc)
        return None


def load_shape_predictor(path: str | Path, cache_dir: str | Path | None = None) -> ShapePredictorModel:
    """Read a dlib ``shape_predictor_*.dat`` file.

    Parsing dlib's variable-length encoding takes a second or more in Python; with ``cache_dir``
    the parsed arrays are kept in ``<cache_dir>/shape_predictor.<sha256 prefix>.v1.npz`` (keyed by
    the SHA-256 of the ``.dat`` file, written atomically) and later loads read that instead.

    Args:
        path: the ``.dat`` file (e.g. ``shape_predictor_5_face_landmarks.dat``).
        cache_dir: folder for the parsed-model cache (e.g. ``$FACELAB_HOME/converted``), or
            ``None`` for no cache.

    Returns:
        The parsed :class:`ShapePredictorModel`.

    Raises:
        ModelNotFoundError: the file does not exist.
        ModelError: the file is not a dlib shape predictor, or is truncated or corrupt.
    """
    data, source = read_model_bytes(path)
    cache = None
    if cache_dir is not None:
        import hashlib

        cache = _cache_file(Path(cache_dir), hashlib.sha256(data).hexdigest())
        if cache.is_file():
            model = _load_cache(cache, source)
            if model is not None:
                return model
    model = parse_shape_predictor(data, source)
    if cache is not None:
        try:
            _save_cache(model, cache)
        except OSError as exc:
            logger.warning("cannot write the shape predictor cache %s: %s", cache, exc)
    logger.debug(
        "loaded shape predictor %s: %d parts, %d levels x %d trees, %d feature pixels",
        source,
        model.num_parts,
        model.cascade_depth,
        model.num_trees_per_level,
        model.feature_pool_size,
    )
    return model


# ---------------------------------------------------------------------------------------------
# Evaluator: predict(model, image, rect) -> (K, 2)
# ---------------------------------------------------------------------------------------------
#
# dlib's shape_predictor::operator() (facts from dlib/image_processing/shape_predictor.h):
#   current = initial_shape
#   for each cascade level:
#       M = similarity transform (Umeyama) from initial_shape to current, as float32
#       for each feature pixel i: p = unnormalise(M @ delta_i + current[anchor_i]), rounded to the
#           nearest integer pixel; its value is the pixel intensity there ((R + G + B) // 3 for
#           colour) or 0 outside the image
#       for each tree: walk from the root, going left when f[idx1] - f[idx2] > thresh; add the
#           leaf's shape increment to current
#   parts = unnormalise(current), rounded to integer pixels
# "unnormalise" maps (0, 0) to the rectangle's top-left corner and (1, 1) to its bottom-right
# corner (dlib rectangles are inclusive: right = left + width - 1).
# Below, every tree of a level is evaluated at once for every face (numpy gathers over a
# (faces, trees) array of node indices), which gives the same leaves as dlib's loop.


class _StackedLevel:
    """The trees of one cascade level as dense arrays (all trees of a level have equal depth)."""

    def __init__(self, trees: list[RegressionTree], anchors: np.ndarray, deltas: np.ndarray) -> None:
        depths = {t.num_splits for t in trees}
        if len(depths) != 1:
            raise ModelError("shape predictor: the trees of one cascade level differ in size")
        self.num_splits = depths.pop()
        self.depth = int(round(np.log2(self.num_splits + 1)))
        if (1 << self.depth) - 1 != self.num_splits:
            raise ModelError(f"shape predictor: a tree with {self.num_splits} splits is not complete")
        self.idx1 = np.stack([t.split_idx1 for t in trees]).astype(np.int64)  # (T, S)
        self.idx2 = np.stack([t.split_idx2 for t in trees]).astype(np.int64)
        self.thresh = np.stack([t.split_thresh for t in trees]).astype(np.float32)
        self.leaves = np.stack([t.leaf_values for t in trees]).astype(np.float32)  # (T, L, 2K)
        self.anchors = np.asarray(anchors, np.int64)
        self.deltas = np.asarray(deltas, np.float32)
        num_trees = self.idx1.shape[0]
        # Flat copies for fast gathers: node n of tree t is entry t * S + n; leaf l is t * L + l.
        self.split_base = (np.arange(num_trees, dtype=np.int64) * self.num_splits)[None, :]
        self.leaf_base = (np.arange(num_trees, dtype=np.int64) * self.leaves.shape[1])[None, :]
        self.idx1_flat = self.idx1.reshape(-1)
        self.idx2_flat = self.idx2.reshape(-1)
        self.thresh_flat = self.thresh.reshape(-1)
        self.leaves_flat = self.leaves.reshape(-1, self.leaves.shape[2])


_STACKED: dict[int, list[_StackedLevel]] = {}


def _stacked(model: ShapePredictorModel) -> list[_StackedLevel]:
    key = id(model)
    levels = _STACKED.get(key)
    if levels is None:
        levels = [
            _StackedLevel(trees, model.anchor_idx[i], model.deltas[i]) for i, trees in enumerate(model.forests) if trees
        ]
        _STACKED[key] = levels
        weakref.finalize(model, _STACKED.pop, key, None)
    return levels


def _similarity_matrices(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """``(N, 2, 2)`` float32 linear part of the Umeyama similarity ``reference -> current[n]``."""
    ref = reference.astype(np.float64)
    cur = current.astype(np.float64)
    ref_c = ref - ref.mean(axis=0)
    cur_c = cur - cur.mean(axis=1, keepdims=True)
    k = ref.shape[0]
    sigma = float((ref_c**2).sum()) / k
    cov = np.einsum("nki,kj->nij", cur_c, ref_c) / k  # (N, 2, 2): sum (to - mean)(from - mean)^T
    u, d, vt = np.linalg.svd(cov)
    s = np.ones((cov.shape[0], 2))
    flip = np.linalg.det(cov) < 0
    s[flip, 1] = -1.0  # numpy sorts singular values descending: flip the smaller one
    rot = u @ (s[:, :, None] * vt)
    scale = (d * s).sum(axis=1) / sigma if sigma != 0 else np.ones(cov.shape[0])
    return (scale[:, None, None] * rot).astype(np.float32)


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or img.size == 0:
        raise ImageError(
            f"shape predictor needs a non-empty (H, W) or (H, W, 3) uint8 image, got {img.dtype} {img.shape}"
        )
    return img


def _intensity_at(img: np.ndarray, py: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Grey values at integer pixels (``float32``); dlib's colour-to-grey is the integer mean of the channels."""
    values = img[py, px]
    if img.ndim == 2:
        return values.astype(np.float32)
    return (values.astype(np.uint16).sum(axis=-1) // 3).astype(np.float32)


def _round_half_up(values: np.ndarray) -> np.ndarray:
    """Round as dlib converts float points to integer ones: ``floor(v + 0.5)``."""
    return np.floor(values + 0.5)


def predict_many(
    model: ShapePredictorModel, image: np.ndarray, rects: np.ndarray, *, round_points: bool = False
) -> np.ndarray:
    """Run the shape predictor on several face rectangles of one image.

    Args:
        model: a parsed predictor (:func:`load_shape_predictor`).
        image: ``(H, W)`` ``uint8`` grayscale or ``(H, W, 3)`` ``uint8`` colour image (BGR or
            RGB: dlib's grey value is the integer mean of the channels, so the order is
            irrelevant).
        rects: ``(N, 4)`` dlib rectangles ``[left, top, right, bottom]`` in pixels, inclusive
            corners (dlib's ``rectangle``; an ``[x1, y1, x2, y2]`` box with exclusive right/bottom
            edges corresponds to ``[x1, y1, x2 - 1, y2 - 1]``). Values are rounded to integers
            as dlib's ``rectangle`` holds integers.
        round_points: round the result to integer pixels as dlib's ``full_object_detection``
            does (``floor(v + 0.5)``); otherwise return the unrounded positions.

    Returns:
        ``(N, K, 2)`` ``float32`` landmark positions ``(x, y)`` in image pixels.

    Raises:
        ImageError: the image is not ``uint8`` grey or 3-channel.
        ConfigError: ``rects`` is not ``(N, 4)``.
    """
    img = _check_image(image)
    boxes = np.asarray(rects, dtype=np.float64)
    if boxes.ndim == 1 and boxes.shape[0] == 4:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
        raise ConfigError(f"shape predictor rectangles must be a finite (N, 4) array, got shape {boxes.shape}")
    n = boxes.shape[0]
    k = model.num_parts
    if n == 0:
        return np.zeros((0, k, 2), np.float32)
    boxes = _round_half_up(boxes)
    origin = boxes[:, None, :2]  # (N, 1, 2)
    extent = (boxes[:, 2:] - boxes[:, :2])[:, None, :]  # (N, 1, 2): right - left, bottom - top
    h, w = img.shape[:2]
    reference = model.initial_shape.astype(np.float32)
    current = np.broadcast_to(reference, (n, k, 2)).copy()
    for level in _stacked(model):
        m = _similarity_matrices(reference, current)  # (N, 2, 2) float32
        offsets = np.einsum("nij,fj->nfi", m, level.deltas)  # float32
        pts = offsets + current[:, level.anchors, :]  # (N, F, 2) float32, normalised space
        pix = _round_half_up(origin + pts.astype(np.float64) * extent)
        px = pix[..., 0].astype(np.int64)
        py = pix[..., 1].astype(np.int64)
        inside = (px >= 0) & (py >= 0) & (px < w) & (py < h)
        feats = np.where(inside, _intensity_at(img, np.clip(py, 0, h - 1), np.clip(px, 0, w - 1)), np.float32(0))
        node = np.zeros((n, level.idx1.shape[0]), np.int64)
        feats_flat = feats.reshape(-1)
        row_offset = (np.arange(n, dtype=np.int64) * feats.shape[1])[:, None]
        for _ in range(level.depth):
            flat = level.split_base + node
            a = feats_flat[row_offset + level.idx1_flat[flat]]
            b = feats_flat[row_offset + level.idx2_flat[flat]]
            node = 2 * node + np.where(a - b > level.thresh_flat[flat], 1, 2)
        leaf = node - level.num_splits  # (N, T)
        increments = level.leaves_flat[level.leaf_base + leaf]  # (N, T, 2K)
        # dlib adds the trees' increments one by one in float32; a float32 cumulative sum that
        # starts from the current shape keeps that order of additions.
        chain = np.concatenate([current.reshape(n, 1, 2 * k), increments], axis=1)
        current = np.cumsum(chain, axis=1, dtype=np.float32)[:, -1].reshape(n, k, 2)
    out = origin + current.astype(np.float64) * extent
    if round_points:
        out = _round_half_up(out)
    return out.astype(np.float32)


def predict(
    model: ShapePredictorModel,
    image: np.ndarray,
    rect: tuple[float, float, float, float] | np.ndarray,
    *,
    round_points: bool = False,
) -> np.ndarray:
    """Run the shape predictor on one face rectangle (dlib's ``shape_predictor::operator()``).

    Args:
        model: a parsed predictor.
        image: ``(H, W)`` ``uint8`` grey or ``(H, W, 3)`` ``uint8`` BGR/RGB image.
        rect: dlib rectangle ``(left, top, right, bottom)`` in pixels, inclusive corners.
        round_points: round to integer pixels as dlib does.

    Returns:
        ``(K, 2)`` ``float32`` landmark positions ``(x, y)`` in pixels. For the 5-point model
        the order is dlib's: outer and inner corner of the eye on the image right, outer and
        inner corner of the eye on the image left, bottom of the nose.
    """
    return predict_many(model, image, np.asarray(rect, dtype=np.float64).reshape(1, 4), round_points=round_points)[0]
