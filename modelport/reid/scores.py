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


def cross_track_rank1(similarity: np.ndarray, track_truth: np.ndarray) -> tuple[float, int]:
    """For each track whose person has another track: is its most similar other track that person?"""
    sim = similarity.astype(np.float64).copy()
    np.fill_diagonal(sim, -np.inf)
    hits = queries = 0
    for i, person in enumerate(track_truth):
        if person < 0 or (track_truth == person).sum() < 2:
            continue
        queries += 1
        hits += int(track_truth[int(np.argmax(sim[i]))] == person)
    return (hits / queries if queries else float("nan")), queries


def score(det_truth: np.ndarray, det_track: np.ndarray, track_labels: np.ndarray, similarity: np.ndarray) -> Scores:
    """``det_truth``: ground-truth person per detection (-1 unknown); ``det_track``: each detection's track row."""
    from sklearn.metrics import adjusted_rand_score

    known = det_truth >= 0
    truth, predicted = det_truth[known], track_labels[det_track[known]]
    precision, recall = pairwise(truth, predicted)
    # A track's person is the majority ground truth of its detections.
    track_truth = np.full(len(track_labels), -1, np.int64)
    for row in np.unique(det_track[known]):
        values, counts = np.unique(det_truth[known & (det_track == row)], return_counts=True)
        track_truth[row] = values[np.argmax(counts)]
    has = track_truth >= 0
    rank1, queries = cross_track_rank1(similarity, track_truth)
    return Scores(int(known.sum()), float(adjusted_rand_score(truth, predicted)), precision, recall,
                  float(adjusted_rand_score(track_truth[has], track_labels[has])), rank1, queries,
                  int(len(np.unique(truth))), int(len(np.unique(track_labels))))
