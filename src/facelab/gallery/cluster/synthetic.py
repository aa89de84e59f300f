"""Synthetic face libraries: identity mixtures whose similarity statistics match a real embedding set.

A face embedding is modelled as ``x = normalize(sqrt(a) m + sqrt(b_i) c_i + sqrt(g_j) e_j)``:
``m`` is one direction shared by every face (real recognisers put all faces in a cone: the open
pack's different-person pairs have cosine 0.83 on average), ``c_i`` a random direction per identity,
``e_j`` random noise per face, all unit vectors in ``D`` dimensions. ``b_i = b * exp(s_id * z_i)``
varies per identity (some people are more distinctive) and ``g_j = g * exp(s_img * z_j)`` per face
(some photos are worse), ``z`` standard normal. Then, ignoring the ``O(1/sqrt(D))`` cross terms,
different people have cosine ``≈ a`` and photos of one person ``≈ a + b`` over ``a + b + g``.

:func:`fit_mixture` chooses ``(a, b, g, s_id, s_img)`` so that the mean and standard deviation
of the same-person and different-person cosine similarities of a labelled real set are matched
(simplex search on Monte-Carlo estimates with fixed random numbers); :func:`sample_library`
draws a photo library from the fitted model: identity sizes from a heavy-tailed law (few people in
many photos, many in one or two), and group photos that put faces of distinct identities into one
image (the same-photo cannot-links).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from facelab.errors import ConfigError

__all__ = ["MixtureModel", "SyntheticLibrary", "similarity_stats", "fit_mixture", "sample_library"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MixtureModel:
    """Parameters of the identity mixture (see the module docstring).

    Attributes:
        dim: embedding dimension ``D``.
        common: ``a``, weight of the direction every face shares.
        identity: ``b``, mean weight of the identity direction.
        noise: ``g``, mean weight of the per-face noise.
        identity_spread: ``s_id``, log-normal spread of ``b`` across identities.
        image_spread: ``s_img``, log-normal spread of ``g`` across faces.
    """

    dim: int = 512
    common: float = 0.0
    identity: float = 0.6
    noise: float = 0.4
    identity_spread: float = 0.2
    image_spread: float = 0.3

    def to_dict(self) -> dict[str, float]:
        """The parameters as a JSON-ready dictionary."""
        return {k: (int(v) if k == "dim" else float(v)) for k, v in asdict(self).items()}


@dataclass
class SyntheticLibrary:
    """A drawn photo library.

    Attributes:
        embeddings: ``(N, D)`` float32, L2-normalised.
        labels: ``(N,)`` int64 identity of each face (``0..n_identities-1``).
        image_ids: ``(N,)`` int64 photo of each face; faces of one photo are distinct identities.
        model: the model the library was drawn from.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    image_ids: np.ndarray
    model: MixtureModel

    def __len__(self) -> int:
        return len(self.labels)


def similarity_stats(embeddings: np.ndarray, labels: np.ndarray, max_pairs: int = 200_000, seed: int = 0) -> dict:
    """Mean, standard deviation and quantiles of same- and different-identity cosine similarities.

    Args:
        embeddings: ``(N, D)`` embeddings (normalised here).
        labels: ``(N,)`` identity labels.
        max_pairs: sample at most this many pairs of each kind (all pairs when fewer).
        seed: sampling seed.

    Returns:
        ``{"same": {...}, "different": {...}}``, each with ``mean``, ``std``, ``q05``, ``q50``,
        ``q95`` and ``pairs``.

    Raises:
        ConfigError: no same-identity or no different-identity pair.
    """
    x = _normalise(embeddings)
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    if n * (n - 1) // 2 <= 4 * max_pairs:
        i, j = np.triu_indices(n, 1)
    else:
        i = rng.integers(0, n, 8 * max_pairs)
        j = rng.integers(0, n, 8 * max_pairs)
        keep = i != j
        i, j = i[keep], j[keep]
        # same-identity pairs are rare among random pairs: add them explicitly
        order = np.argsort(labels, kind="stable")
        starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
        sizes = np.diff(np.r_[starts, n])
        multi = np.flatnonzero(sizes > 1)
        if len(multi):
            grp = rng.choice(multi, 2 * max_pairs, p=sizes[multi] ** 2 / np.sum(sizes[multi] ** 2))
            a = starts[grp] + (rng.random(len(grp)) * sizes[grp]).astype(np.int64)
            b = starts[grp] + (rng.random(len(grp)) * sizes[grp]).astype(np.int64)
            ok = a != b
            i, j = np.r_[i, order[a[ok]]], np.r_[j, order[b[ok]]]
    sims = np.einsum("ij,ij->i", x[i], x[j])
    same = labels[i] == labels[j]
    out = {}
    for name, mask in (("same", same), ("different", ~same)):
        values = sims[mask]
        if len(values) == 0:
            raise ConfigError(f"no {name}-identity pair to measure")
        if len(values) > max_pairs:
            values = rng.choice(values, max_pairs, replace=False)
        q05, q50, q95 = np.quantile(values, [0.05, 0.5, 0.95])
        out[name] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "q05": float(q05),
            "q50": float(q50),
            "q95": float(q95),
            "pairs": int(mask.sum()),
        }
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ConfigError(f"embeddings must be (N, D), got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def _draw(
    model: MixtureModel, labels: np.ndarray, rng: np.random.Generator, chunk: int = 65536, common_dir=None
) -> np.ndarray:
    """Embeddings for faces with identity ``labels`` (identities ``0..max``), drawn in chunks."""
    n_id = int(labels.max()) + 1 if len(labels) else 0
    m = common_dir if common_dir is not None else _unit(rng, 1, model.dim)[0]
    centres = _unit(rng, n_id, model.dim)
    b = model.identity * np.exp(model.identity_spread * rng.standard_normal(n_id)).astype(np.float32)
    out = np.empty((len(labels), model.dim), np.float32)
    for s in range(0, len(labels), chunk):
        lab = labels[s : s + chunk]
        g = model.noise * np.exp(model.image_spread * rng.standard_normal(len(lab))).astype(np.float32)
        x = _unit(rng, len(lab), model.dim) * np.sqrt(g)[:, None]
        x += centres[lab] * np.sqrt(b[lab])[:, None]
        x += m * np.float32(np.sqrt(model.common))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + len(lab)] = x
    return out


def _stats_vector(model: MixtureModel, seed: int, n_id: int = 80, per_id: int = 8) -> np.ndarray:
    labels = np.repeat(np.arange(n_id), per_id)
    x = _draw(model, labels, np.random.default_rng(seed))
    s = similarity_stats(x, labels)
    return np.array([s["same"]["mean"], s["same"]["std"], s["different"]["mean"], s["different"]["std"]])


def _model_from(theta: np.ndarray, dim: int) -> MixtureModel:
    # theta: logits of (a, b, g) shares + log spreads; shares via softmax keep them positive, summing to 1
    shares = np.exp(theta[:3] - theta[:3].max())
    shares /= shares.sum()
    return MixtureModel(
        dim=dim,
        common=float(shares[0]),
        identity=float(shares[1]),
        noise=float(shares[2]),
        identity_spread=float(np.exp(theta[3])),
        image_spread=float(np.exp(theta[4])),
    )


def _nelder_mead(f, x0: np.ndarray, step: float = 0.5, iters: int = 200, tol: float = 1e-7) -> np.ndarray:
    """A plain Nelder–Mead simplex minimiser (no SciPy in the core install)."""
    n = len(x0)
    simplex = [x0] + [x0 + step * np.eye(n)[i] for i in range(n)]
    values = [f(x) for x in simplex]
    for _ in range(iters):
        order = np.argsort(values)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if values[-1] - values[0] < tol:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        worst = simplex[-1]
        reflected = centroid + (centroid - worst)
        fr = f(reflected)
        if fr < values[0]:
            expanded = centroid + 2.0 * (centroid - worst)
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = centroid + 0.5 * (worst - centroid)
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:
                best = simplex[0]
                simplex = [best] + [best + 0.5 * (x - best) for x in simplex[1:]]
                values = [values[0]] + [f(x) for x in simplex[1:]]
    return simplex[int(np.argmin(values))]


def fit_mixture(embeddings: np.ndarray, labels: np.ndarray, dim: int | None = None, seed: int = 0) -> MixtureModel:
    """Fit the mixture to a labelled real set: match same/different cosine mean and std.

    Args:
        embeddings: ``(N, D)`` real embeddings of labelled faces.
        labels: ``(N,)`` identity labels (at least one identity with two faces).
        dim: dimension of the model to fit (default ``D``); statistics are matched in that dimension,
            so a 128-d set can drive a 512-d library.
        seed: the fixed random numbers of the Monte-Carlo estimates.

    Returns:
        The fitted :class:`MixtureModel`.

    Example:
        >>> lib = sample_library(MixtureModel(dim=64), 300, seed=1)
        >>> fit = fit_mixture(lib.embeddings, lib.labels)
        >>> bool(abs(fit.identity - 0.6) < 0.15)
        True
    """
    target_stats = similarity_stats(embeddings, labels)
    target = np.array(
        [
            target_stats["same"]["mean"],
            target_stats["same"]["std"],
            target_stats["different"]["mean"],
            target_stats["different"]["std"],
        ]
    )
    dim = int(dim or np.asarray(embeddings).shape[1])
    a0 = max(target[2], 1e-3)
    b0 = max(target[0] - target[2], 1e-3)
    g0 = max(1.0 - target[0], 1e-3)
    theta0 = np.array([np.log(a0), np.log(b0), np.log(g0), np.log(0.2), np.log(0.3)])
    weights = np.array([1.0, 2.0, 1.0, 2.0])  # the spreads are smaller numbers: weigh them up

    def loss(theta: np.ndarray) -> float:
        got = _stats_vector(_model_from(theta, dim), seed)
        return float(np.sum((weights * (got - target)) ** 2))

    theta = _nelder_mead(loss, theta0, iters=150)
    model = _model_from(theta, dim)
    _logger.info("fitted %s to %s", model, target_stats)
    return model


def _identity_sizes(n_faces: int, rng: np.random.Generator, mean_size: float) -> np.ndarray:
    """Heavy-tailed identity sizes summing to ``n_faces`` (a discretised Pareto, minimum 1)."""
    sizes: list[np.ndarray] = []
    total = 0
    alpha = mean_size / max(mean_size - 1.0, 1e-6)  # Pareto(x_m=1) mean = alpha / (alpha - 1)
    while total < n_faces:
        draw = np.floor(rng.pareto(alpha, max(16, int((n_faces - total) / mean_size) + 16)) + 1).astype(np.int64)
        draw = np.minimum(draw, max(1, n_faces // 20))
        sizes.append(draw)
        total += int(draw.sum())
    out = np.concatenate(sizes)
    cut = np.searchsorted(np.cumsum(out), n_faces)
    out = out[: cut + 1]
    out[-1] -= int(out.sum()) - n_faces
    return out[out > 0]


def sample_library(
    model: MixtureModel,
    n_faces: int,
    *,
    mean_size: float = 8.0,
    group_fraction: float = 0.25,
    max_group: int = 6,
    seed: int = 0,
) -> SyntheticLibrary:
    """Draw a photo library of ``n_faces`` faces from ``model``.

    Args:
        model: the mixture.
        n_faces: number of faces.
        mean_size: mean number of faces per identity (heavy-tailed: many identities with one face).
        group_fraction: share of faces that sit in group photos (2..``max_group`` faces of
            distinct identities in one image); the others are alone in their photo.
        max_group: largest group photo.
        seed: random seed.

    Returns:
        A :class:`SyntheticLibrary` with faces in random order.
    """
    if n_faces < 1:
        raise ConfigError(f"n_faces must be positive, got {n_faces}")
    rng = np.random.default_rng(seed)
    sizes = _identity_sizes(n_faces, rng, mean_size)
    labels = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    labels = labels[rng.permutation(len(labels))]
    embeddings = _draw(model, labels, rng)
    # photos: faces in random order; a group photo takes consecutive faces with distinct identities
    image_ids = np.empty(n_faces, np.int64)
    image = 0
    i = 0
    grouped = rng.random(n_faces) < group_fraction
    while i < n_faces:
        if grouped[i]:
            size = int(rng.integers(2, max_group + 1))
            seen = set()
            j = i
            while j < n_faces and j - i < size and labels[j] not in seen:
                seen.add(int(labels[j]))
                j += 1
        else:
            j = i + 1
        image_ids[i:j] = image
        image += 1
        i = j
    return SyntheticLibrary(embeddings, labels, image_ids, model)
