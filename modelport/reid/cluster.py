"""Group detections into identities: per-track aggregation of the best crops, cosine similarity,
average-linkage agglomerative clustering with a fixed or silhouette-chosen threshold.

Up to DENSE_TRACKS tracks scipy clusters the full track-by-track matrix; beyond, ``graph.py`` does the same
average linkage over a k-nearest-neighbour graph, so memory grows with the tracks, not with their square.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from modelport.errors import ModelportError
from modelport.reid.store import DetectionTable

DEFAULT_THRESHOLD = 0.70
# The dense path holds a float32 similarity and float64 distance matrix plus scipy's condensed copy: about
# 20 bytes per track pair, 320 MB at 4,000 tracks. Beyond, the graph path (memory linear in the tracks).
DENSE_TRACKS = 4_000
AUTO_FLOOR = 0.1  # graph path, --threshold auto: the loosest cut tried (cosine similarity)


class ClusteringError(ModelportError, ValueError):
    """Nothing to cluster, or a bad threshold or identity cap."""


@dataclass(frozen=True, slots=True)
class Standardizer:
    """Per-dimension statistics of a dataset's embeddings. Untrained (and many trained) ReID features
    share a large common component that makes every pair look alike; subtracting it restores contrast."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, chunks: Iterable[np.ndarray]) -> "Standardizer":
        """Statistics of the rows of every chunk (accumulated in float64, one chunk in memory at a time)."""
        total: np.ndarray | None = None
        squares = np.zeros(0)
        n = 0
        for part in chunks:
            part = np.asarray(part, np.float64)
            if total is None:
                total, squares = np.zeros(part.shape[1]), np.zeros(part.shape[1])
            total += part.sum(0)
            squares += np.square(part).sum(0)
            n += len(part)
        if total is None:
            raise ClusteringError("no embeddings to standardise")
        mean = total / max(n, 1)
        std = np.sqrt(np.maximum(squares / max(n, 1) - mean**2, 0.0))
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        return (vectors - self.mean) / np.maximum(self.std, 1e-6)


@dataclass
class Tracks:
    """Detections grouped by (video, track); a detection without a track is a track of its own."""

    keys: list[str]  # "video#track" or "video#det<id>"
    index: np.ndarray  # per detection: its track's row
    best: list[np.ndarray]  # per track: detection rows used for the aggregate, best first
    embeddings: np.ndarray | None = None  # (T, D) L2-normalised mean of each track's best crops


@dataclass
class Clustering:
    labels: np.ndarray  # per track: 0-based identity, numbered by first appearance
    threshold: float  # similarity cut actually applied
    mode: str  # "fixed" | "auto" | "max-persons"
    nearest: np.ndarray  # per track: its most similar other track (-1: none)
    similarity: np.ndarray | None = None  # (T, T) cosine similarity of track embeddings (dense path only)
    edges: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # graph path: track, neighbour, similarity
    silhouette: float | None = None
    candidates: list[dict] = field(default_factory=list)  # auto mode: every cut tried


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def quality(confidence: np.ndarray, sharpness: np.ndarray) -> np.ndarray:
    """Crop quality: detector confidence, lowered for crops blurrier than the dataset's median.

    Sharpness above the median earns nothing: clutter (other people, busy background) also raises the
    Laplacian variance, so rewarding it would prefer crowded crops.
    """
    finite = np.isfinite(sharpness)
    median = float(np.median(sharpness[finite])) if finite.any() else 1.0
    rel = np.where(finite, np.clip(sharpness / max(median, 1e-9), 0.0, 1.0), 1.0)
    return confidence * (0.75 + 0.25 * rel)


def group_tracks(det: DetectionTable, score: np.ndarray, per_track: int = 8) -> Tracks:
    """Group detections into tracks and pick each track's ``per_track`` best crops (by ``score``)."""
    videos, video_idx = det.video_index()
    # Detections without a track get a unique negative pseudo-track so they stay alone.
    track = np.where(det.track < 0, -1 - np.arange(len(det)), det.track)
    order = np.lexsort((-score, track, video_idx))
    v_sorted, t_sorted = video_idx[order], track[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(v_sorted) != 0) | (np.diff(t_sorted) != 0)])
    ends = np.r_[starts[1:], len(order)]
    index = np.empty(len(det), np.int64)
    index[order] = np.repeat(np.arange(len(starts)), ends - starts)
    best = [order[s:min(e, s + per_track)] for s, e in zip(starts.tolist(), ends.tolist())]
    firsts = order[starts]
    keys = [f"{videos[v]}#{t if t >= 0 else f'det{i}'}" for v, t, i in
            zip(v_sorted[starts].tolist(), det.track[firsts].tolist(), det.ids[firsts].tolist())]
    return Tracks(keys, index, best)


def track_embeddings(tracks: Tracks, detections: int, chunks: Iterable[tuple[np.ndarray, np.ndarray]],
                     stats: Standardizer | None = None) -> np.ndarray:
    """Each track's L2-normalised mean of its best crops' (standardised, normalised) embeddings, from
    ``chunks`` of (detection rows, vectors) in any order; only one chunk is in memory at a time."""
    owner = np.full(detections, -1, np.int64)  # per detection: the track it is a best crop of
    owner[np.concatenate(tracks.best)] = np.repeat(np.arange(len(tracks.best)), [len(b) for b in tracks.best])
    sums = None
    for rows, vectors in chunks:
        t = owner[rows]
        chosen = t >= 0
        if sums is None:
            sums = np.zeros((len(tracks.best), vectors.shape[1]))
        if not chosen.any():
            continue
        unit = l2_normalize(stats(vectors[chosen]) if stats else vectors[chosen])
        order = np.argsort(t[chosen], kind="stable")
        t_sorted = t[chosen][order]
        starts = np.flatnonzero(np.r_[True, np.diff(t_sorted) != 0])
        sums[t_sorted[starts]] += np.add.reduceat(unit[order], starts, axis=0)
    if sums is None:
        raise ClusteringError("no embeddings for these detections")
    return l2_normalize(sums)


def co_occurring(det: DetectionTable, tracks: Tracks) -> np.ndarray:
    """(P, 2) track pairs (i < j) with detections in the same frame of the same video, each once."""
    video_idx = det.video_index()[1]
    frame_key = video_idx * (1 << 32) + det.frame
    # One entry per (frame, track), sorted by frame: frames holding several tracks give the pairs.
    key = np.unique(frame_key * np.int64(len(tracks.keys)) + tracks.index)
    frames, rows = key // len(tracks.keys), key % len(tracks.keys)
    starts = np.flatnonzero(np.r_[True, np.diff(frames) != 0])
    sizes = np.diff(np.r_[starts, len(frames)])
    pairs = []
    for size in np.unique(sizes[sizes > 1]).tolist():  # frames of the same size at once
        first = starts[sizes == size]
        i, j = np.triu_indices(size, 1)
        pairs.append(np.stack([rows[first[:, None] + i], rows[first[:, None] + j]], -1).reshape(-1, 2))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    both = np.concatenate(pairs)
    return np.unique(np.sort(both, axis=1), axis=0)


def _number_by_appearance(raw: np.ndarray, first_seen: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..k-1 in order of their earliest appearance."""
    _, inverse = np.unique(raw, return_inverse=True)
    start = np.full(inverse.max() + 1, np.inf)
    np.minimum.at(start, inverse, first_seen)
    rank = np.empty(len(start), np.int64)
    rank[np.argsort(start, kind="stable")] = np.arange(len(start))
    return rank[inverse]


def _threshold(threshold: float | str) -> float | None:
    """The cut as a similarity, or None for auto."""
    if threshold == "auto":
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ClusteringError(f"threshold must be a number in [-1, 1] or 'auto', got {threshold!r}") from None
    if not -1.0 <= value <= 1.0:
        raise ClusteringError(f"threshold must be a cosine similarity in [-1, 1], got {value}")
    return value


def cluster_tracks(embeddings: np.ndarray, first_seen: np.ndarray, threshold: float | str = DEFAULT_THRESHOLD,
                   max_persons: int | None = None, cannot_link: np.ndarray | None = None,
                   dense_max: int | None = None) -> Clustering:
    """Average-linkage agglomerative clustering of L2-normalised track embeddings under cosine distance.

    ``threshold`` is the similarity two groups need on average to merge; ``"auto"`` picks the cut with the
    best silhouette (no ground truth needed). ``max_persons`` caps the number of identities.
    ``cannot_link`` (P, 2) track pairs cannot be one person (seen in the same frames): their distance is
    set to the maximum, 2, so that average linkage joins them only when everything else agrees.
    More than ``dense_max`` (default DENSE_TRACKS) tracks take the graph path.
    """
    from scipy.cluster.hierarchy import fcluster

    n = len(embeddings)
    if n == 0:
        raise ClusteringError("no detections with embeddings to cluster", hint="run `modelport reid extract` first")
    if max_persons is not None and max_persons < 1:
        raise ClusteringError(f"--max-persons must be >= 1, got {max_persons}")
    value = _threshold(threshold)
    if n == 1:
        return Clustering(np.zeros(1, np.int64), 1.0 if value is None else value, "fixed", np.full(1, -1),
                          similarity=np.ones((1, 1), np.float32))
    dense = n <= (DENSE_TRACKS if dense_max is None else dense_max)
    if dense:
        tree, similarity, silhouette_of, nearest = _dense(embeddings, cannot_link)
        edges, merged, ceiling = None, n - 1, 2.0
    else:
        from modelport.reid.graph import SampledSilhouette, graph_linkage

        floor = AUTO_FLOOR if value is None else value
        graph = graph_linkage(embeddings, cannot_link, floor=floor, target=max_persons)
        tree, similarity, nearest, edges = graph.tree, None, graph.nearest, graph.edges
        merged, ceiling = graph.merged, 1.0 - floor  # the tree's later rows join what was never scored
        sampler = SampledSilhouette(embeddings, cannot_link) if value is None else None

        def silhouette_of(labels: np.ndarray) -> float:
            assert sampler is not None  # only auto mode asks
            return sampler(labels - labels.min())

    candidates: list[dict] = []
    silhouette = None
    if value is None:
        raw, cut, silhouette, candidates = _auto_cut(tree, n, max_persons, silhouette_of, merged, ceiling)
        mode = "auto"
    else:
        cut, mode = 1.0 - value, "fixed"
        raw = fcluster(tree, t=cut, criterion="distance")
    if max_persons is not None and len(np.unique(raw)) > max_persons:
        raw = fcluster(tree, t=max_persons, criterion="maxclust")
        cut, mode = _cut(tree[:, 2], n, len(np.unique(raw)), merged, ceiling), "max-persons"
    labels = _number_by_appearance(raw, first_seen)
    return Clustering(labels, float(1.0 - cut), mode, nearest, similarity, edges, silhouette, candidates)


def _dense(embeddings: np.ndarray, cannot_link: np.ndarray | None):
    """scipy's average linkage of the full distance matrix: tree, similarity, silhouette, nearest track."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform
    from sklearn.metrics import silhouette_score

    sim = embeddings @ embeddings.T
    np.clip(sim, -1.0, 1.0, out=sim)
    dist = 1.0 - sim.astype(np.float64)
    if cannot_link is not None and len(cannot_link):
        dist[cannot_link[:, 0], cannot_link[:, 1]] = dist[cannot_link[:, 1], cannot_link[:, 0]] = 2.0
    np.fill_diagonal(dist, 0.0)
    np.maximum(dist, 0.0, out=dist)
    tree = linkage(squareform(dist, checks=False), method="average")
    diagonal = sim.diagonal().copy()
    np.fill_diagonal(sim, -np.inf)  # a track is not its own nearest
    nearest = np.argmax(sim, axis=1)
    np.fill_diagonal(sim, diagonal)

    def silhouette_of(labels: np.ndarray) -> float:
        return float(silhouette_score(dist, labels, metric="precomputed"))

    return tree, sim, silhouette_of, nearest


def _cut(heights: np.ndarray, n: int, k: int, merged: int, ceiling: float) -> float:
    """The distance that leaves ``k`` clusters: halfway between the last merge made and the next one, which is
    ``ceiling`` when the tree's next row is not a real merge (``merged`` rows are)."""
    lo = heights[n - k - 1] if n - k - 1 >= 0 else 0.0
    hi = heights[n - k] if n - k < merged else max(lo, ceiling)
    return float((lo + hi) / 2)


def _auto_cut(tree: np.ndarray, n: int, max_persons: int | None, silhouette_of: Callable[[np.ndarray], float],
              merged: int, ceiling: float):
    """Try cuts between successive real merges (at most ~80, log-spaced in cluster count); keep the best
    silhouette. Returns labels, cut distance, silhouette and every candidate."""
    from scipy.cluster.hierarchy import fcluster

    top = min(n - 1, max_persons or n - 1)
    low = max(2, n - merged)

    def fallback(candidates: list[dict]):  # nothing to score: every merge made (all of them when dense)
        if merged >= n - 1:
            return np.ones(n, np.int64), float(tree[-1, 2]) + 1e-9, None, candidates
        cut = _cut(tree[:, 2], n, n - merged, merged, ceiling)
        return fcluster(tree, t=cut, criterion="distance"), cut, None, candidates

    if top < low:
        return fallback([])
    tried = set(range(low, min(top, 40) + 1)) | set(np.unique(np.geomspace(low, top, 40).astype(int)).tolist())
    if merged < n - 1:  # graph path: also every 0.02 of similarity above its floor, where counts are dense
        real = tree[:merged, 2]
        cuts = np.arange(1.0 - ceiling, 1.0, 0.02)
        tried |= {k for k in (n - np.searchsorted(real, 1.0 - cuts, side="right")).tolist() if low <= k <= top}
    counts = sorted(tried)
    best = None
    candidates = []
    for k in counts:
        cut = _cut(tree[:, 2], n, k, merged, ceiling)  # k clusters remain after the first n-k merges
        raw = fcluster(tree, t=cut, criterion="distance")
        found = len(np.unique(raw))
        if not 2 <= found <= n - 1:
            continue
        score = silhouette_of(raw)
        candidates.append({"clusters": found, "threshold": round(1.0 - cut, 4), "silhouette": round(score, 4)})
        if best is None or score > best[0] + 1e-12:
            best = (score, raw, cut)
    if best is None:
        return fallback(candidates)
    return best[1], best[2], best[0], candidates
