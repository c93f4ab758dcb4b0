"""Search: index a folder of generated images with exported MobileCLIP2-S0 encoders (seeded, BN-calibrated),
find each image by itself, query by text, resume, and refuse a different model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from modelport.clip.export import export_clip  # noqa: E402
from modelport.clip.model import build_clip  # noqa: E402
from modelport.clip.samples import scene_images, write_scenes  # noqa: E402
from modelport.errors import CorruptFileError, WeightsNotFoundError  # noqa: E402
from modelport.preprocess import prepare  # noqa: E402
from modelport.search import IndexMismatchError, IndexStore, index_folder, open_encoders, search  # noqa: E402
from modelport.search.query import top_k  # noqa: E402
from modelport.zoo import RandomWeightsWarning  # noqa: E402
from modelport.zoo.calibrate import calibrate_batchnorm  # noqa: E402

NAME = "MobileCLIP2-S0"
IMAGES = 24


def _calibrate(clip):
    from modelport.spec import Preprocess

    pre = Preprocess(height=256, width=256, mean=(0.0,) * 3, std=(1.0,) * 3)
    calibrate_batchnorm(clip.visual, [torch.from_numpy(prepare(scene_images(8, 256, 256, seed=3), pre))])


@pytest.fixture(scope="module")
def encoders_dir(tmp_path_factory):
    """ONNX image and text encoders of a calibrated random MobileCLIP2-S0 (verified in test_clip.py)."""
    out = tmp_path_factory.mktemp("search_models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = build_clip(NAME, allow_random=True, prepare=_calibrate)
    report = export_clip(NAME, formats="onnx", out=out, model=model, verify=False)
    assert report.ok
    return out


@pytest.fixture(scope="module")
def image_model(encoders_dir):
    return encoders_dir / f"{NAME}_untrained_image.onnx"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gallery")
    write_scenes(folder / "a", IMAGES // 2, seed=1)
    write_scenes(folder / "b" / "deeper", IMAGES // 2, seed=2, suffix=".png", size=(256, 200))
    return folder


@pytest.fixture(scope="module")
def index(tmp_path_factory, gallery, image_model):
    db = tmp_path_factory.mktemp("db") / "index.db"
    stats = index_folder(gallery, open_encoders(str(image_model)), db, batch=8)
    assert (stats.found, stats.added, stats.skipped, stats.failed) == (IMAGES, IMAGES, 0, 0)
    return db


def test_every_image_finds_itself_first(index, gallery):
    paths = sorted(p for p in gallery.rglob("*") if p.is_file())
    encoders = None
    for path in paths:
        hits = search(index, image=path, top=3, encoders=encoders)
        assert hits[0].path == str(path.resolve()) and hits[0].score > 0.9999
        assert hits[0].score > hits[1].score  # a clear margin, not a tie with a stranger


def test_text_query_is_exact_cosine_search(index):
    hits = search(index, text="red car on highway", top=5)
    with IndexStore(index) as store:
        paths, matrix = store.embeddings()
        encoders = open_encoders(store.model().ref)
    query = encoders.text().embed_text(["red car on highway"])[0]
    scores = matrix @ query
    best = np.argsort(-scores)[:5]
    assert [h.path for h in hits] == [paths[i] for i in best]
    assert np.allclose([h.score for h in hits], scores[best], atol=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]


def test_top_k_orders_by_score_then_row():
    matrix = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], np.float32)
    rows, scores = top_k(np.array([1.0, 0.0]), matrix, 3)
    assert rows.tolist() == [0, 2, 3] and np.allclose(scores, [1, 1, 0.6])
    assert top_k(np.array([1.0, 0.0]), matrix[:0], 3)[0].size == 0


def test_index_resumes_and_picks_up_new_and_changed_files(tmp_path, gallery, image_model):
    folder = tmp_path / "g"
    write_scenes(folder, 6, seed=5)
    db = tmp_path / "i.db"
    encoders = open_encoders(str(image_model))

    def interrupt(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        index_folder(folder, encoders, db, batch=4, progress=interrupt)
    with IndexStore(db) as store:
        assert len(store) == 4  # the finished batch was committed
    stats = index_folder(folder, encoders, db, batch=4)
    assert (stats.skipped, stats.added) == (4, 2)
    write_scenes(folder, 1, seed=6, start=100)
    changed = folder / "scene_00000.jpg"
    write_scenes(tmp_path / "other", 1, seed=9)[0].replace(changed)
    (folder / "broken.jpg").write_bytes(b"not an image")
    stats = index_folder(folder, encoders, db, batch=4)
    assert (stats.found, stats.skipped, stats.added, stats.failed) == (8, 5, 2, 1)
    with IndexStore(db) as store:
        assert len(store) == 7 and store.failures()[0][0].endswith("broken.jpg")
    assert search(db, image=changed, top=1)[0].path == str(changed.resolve())


def test_an_index_refuses_another_model(tmp_path, index, gallery):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        other = open_encoders(NAME, allow_random=True)  # uncalibrated: a different model
    with pytest.raises(IndexMismatchError, match="different embeddings"):
        index_folder(gallery, other, index)
    with pytest.raises(IndexMismatchError):
        search(index, text="a dog", encoders=other)


def test_bad_index_files_are_typed_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="index database not found"):
        search(tmp_path / "missing.db", text="a dog")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorruptFileError, match="junk.db"):
        search(junk, text="a dog")
    assert junk.read_bytes() == b"this is not sqlite" * 100


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "modelport.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"})


def test_cli_index_then_query_json_and_html(tmp_path, gallery, image_model):
    db = tmp_path / "cli.db"
    result = _cli("search", "index", str(gallery / "a"), "--model", str(image_model), "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == IMAGES // 2
    page = tmp_path / "results.html"
    result = _cli("search", "query", "red car", "--db", str(db), "--top", "4", "--json", "--html", str(page))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    assert len(rows) == 4 and [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    html = page.read_text()
    assert html.count("<figure") == 4 and html.count("data:image/jpeg;base64,") == 4
    probe = sorted((gallery / "a").iterdir())[3]
    result = _cli("search", "query", "--image", str(probe), "--db", str(db), "--top", "1", "--json")
    assert json.loads(result.stdout)["results"][0]["path"] == str(probe.resolve())
