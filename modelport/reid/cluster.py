"""Group detections into identities: per-track aggregation of the best crops, cosine similarity,
average-linkage agglomerative clustering with a fixed or silhouette-chosen threshold."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from modelport.errors import ModelportError
from modelport.reid.store import DetectionTable

DEFAULT_THRESHOLD = 0.70
MAX_TRACKS = 10_000  # the condensed distance matrix costs 8 * n^2 / 2 bytes: 10k tracks ~ 0.4 GB


class ClusteringError(ModelportError, ValueError):
    """Nothing to cluster, too much to cluster, or a bad threshold."""


@dataclass(frozen=True, slots=True)
class Standardizer:
    """Per-dimension statistics of a dataset's embeddings. Untrained (and many trained) ReID features
    share a large common component that makes every pair look alike; subtracting it restores contrast."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, vectors: np.ndarray, chunk: int = 8192) -> "Standardizer":
        # Accumulated in float64 over row chunks: a float64 copy of 50k x 512 would cost 200 MB.
        total, squares = np.zeros(vectors.shape[1]), np.zeros(vectors.shape[1])
        for start in range(0, len(vectors), chunk):
            part = vectors[start:start + chunk].astype(np.float64)
            total += part.sum(0)
            squares += np.square(part).sum(0)
        n = max(len(vectors), 1)
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        return (vectors - self.mean) / np.maximum(self.std, 1e-6)


@dataclass
class Tracks:
    """Detections grouped by (video, track); a detection without a track is a track of its own."""

    keys: list[str]  # "video#track" or "video#det<id>"
    index: np.ndarray  # per detection: its track's row
    embeddings: np.ndarray  # (T, D) L2-normalised aggregate of each track's best crops
    best: list[np.ndarray]  # per track: detection rows used for the aggregate, best first


@dataclass
class Clustering:
    labels: np.ndarray  # per track: 0-based identity, numbered by first appearance
    threshold: float  # similarity cut actually applied
    mode: str  # "fixed" | "auto" | "max-persons"
    similarity: np.ndarray  # (T, T) cosine similarity of track embeddings
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


def group_tracks(det: DetectionTable, vectors: np.ndarray, score: np.ndarray, per_track: int = 8) -> Tracks:
    """Aggregate each track's ``per_track`` best crops (by ``score``) into one normalised embedding."""
    videos, video_idx = np.unique(det.video.astype(str), return_inverse=True)
    own = det.track < 0
    # Detections without a track get a unique negative pseudo-track so they stay alone.
    track = np.where(own, -1 - np.arange(len(det)), det.track)
    order = np.lexsort((-score, track, video_idx))
    v_sorted, t_sorted = video_idx[order], track[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(v_sorted) != 0) | (np.diff(t_sorted) != 0)])
    ends = np.r_[starts[1:], len(order)]
    index = np.empty(len(det), np.int64)
    keys, best, emb = [], [], np.empty((len(starts), vectors.shape[1]), np.float32)
    for row, (s, e) in enumerate(zip(starts, ends)):
        members = order[s:e]
        index[members] = row
        top = members[:per_track]
        best.append(top)
        emb[row] = vectors[top].mean(0)
        first = members[0]
        name = f"{det.track[first]}" if det.track[first] >= 0 else f"det{det.ids[first]}"
        keys.append(f"{videos[v_sorted[s]]}#{name}")
    return Tracks(keys, index, l2_normalize(emb), best)


def co_occurring(det: DetectionTable, tracks: Tracks) -> np.ndarray:
    """(T, T) True where two tracks have detections in the same frame of the same video."""
    n = len(tracks.keys)
    out = np.zeros((n, n), bool)
    video_idx = np.unique(det.video.astype(str), return_inverse=True)[1].astype(np.int64)
    frame_key = video_idx * (1 << 32) + det.frame
    order = np.argsort(frame_key, kind="stable")
    keys = frame_key[order]
    starts = np.flatnonzero(np.r_[True, np.diff(keys) != 0])
    for s, e in zip(starts, np.r_[starts[1:], len(order)]):
        rows = np.unique(tracks.index[order[s:e]])
        if len(rows) > 1:
            out[np.ix_(rows, rows)] = True
    np.fill_diagonal(out, False)
    return out


def _number_by_appearance(raw: np.ndarray, first_seen: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..k-1 in order of their earliest appearance."""
    ids = np.unique(raw)
    start = np.array([first_seen[raw == c].min() for c in ids])
    rank = {c: i for i, c in enumerate(ids[np.argsort(start, kind="stable")])}
    return np.array([rank[c] for c in raw], np.int64)


def cluster_tracks(embeddings: np.ndarray, first_seen: np.ndarray, threshold: float | str = DEFAULT_THRESHOLD,
                   max_persons: int | None = None, cannot_link: np.ndarray | None = None) -> Clustering:
    """Average-linkage agglomerative clustering of L2-normalised track embeddings under cosine distance.

    ``threshold`` is the similarity two groups need on average to merge; ``"auto"`` picks the cut with the
    best silhouette (no ground truth needed). ``max_persons`` caps the number of identities.
    ``cannot_link`` (T, T) marks pairs that cannot be one person (seen in the same frames): their distance
    is set to the maximum, 2, so that average linkage joins them only when everything else agrees.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = len(embeddings)
    if n == 0:
        raise ClusteringError("no detections with embeddings to cluster", hint="run `modelport reid extract` first")
    if n > MAX_TRACKS:
        raise ClusteringError(f"{n} tracks is more than clustering handles at once ({MAX_TRACKS})",
                              hint="give the detections track ids, or cluster fewer videos per run")
    if max_persons is not None and max_persons < 1:
        raise ClusteringError(f"--max-persons must be >= 1, got {max_persons}")
    sim = embeddings @ embeddings.T
    np.clip(sim, -1.0, 1.0, out=sim)
    if n == 1:
        return Clustering(np.zeros(1, np.int64), float(threshold) if threshold != "auto" else 1.0, "fixed", sim)
    dist = 1.0 - sim.astype(np.float64)
    if cannot_link is not None:
        dist[cannot_link] = 2.0
    np.fill_diagonal(dist, 0.0)
    condensed = squareform(np.maximum(dist, 0.0), checks=False)
    del dist
    tree = linkage(condensed, method="average")
    heights = tree[:, 2]
    candidates: list[dict] = []
    silhouette = None
    if threshold == "auto":
        raw, cut, silhouette, candidates = _auto_cut(tree, condensed, n, max_persons)
        mode = "auto"
    else:
        try:
            value = float(threshold)
        except (TypeError, ValueError):
            raise ClusteringError(f"threshold must be a number in [-1, 1] or 'auto', got {threshold!r}") from None
        if not -1.0 <= value <= 1.0:
            raise ClusteringError(f"threshold must be a cosine similarity in [-1, 1], got {value}")
        cut, mode = 1.0 - value, "fixed"
        raw = fcluster(tree, t=cut, criterion="distance")
    if max_persons is not None and len(np.unique(raw)) > max_persons:
        raw = fcluster(tree, t=max_persons, criterion="maxclust")
        k = len(np.unique(raw))
        # Report the cut halfway between the last merge made and the first one refused.
        lo = heights[n - k - 1] if n - k - 1 >= 0 else 0.0
        cut, mode = float((lo + heights[n - k]) / 2), "max-persons"
    labels = _number_by_appearance(raw, first_seen)
    return Clustering(labels, float(1.0 - cut), mode, sim, silhouette, candidates)


def _auto_cut(tree: np.ndarray, condensed: np.ndarray, n: int, max_persons: int | None):
    """Try cuts between successive merges (at most ~80, log-spaced in cluster count); keep the best
    silhouette. Returns labels, cut distance, silhouette and every candidate."""
    from scipy.cluster.hierarchy import fcluster
    from scipy.spatial.distance import squareform
    from sklearn.metrics import silhouette_score

    top = min(n - 1, max_persons or n - 1)
    if top < 2:
        return np.ones(n, np.int64), float(tree[-1, 2]) + 1e-9, None, []
    counts = sorted(set(range(2, min(top, 40) + 1)) | set(np.unique(np.geomspace(2, top, 40).astype(int))))
    square = squareform(condensed)
    heights = tree[:, 2]
    best = None
    candidates = []
    for k in counts:
        # k clusters remain after the first n-k merges: cut halfway to the next merge.
        lo = heights[n - k - 1] if n - k - 1 >= 0 else 0.0
        hi = heights[n - k]
        cut = float((lo + hi) / 2)
        raw = fcluster(tree, t=cut, criterion="distance")
        found = len(np.unique(raw))
        if not 2 <= found <= n - 1:
            continue
        score = float(silhouette_score(square, raw, metric="precomputed"))
        candidates.append({"clusters": found, "threshold": round(1.0 - cut, 4), "silhouette": round(score, 4)})
        if best is None or score > best[0] + 1e-12:
            best = (score, raw, cut)
    if best is None:
        return np.ones(n, np.int64), float(heights[-1]) + 1e-9, None, candidates
    return best[1], best[2], best[0], candidates
