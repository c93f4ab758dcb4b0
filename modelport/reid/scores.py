"""Clustering scores against ground-truth identities: ARI, pairwise precision/recall, cross-track rank-1."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Scores:
    detections: int  # detections with a ground-truth identity
    ari: float  # adjusted Rand index over those detections
    pairwise_precision: float  # of detection pairs put together, the share that are one person
    pairwise_recall: float  # of detection pairs of one person, the share put together
    track_ari: float  # the same over tracks (each track counted once)
    rank1: float  # share of tracks whose most similar other track is the same person
    rank1_queries: int  # tracks whose person has another track (the only ones that can be scored)
    people: int
    identities: int

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def pairwise(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics.cluster import pair_confusion_matrix

    (_, fp), (fn, tp) = pair_confusion_matrix(truth, predicted)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return float(precision), float(recall)


def cross_track_rank1(nearest: np.ndarray, track_truth: np.ndarray) -> tuple[float, int]:
    """For each track whose person has another track: is its most similar other track (``nearest``) that person?"""
    known = track_truth >= 0
    people, counts = np.unique(track_truth[known], return_counts=True)
    repeated = np.zeros(len(track_truth), bool)
    repeated[known] = np.isin(track_truth[known], people[counts >= 2])
    queries = int(repeated.sum())
    if not queries:
        return float("nan"), 0
    found = nearest[repeated]
    hits = int(((found >= 0) & (track_truth[np.maximum(found, 0)] == track_truth[repeated])).sum())
    return hits / queries, queries


def majority(det_truth: np.ndarray, det_track: np.ndarray, tracks: int) -> np.ndarray:
    """Each track's person: the most frequent known one among its detections (the smallest id on a tie), -1
    when none is known."""
    known = det_truth >= 0
    out = np.full(tracks, -1, np.int64)
    if not known.any():
        return out
    pairs, counts = np.unique(np.stack([det_track[known], det_truth[known]]), axis=1, return_counts=True)
    order = np.lexsort((pairs[1], -counts, pairs[0]))  # per track: most detections first, then smallest id
    first = order[np.r_[True, np.diff(pairs[0][order]) != 0]]
    out[pairs[0][first]] = pairs[1][first]
    return out


def score(det_truth: np.ndarray, det_track: np.ndarray, track_labels: np.ndarray, nearest: np.ndarray) -> Scores:
    """``det_truth``: ground-truth person per detection (-1 unknown); ``det_track``: each detection's track row;
    ``nearest``: each track's most similar other track."""
    from sklearn.metrics import adjusted_rand_score

    known = det_truth >= 0
    truth, predicted = det_truth[known], track_labels[det_track[known]]
    precision, recall = pairwise(truth, predicted)
    track_truth = majority(det_truth, det_track, len(track_labels))
    has = track_truth >= 0
    rank1, queries = cross_track_rank1(nearest, track_truth)
    return Scores(int(known.sum()), float(adjusted_rand_score(truth, predicted)), precision, recall,
                  float(adjusted_rand_score(track_truth[has], track_labels[has])), rank1, queries,
                  int(len(np.unique(truth))), int(len(np.unique(track_labels))))
