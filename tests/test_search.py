"""Search: index a folder of generated images with exported MobileCLIP2-S0 encoders (seeded, BN-calibrated),
find each image by itself, query by text, resume, and refuse a different model; in a SQLite file and in
PostgreSQL + pgvector (a real server, tests/pg_server.py), which give the same top k."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

import modelport.search.store as index_store  # noqa: E402
from modelport.clip.export import export_clip  # noqa: E402
from modelport.clip.model import build_clip  # noqa: E402
from modelport.clip.samples import scene_images, write_scenes  # noqa: E402
from modelport.errors import CorruptFileError, WeightsNotFoundError  # noqa: E402
from modelport.preprocess import prepare  # noqa: E402
from modelport.search import IndexMismatchError, IndexStore, index_folder, open_encoders, search  # noqa: E402
from modelport.search.query import top_k  # noqa: E402
from modelport.sqlstore import DatabaseError, SchemaTooNewError, schema_version  # noqa: E402
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


def _index(db, gallery, image_model):
    stats = index_folder(gallery, open_encoders(str(image_model)), db, batch=8)
    assert (stats.found, stats.added, stats.skipped, stats.failed) == (IMAGES, IMAGES, 0, 0)
    return db


@pytest.fixture(scope="module")
def sqlite_index(tmp_path_factory, gallery, image_model):
    return _index(tmp_path_factory.mktemp("db") / "index.db", gallery, image_model)


@pytest.fixture(scope="module")
def postgresql_index(postgres, gallery, image_model):
    return _index(postgres.create_database(), gallery, image_model)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def index(request):
    """The gallery's index in each store: a SQLite file's path, or a PostgreSQL database's URL."""
    return request.getfixturevalue(f"{request.param}_index")


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path) -> str:
    """Where a new index goes: a SQLite file, or an empty PostgreSQL database."""
    return str(tmp_path / "i.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


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


def test_index_resumes_and_picks_up_new_and_changed_files(tmp_path, location, image_model):
    folder = tmp_path / "g"
    write_scenes(folder, 6, seed=5)
    db = location
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


def test_both_stores_give_the_same_top_k(sqlite_index, postgresql_index, gallery, monkeypatch):
    with IndexStore(sqlite_index) as a, IndexStore(postgresql_index) as b:
        (paths_a, want), (paths_b, got) = a.embeddings(), b.embeddings()
        assert a.model() == b.model()
    assert paths_a == paths_b and np.array_equal(want, got)  # float32 travels through pgvector unchanged
    queries = ({"text": "red car on highway"}, {"text": "a dog"}, {"image": sorted(gallery.rglob("*.png"))[2]})
    wanted = [search(sqlite_index, top=10, **query) for query in queries]
    # PostgreSQL ranks by pgvector's cosine distance: the numpy search is never called for it
    monkeypatch.setattr(index_store, "top_k", lambda *a: pytest.fail("numpy search on PostgreSQL"))
    for query, want_hits in zip(queries, wanted):
        got_hits = search(postgresql_index, top=10, **query)
        assert [h.path for h in got_hits] == [h.path for h in want_hits]
        assert np.allclose([h.score for h in got_hits], [h.score for h in want_hits], atol=1e-5)


def test_postgresql_embeddings_are_a_vector_column_of_the_encoders_width(postgresql_index):
    with IndexStore(postgresql_index) as store:
        column = store.db.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                                  "'search_images'::regclass AND attname = 'embedding'").fetchone()[0]
        assert column == f"vector({store.model().dim})" and schema_version(store.db, "search_meta") == 1


def test_a_store_refuses_a_newer_schema_and_is_left_untouched(location):
    with IndexStore(location, create=True) as store:
        assert schema_version(store.db, "search_meta") == 1
        store.db.execute("UPDATE search_meta SET value = '2' WHERE key = 'schema_version'")
        store.db.commit()
    with pytest.raises(SchemaTooNewError, match="newer than this modelport knows"):
        IndexStore(location)


def test_an_index_file_from_before_versioning_keeps_its_rows(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as raw:  # what modelport wrote before the schema had versions
        raw.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); CREATE TABLE images ("
                          "path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, embedding BLOB "
                          "NOT NULL); CREATE TABLE failures (path TEXT PRIMARY KEY, error TEXT NOT NULL);")
        model = index_store.IndexModel("m_image.onnx", NAME, 3, None, probe=(1.0, 0.0, 0.0))
        raw.execute("INSERT INTO meta VALUES ('model', ?)", (json.dumps(dataclasses.asdict(model)),))
        raw.executemany("INSERT INTO images VALUES (?, 1, 2, ?)",
                        [(p, np.asarray(v, np.float32).tobytes()) for p, v in (("/b", [0, 1, 0]), ("/a", [1, 1, 0]))])
    raw.close()
    with IndexStore(db) as store:
        assert store.model() == model and len(store) == 2 and schema_version(store.db, "search_meta") == 1
        assert store.top(np.array([0.0, 1.0, 0.0]), 2) == [("/b", 1.0), ("/a", pytest.approx(0.5 ** 0.5))]
        assert store.db.tables() == {"search_meta", "search_images", "search_failures"}


def test_a_server_that_cannot_be_used_is_a_typed_error_naming_the_url(postgres, pg_url):
    unreachable = "postgresql://me:secret@/index?host=/nonexistent&port=1"
    with pytest.raises(DatabaseError, match="cannot connect") as info:
        search(unreachable, text="a dog")
    assert "me:***@" in str(info.value) and "secret" not in str(info.value)
    with pytest.raises(DatabaseError, match="no_such_db.*cannot connect") as info:
        IndexStore(postgres.url("no_such_db"), create=True)
    assert "createdb" in info.value.hint
    with pytest.raises(WeightsNotFoundError, match="holds no search index"):
        search(pg_url, text="a dog")  # an empty database is not an index, and is left so
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:  # a user who may not add pgvector to this database
        conn.execute("CREATE ROLE search_reader LOGIN")
    without_rights = pg_url.replace("postgres@", "search_reader@")
    with pytest.raises(DatabaseError, match="search_reader@.*vector") as info:
        IndexStore(without_rights, create=True)
    assert "CREATE EXTENSION vector" in info.value.hint


def test_cli_indexes_and_queries_a_postgresql_database(pg_url, gallery, image_model):
    from typer.testing import CliRunner

    from modelport.cli import app

    runner, wide = CliRunner(), {"COLUMNS": "1000"}
    for command in ("index", "query"):
        assert "postgresql://" in runner.invoke(app, ["search", command, "--help"], env=wide).stdout
    done = runner.invoke(app, ["search", "index", str(gallery / "a"), "--model", str(image_model), "--db", pg_url,
                               "--json"], env=wide)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["added"] == IMAGES // 2
    probe = sorted((gallery / "a").iterdir())[3]
    done = runner.invoke(app, ["search", "query", "--image", str(probe), "--db", pg_url, "--top", "2", "--json"],
                         env=wide)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["results"][0]["path"] == str(probe.resolve())
