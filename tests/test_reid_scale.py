"""ReID at scale: the graph path's average linkage, sampled silhouette and co-occurrence against their dense
definitions; clustering that streams embeddings; and extraction workers sharing one database."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from modelport.reid import cluster
from modelport.reid.graph import SampledSilhouette, graph_linkage
from modelport.reid.identify import run_cluster
from modelport.reid.store import DetectionTable
from modelport.reid.synth import write_embedding_db


def _blobs(n: int, dim: int, groups: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, groups, n)
    x = rng.normal(0, 2, (groups, dim))[labels] + rng.normal(0, 1, (n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def _dense_distances(x: np.ndarray, cannot: np.ndarray) -> np.ndarray:
    dist = 1.0 - np.clip(x @ x.T, -1, 1).astype(np.float64)
    dist[cannot[:, 0], cannot[:, 1]] = dist[cannot[:, 1], cannot[:, 0]] = 2.0
    np.fill_diagonal(dist, 0.0)
    return np.maximum(dist, 0.0)


def _pairs(n: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pairs = np.sort(rng.integers(0, n, (count, 2)), axis=1)
    return np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_graph_linkage_with_every_pair_proposed_is_scipys_average_linkage():
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    x, _ = _blobs(300, 64, 30, seed=0)
    cannot = _pairs(300, 450, seed=1)
    reference = linkage(squareform(_dense_distances(x, cannot), checks=False), method="average")
    graph = graph_linkage(x, cannot, floor=-5.0, k=299)
    assert graph.merged == 299
    np.testing.assert_allclose(np.sort(graph.tree[:, 2]), np.sort(reference[:, 2]), atol=1e-6)
    for similarity in (0.5, 0.3, 0.1, 0.0):
        assert _same_partition(fcluster(graph.tree, 1 - similarity, "distance"),
                               fcluster(reference, 1 - similarity, "distance"))
    # Sixteen neighbours are enough where it matters (about a third of each cluster's tracks).
    sparse = graph_linkage(x, cannot, floor=0.3, k=16)
    assert _same_partition(fcluster(sparse.tree, 0.7, "distance"), fcluster(reference, 0.7, "distance"))
    assert np.array_equal(sparse.nearest, np.argmax(np.where(np.eye(300, dtype=bool), -np.inf, x @ x.T), axis=1))


def test_sampled_silhouette_of_every_track_is_scikit_learns(monkeypatch):
    from sklearn.metrics import silhouette_score

    from modelport.reid import graph

    x, labels = _blobs(500, 32, 25, seed=2)
    labels[:4] = np.arange(25, 29)  # clusters of one track score 0
    cannot = _pairs(500, 300, seed=3)
    monkeypatch.setattr(graph, "SILHOUETTE_SAMPLE", 500)
    expected = silhouette_score(_dense_distances(x, cannot), labels, metric="precomputed")
    assert SampledSilhouette(x, cannot)(labels) == pytest.approx(expected, abs=1e-6)


def test_co_occurring_pairs_are_the_tracks_seen_in_one_frame():
    rng = np.random.default_rng(4)
    n = 400
    video = np.array([f"v{i}" for i in rng.integers(0, 3, n)], dtype=object)
    det = DetectionTable(np.arange(n), video, rng.integers(0, 30, n), np.zeros(n), np.ones(n), np.zeros((n, 4)),
                         rng.integers(-1, 40, n))
    tracks = cluster.group_tracks(det, np.ones(n))
    expected = {(min(a, b), max(a, b)) for i in range(n) for j in range(n)
                if video[i] == video[j] and det.frame[i] == det.frame[j]
                for a, b in [(tracks.index[i], tracks.index[j])] if a != b}
    assert set(map(tuple, cluster.co_occurring(det, tracks).tolist())) == expected


def test_graph_path_finds_the_dense_paths_identities(tmp_path, monkeypatch):
    from sklearn.metrics import adjusted_rand_score

    scene = write_embedding_db(tmp_path / "d.db", 20_000)  # 2,000 tracks: both paths can take it
    for threshold in (0.4, "auto"):
        dense = run_cluster(scene.db, tmp_path / f"dense{threshold}", threshold=threshold, standardize=True,
                            webp=False)
        with monkeypatch.context() as patch:
            patch.setattr(cluster, "DENSE_TRACKS", 0)
            graph = run_cluster(scene.db, tmp_path / f"graph{threshold}", threshold=threshold, standardize=True,
                                webp=False)
        a, b = (json.loads((tmp_path / f"{kind}{threshold}" / "identities.json").read_text())["tracks"]
                for kind in ("dense", "graph"))
        agreement = adjusted_rand_score([a[k] for k in a], [b[k] for k in a])
        print(f"\n{threshold}: dense {dense.scores.to_dict()}\n{threshold}: graph {graph.scores.to_dict()}; "
              f"agreement {agreement:.4f}")
        assert agreement >= 0.98 and graph.scores.ari >= dense.scores.ari - 0.02
        assert graph.scores.rank1 == dense.scores.rank1  # exact search below 10,000 tracks
        assert (tmp_path / f"graph{threshold}" / "similarity_matrix.npz").is_file()


CHILD = """
import json, sys
from pathlib import Path
def hwm():
    return int([l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')][0].split()[1])
from modelport.reid.identify import run_cluster
import faiss, scipy.cluster.hierarchy, sklearn.metrics
base = hwm()
r = run_cluster(sys.argv[1], sys.argv[2], threshold="auto", standardize=True, webp=False)
print(json.dumps({"tracks": r.tracks, "scores": r.scores.to_dict(), "grew_mb": (hwm() - base) / 1024}))
"""


def test_clustering_many_tracks_streams_embeddings_and_keeps_memory_linear(tmp_path):
    scene = write_embedding_db(tmp_path / "d.db", 60_000)  # 6,000 tracks of 600 people: the graph path
    out = tmp_path / "ids"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(scene.db), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print("\n60k detections:", result)
    assert result["tracks"] == 6000 and result["scores"]["ari"] >= 0.95 and result["scores"]["rank1"] >= 0.95
    # 60k embeddings are 123 MB and the dense path's matrices for 6,000 tracks about 700 MB: streaming the
    # former and never forming the latter keeps the growth well below either.
    assert result["grew_mb"] < 300
    assert not (out / "similarity_matrix.npy").exists()
    with np.load(out / "similarity_matrix.npz") as graph:
        assert len(graph["track"]) >= 6000 and graph["similarity"].max() <= 1.0001
    assert json.loads((out / "similarity_matrix.json").read_text())["note"].startswith("6000 tracks")
    identities = json.loads((out / "identities.json").read_text())
    assert len(identities["detections"]) == 60_000
    assert sum(i["detections"] for i in identities["identities"]) == 60_000
