"""IJB-B / IJB-C template-based 1:1 verification and 1:N identification, as InsightFace evaluates them.

Inputs are the official meta files under ``<root>/meta`` (``<t>`` is ``ijbb`` or ``ijbc``):

* ``<t>_face_tid_mid.txt``: ``image_name template_id media_id`` per face;
* ``<t>_template_pair_label.txt``: ``template1 template2 label`` per 1:1 pair;
* ``<t>_name_5pts_score.txt``: ``image_name x1 y1 ... x5 y5 faceness_score`` per face (same order);
* ``<t>_1N_gallery_G1.csv`` / ``_G2.csv`` (IJB-B: ``_S1`` / ``_S2``) and ``<t>_1N_probe_mixed.csv``:
  a header row, then ``TEMPLATE_ID,SUBJECT_ID,...``;
* crops in ``<root>/loose_crop``.

Procedure (InsightFace ``eval_ijbc.py``, test mode N1 D1 F2): a face's feature is the embedding
of the aligned crop plus that of its mirror, **not** normalised, times the faceness score. Within
a template, faces of the same media are averaged, media features summed, and the sum
L2-normalised. A pair's score is the cosine of its templates. TAR@FAR is read from the ROC at
the point whose FAR is closest to the target (:func:`~facelab.eval.metrics.tar_at_far_closest`);
the strict rule of :func:`~facelab.eval.metrics.tar_at_far` is reported too.

1:N: per gallery (G1, G2) the probes whose subject is enrolled are *mated*. Rank-k is the
fraction of mated probes whose subject's gallery template is among the ``k`` highest scores
(rank = 1 + number of gallery templates scoring strictly higher). TPIR at FPIR ``f``: the
threshold lets through at most ``floor(f * n)`` of the ``n`` non-mated probes' top scores; TPIR
is the fraction of mated probes found at rank 1 with a score above it. ``"G1+G2"`` is
InsightFace's ``ijb_1n.py`` setting: both galleries together, every probe mated.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.eval.metrics import DEFAULT_FARS, roc_auc, tar_at_far, tar_at_far_closest

__all__ = [
    "IJBMeta",
    "read_face_tid_mid",
    "read_template_pair_label",
    "read_name_5pts_score",
    "read_template_subject_csv",
    "load_ijb_meta",
    "ijb_face_features",
    "template_features",
    "template_pair_scores",
    "GRAM_DENSITY",
    "evaluate_ijb_11",
    "evaluate_ijb_1n",
    "identification_metrics",
]

_logger = logging.getLogger(__name__)


def _read_columns(path: Path, min_cols: int) -> list[list[str]]:
    if not path.is_file():
        raise ConfigError(f"{path}: IJB meta file not found")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < min_cols:
                raise ConfigError(f"{path}: line {n} has {len(fields)} fields, expected at least {min_cols}")
            rows.append(fields)
    return rows


def read_face_tid_mid(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read ``*_face_tid_mid.txt``: ``(names, template_ids (N,) int64, media_ids (N,) int64)``."""
    p = Path(path)
    names, t, m = [], [], []
    try:
        for fields in _read_columns(p, 3):
            names.append(fields[0])
            t.append(int(fields[1]))
            m.append(int(fields[2]))
    except ValueError as exc:
        raise ConfigError(f"{p}: template and media ids must be integers: {exc}") from exc
    return names, np.array(t, np.int64), np.array(m, np.int64)


def read_template_pair_label(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``*_template_pair_label.txt``: ``(t1, t2, label)``, ``int64`` arrays.

    The whole file is parsed as whitespace-separated integers in one call (IJB-C has 15.7M lines).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: IJB meta file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (instead of raising) on a non-integer token
            data = np.fromstring(p.read_bytes().decode("ascii"), dtype=np.int64, sep=" ")
    except (UnicodeDecodeError, ValueError, DeprecationWarning) as exc:
        raise ConfigError(f"{p}: unreadable pair file: {exc}") from exc
    if data.size % 3:
        raise ConfigError(f"{p}: expected 3 integers per line (template1 template2 label)")
    data = data.reshape(-1, 3)
    return data[:, 0].copy(), data[:, 1].copy(), data[:, 2].copy()


def read_name_5pts_score(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read ``*_name_5pts_score.txt``: ``(names, landmarks (N, 5, 2) float32, faceness (N,) float32)``."""
    p = Path(path)
    names, lmk, score = [], [], []
    try:
        for fields in _read_columns(p, 12):
            names.append(fields[0])
            lmk.append([float(v) for v in fields[1:11]])
            score.append(float(fields[-1]))
    except ValueError as exc:
        raise ConfigError(f"{p}: unreadable landmark or score: {exc}") from exc
    return names, np.array(lmk, np.float32).reshape(-1, 5, 2), np.array(score, np.float32)


def read_template_subject_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a 1:N gallery/probe CSV (header row; first columns ``TEMPLATE_ID,SUBJECT_ID``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: IJB 1:N file not found")
    t, s = [], []
    with open(p) as f:
        lines = f.read().splitlines()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            t.append(int(fields[0]))
            s.append(int(fields[1]))
        except (IndexError, ValueError) as exc:
            raise ConfigError(f"{p}: line {n}: expected TEMPLATE_ID,SUBJECT_ID,...") from exc
    return np.array(t, np.int64), np.array(s, np.int64)


@dataclass
class IJBMeta:
    """The meta data of one IJB target.

    Attributes:
        target: ``"IJBB"`` or ``"IJBC"``.
        root: dataset root (with ``meta/`` and ``loose_crop/``).
        names: ``N`` face image names.
        templates: ``(N,)`` template id of each face.
        medias: ``(N,)`` media id of each face.
        landmarks: ``(N, 5, 2)`` five points in the loose crop, or ``None``.
        faceness: ``(N,)`` detector scores, or ``None``.
        pairs: ``(t1, t2, label)`` of the 1:1 protocol, or ``None``.
        galleries: ``{"G1": (templates, subjects), "G2": ...}`` (IJB-B names them S1/S2).
        probes: ``(templates, subjects)`` of the mixed probe set, or ``None``.
    """

    target: str
    root: Path
    names: list[str]
    templates: np.ndarray
    medias: np.ndarray
    landmarks: np.ndarray | None = None
    faceness: np.ndarray | None = None
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    galleries: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    probes: tuple[np.ndarray, np.ndarray] | None = None


def load_ijb_meta(root: str | os.PathLike, target: str = "IJBC") -> IJBMeta:
    """Read the meta files of ``target`` under ``<root>/meta`` (optional files may be absent).

    Raises:
        ConfigError: unknown target, missing ``face_tid_mid`` file, or files that disagree.
    """
    target = target.upper()
    if target not in ("IJBB", "IJBC"):
        raise ConfigError(f"target must be IJBB or IJBC, not {target!r}")
    root = Path(root)
    meta = root / "meta"
    t = target.lower()
    names, templates, medias = read_face_tid_mid(meta / f"{t}_face_tid_mid.txt")
    landmarks = faceness = None
    lmk_file = meta / f"{t}_name_5pts_score.txt"
    if lmk_file.is_file():
        lmk_names, landmarks, faceness = read_name_5pts_score(lmk_file)
        if len(lmk_names) != len(names):
            raise ConfigError(
                f"{lmk_file}: {len(lmk_names)} faces but {t}_face_tid_mid.txt lists {len(names)} "
                "(they must match row by row)"
            )
        if lmk_names != names:
            # InsightFace pairs the two files by row; say so when the names do not agree
            _logger.warning("%s and %s_face_tid_mid.txt name their faces differently; pairing them by row", lmk_file, t)
    pair_file = meta / f"{t}_template_pair_label.txt"
    pairs = read_template_pair_label(pair_file) if pair_file.is_file() else None
    suffixes = ("G1", "G2") if target == "IJBC" else ("S1", "S2")
    galleries = {}
    for k, suffix in enumerate(suffixes):
        f = meta / f"{t}_1N_gallery_{suffix}.csv"
        if f.is_file():
            galleries[f"G{k + 1}"] = read_template_subject_csv(f)
    probe_file = meta / f"{t}_1N_probe_mixed.csv"
    probes = read_template_subject_csv(probe_file) if probe_file.is_file() else None
    return IJBMeta(target, root, names, templates, medias, landmarks, faceness, pairs, galleries or None, probes)


def ijb_face_features(
    meta: IJBMeta,
    embed: Callable[[np.ndarray], np.ndarray],
    *,
    batch_size: int = 128,
    flip: bool = True,
    image_size: int = 112,
    progress: bool = False,
) -> np.ndarray:
    """Embed every face of an IJB set: align the loose crop with its five points, embed it and its mirror.

    Args:
        meta: from :func:`load_ijb_meta` (needs ``landmarks``).
        embed: ``(B, S, S, 3)`` uint8 BGR aligned crops → ``(B, D)``.
        batch_size: crops per call.
        flip: add the mirrored crop's embedding (InsightFace's F2 mode).
        image_size: crop side.
        progress: progress bar.

    Returns:
        ``(N, D)`` ``float32`` un-normalised face features, in meta order.
    """
    from facelab.alignment.transform import norm_crop
    from facelab.io.image import load_image

    if meta.landmarks is None:
        raise ConfigError("IJB features need the *_name_5pts_score.txt landmark file")
    crop_dir = meta.root / "loose_crop"
    n = len(meta.names)
    out: np.ndarray | None = None
    starts = range(0, n, batch_size)
    iterator: Any = starts
    if progress:
        from tqdm import tqdm

        iterator = tqdm(starts, total=len(starts), desc=f"{meta.target} faces", unit="batch")
    for start in iterator:
        idx = range(start, min(start + batch_size, n))
        crops = np.stack([norm_crop(load_image(crop_dir / meta.names[i]), meta.landmarks[i], image_size) for i in idx])
        feats = np.asarray(embed(crops), dtype=np.float32)
        if flip:
            feats = feats + np.asarray(embed(np.ascontiguousarray(crops[:, :, ::-1])), dtype=np.float32)
        if out is None:
            out = np.zeros((n, feats.shape[1]), np.float32)
        out[start : start + len(feats)] = feats
    if out is None:
        raise ConfigError("the IJB meta lists no faces")
    return out


def template_features(
    features: np.ndarray,
    templates: np.ndarray,
    medias: np.ndarray,
    faceness: np.ndarray | None = None,
    *,
    normalize_faces: bool = False,
    chunk: int = 32768,
) -> tuple[np.ndarray, np.ndarray]:
    """Media-then-template pooling of face features.

    ``template = normalize(sum over media of mean over the media's faces of (score * feature))``,
    computed in one pass as a weighted sum with weight ``score / faces_in_media``.

    Args:
        features: ``(N, D)`` face features (float32 or float64; read in chunks, never copied whole).
        templates: ``(N,)`` template ids.
        medias: ``(N,)`` media ids.
        faceness: ``(N,)`` detector scores to weight by (``None``: weight 1).
        normalize_faces: L2-normalise each face feature first (InsightFace's N0 mode; default N1 keeps the norm).
        chunk: faces per gathered block.

    Returns:
        ``(unique_templates (T,) int64 sorted, template_features (T, D) float64 unit rows)``.
    """
    feats = features
    n = len(feats)
    templates = np.asarray(templates, np.int64).reshape(-1)
    medias = np.asarray(medias, np.int64).reshape(-1)
    if len(templates) != n or len(medias) != n:
        raise ConfigError(f"{n} features but {len(templates)} template ids and {len(medias)} media ids")
    order = np.lexsort((medias, templates))
    t_sorted, m_sorted = templates[order], medias[order]
    new_group = np.r_[True, (t_sorted[1:] != t_sorted[:-1]) | (m_sorted[1:] != m_sorted[:-1])]
    group_id = np.cumsum(new_group) - 1
    group_size = np.bincount(group_id)
    weight = 1.0 / group_size[group_id]
    if faceness is not None:
        weight = weight * np.asarray(faceness, np.float64).reshape(-1)[order]
    t_start = np.r_[True, t_sorted[1:] != t_sorted[:-1]]
    starts = np.flatnonzero(t_start)
    unique_templates = t_sorted[starts]
    out = np.zeros((len(starts), feats.shape[1]), np.float64)
    bounds = np.r_[starts, n]
    k = 0
    while k < len(starts):
        # take whole templates up to about `chunk` faces
        stop = int(np.searchsorted(bounds, bounds[k] + chunk, side="right")) - 1
        stop = max(stop, k + 1)
        stop = min(stop, len(starts))
        lo, hi = bounds[k], bounds[stop]
        block = np.asarray(feats[order[lo:hi]], dtype=np.float64)
        if normalize_faces:
            block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        block *= weight[lo:hi, None]
        out[k:stop] = np.add.reduceat(block, bounds[k:stop] - lo, axis=0)
        k = stop
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return unique_templates, out


def _rows(unique_templates: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    pos = np.searchsorted(unique_templates, ids)
    pos = np.minimum(pos, len(unique_templates) - 1)
    bad = unique_templates[pos] != ids
    if bad.any():
        raise ConfigError(f"{int(bad.sum())} {what} template ids have no faces (first: {int(ids[bad][0])})")
    return pos


#: ``method="auto"`` uses the blocked Gram matrix when pairs exceed this fraction of all template pairs.
GRAM_DENSITY = 0.015


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="block")


def template_pair_scores(
    unique_templates: np.ndarray,
    template_feats: np.ndarray,
    t1: np.ndarray,
    t2: np.ndarray,
    *,
    method: str = "auto",
    batch: int = 2048,
    block_rows: int = 256,
    dtype: type = np.float32,
    progress: bool = False,
) -> np.ndarray:
    """Cosine score of each template pair.

    Two equivalent computations: ``"gather"`` takes the two feature rows of each pair (cost
    proportional to the number of pairs); ``"gram"`` sorts the pairs by first template and
    multiplies blocks of ``block_rows`` templates with all templates, reading each pair's score
    from the block (BLAS speed, cost proportional to templates squared; better for dense protocols
    such as IJB-C's 15.7M pairs over 23k templates). ``"auto"`` picks ``"gram"`` when the pairs
    exceed :data:`GRAM_DENSITY` of all template pairs.

    Args:
        unique_templates: ``(T,)`` sorted template ids (from :func:`template_features`).
        template_feats: ``(T, D)`` unit template features.
        t1: ``(P,)`` first template ids.
        t2: ``(P,)`` second template ids.
        method: ``"auto"``, ``"gather"`` or ``"gram"``.
        batch: pairs per gathered block.
        block_rows: templates per Gram block.
        dtype: arithmetic type (``float32`` is faster; ``float64`` as InsightFace).
        progress: progress bar.

    Returns:
        ``(P,)`` ``float64`` scores.
    """
    if method not in ("auto", "gather", "gram"):
        raise ConfigError(f"method must be 'auto', 'gather' or 'gram', not {method!r}")
    i1 = _rows(unique_templates, np.asarray(t1, np.int64), "pair")
    i2 = _rows(unique_templates, np.asarray(t2, np.int64), "pair")
    feats = np.ascontiguousarray(template_feats, dtype=dtype)
    n_t = len(feats)
    scores = np.empty(len(i1), np.float64)
    if method == "auto":
        method = "gram" if len(i1) > GRAM_DENSITY * n_t * n_t else "gather"
    if method == "gather":
        starts = range(0, len(i1), batch)
        for s in _progress(starts, len(starts), "pairs", progress):
            scores[s : s + batch] = np.einsum("ij,ij->i", feats[i1[s : s + batch]], feats[i2[s : s + batch]])
        return scores
    order = np.argsort(i1, kind="stable")
    first = i1[order]
    bounds = np.searchsorted(first, np.arange(0, n_t + block_rows, block_rows))
    blocks = range(0, n_t, block_rows)
    for k, row0 in enumerate(_progress(blocks, len(blocks), "template blocks", progress)):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        gram = feats[row0 : row0 + block_rows] @ feats.T
        sel = order[lo:hi]
        scores[sel] = gram[first[lo:hi] - row0, i2[sel]]
    return scores


def evaluate_ijb_11(scores: np.ndarray, labels: np.ndarray, fars: Sequence[float] = DEFAULT_FARS) -> dict[str, Any]:
    """TAR@FAR of IJB 1:1 pair scores.

    Returns:
        ``{"tar_at_far": {far: tar}`` (InsightFace's closest-ROC-point rule),
        ``"tar_at_far_strict": {far: TarAtFar dict}``, ``"auc"``, ``"n_pairs"``, ``"n_genuine"``, ``"n_impostor"}``.
    """
    y = np.asarray(labels).astype(bool)
    closest = tar_at_far_closest(y, scores, fars)
    strict = tar_at_far(y, scores, fars)
    return {
        "tar_at_far": {f"{k:g}": v for k, v in closest.items()},
        "tar_at_far_strict": {f"{t.far_target:g}": t.to_dict() for t in strict},
        "auc": roc_auc(y, scores),
        "n_pairs": int(len(y)),
        "n_genuine": int(y.sum()),
        "n_impostor": int((~y).sum()),
    }


def identification_metrics(
    similarity: np.ndarray,
    probe_subjects: np.ndarray,
    gallery_subjects: np.ndarray,
    *,
    ranks: Sequence[int] = (1, 5, 10),
    fpirs: Sequence[float] = (0.01, 0.1),
) -> dict[str, Any]:
    """Open-set identification metrics from a probe x gallery similarity matrix.

    Args:
        similarity: ``(P, G)`` scores.
        probe_subjects: ``(P,)`` subject id of each probe.
        gallery_subjects: ``(G,)`` subject id of each gallery template (a subject may have several;
            its best-scoring template counts).
        ranks: CMC ranks to report.
        fpirs: false-positive identification rates for TPIR.

    Returns:
        ``{"rank": {k: rate}, "tpir_at_fpir": {f: rate or "insufficient non-mated probes"},
        "n_mated": ..., "n_nonmated": ...}``.
    """
    sim = np.asarray(similarity, np.float64)
    probe_subjects = np.asarray(probe_subjects)
    gallery_subjects = np.asarray(gallery_subjects)
    if sim.shape != (len(probe_subjects), len(gallery_subjects)):
        raise ConfigError(
            f"similarity {sim.shape} does not match {len(probe_subjects)} probes x {len(gallery_subjects)} gallery"
        )
    subjects, col = np.unique(gallery_subjects, return_inverse=True)
    # subject-level score: best template of each subject
    by_subject = np.argsort(col, kind="stable")
    firsts = np.searchsorted(col[by_subject], np.arange(len(subjects)))
    subj_sim = np.maximum.reduceat(sim[:, by_subject], firsts, axis=1)
    pos = np.searchsorted(subjects, probe_subjects)
    pos = np.minimum(pos, len(subjects) - 1)
    mated = subjects[pos] == probe_subjects
    out: dict[str, Any] = {"n_mated": int(mated.sum()), "n_nonmated": int((~mated).sum())}
    rank_out = {}
    if mated.any():
        m_sim = subj_sim[mated]
        m_score = m_sim[np.arange(len(m_sim)), pos[mated]]
        rank = 1 + (m_sim > m_score[:, None]).sum(axis=1)
        for k in ranks:
            rank_out[str(k)] = float(np.mean(rank <= k))
    out["rank"] = rank_out
    tpir: dict[str, Any] = {}
    if mated.any():
        nm_top = np.sort(subj_sim[~mated].max(axis=1))[::-1] if (~mated).any() else np.zeros(0)
        for f in fpirs:
            if f * len(nm_top) < 1 - 1e-9:
                tpir[f"{f:g}"] = "insufficient non-mated probes"
                continue
            k = int(math.floor(f * len(nm_top) + 1e-9))
            thr = nm_top[k] if k < len(nm_top) else -np.inf
            tpir[f"{f:g}"] = float(np.mean((rank == 1) & (m_score > thr)))
    out["tpir_at_fpir"] = tpir
    return out


def evaluate_ijb_1n(
    unique_templates: np.ndarray,
    template_feats: np.ndarray,
    galleries: dict[str, tuple[np.ndarray, np.ndarray]],
    probes: tuple[np.ndarray, np.ndarray],
    *,
    ranks: Sequence[int] = (1, 5, 10),
    fpirs: Sequence[float] = (0.01, 0.1),
) -> dict[str, Any]:
    """1:N identification per gallery and for both galleries together.

    Args:
        unique_templates: ``(T,)`` sorted template ids.
        template_feats: ``(T, D)`` unit template features.
        galleries: ``{"G1": (template_ids, subject_ids), "G2": ...}``.
        probes: ``(template_ids, subject_ids)`` of the probe set.
        ranks: CMC ranks.
        fpirs: FPIR targets.

    Returns:
        ``{gallery name: identification_metrics(...), "G1+G2": ...}``.
    """
    p_t = np.unique(np.asarray(probes[0], np.int64), return_index=True)
    p_templates, p_first = p_t
    p_subjects = np.asarray(probes[1])[p_first]
    p_feats = template_feats[_rows(unique_templates, p_templates, "probe")]
    out: dict[str, Any] = {}
    sets = dict(galleries)
    if len(galleries) > 1:
        sets["+".join(galleries)] = (
            np.concatenate([g[0] for g in galleries.values()]),
            np.concatenate([g[1] for g in galleries.values()]),
        )
    for name, (g_templates, g_subjects) in sets.items():
        g_templates, g_first = np.unique(np.asarray(g_templates, np.int64), return_index=True)
        g_subj = np.asarray(g_subjects)[g_first]
        g_feats = template_feats[_rows(unique_templates, g_templates, "gallery")]
        out[name] = identification_metrics(p_feats @ g_feats.T, p_subjects, g_subj, ranks=ranks, fpirs=fpirs)
    return out
