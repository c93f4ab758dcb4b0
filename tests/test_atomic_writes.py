"""Files modelport writes appear whole or not at all, and never replace a user's file without force."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable

import pytest
from test_triton import STEM

import modelport.atomic
from modelport.atomic import atomic_dir, atomic_file, atomic_write_text
from modelport.errors import CorruptFileError, ExportError
from modelport.triton import ModelEntry, build_model

USER = b"the user's own file \x00\xff\n"
REPORT_DATA = {"title": "tracks", "use_reid": False, "model": None, "model_type": None, "summary": "1 detection",
               "videos": [{"video": "v.mp4", "duration": 2.0, "rows": [
                   {"key": 1, "label": "track 1", "count": 1, "thumb": "", "first": 0.0, "segments": [[0.0, 1.0]],
                    "detections": [7]}]}]}
BENCH = {"rows": [], "machine": {"cpu": "test cpu", "physical_cores": 2}, "modelport": "test"}


def leftovers(folder: Path) -> list[str]:
    """Staged files or folders (and SQLite journals) that a finished or failed write must not leave."""
    return sorted(p.name for p in folder.rglob("*")
                  if p.name.endswith((".tmp", ".old", "-journal")) or ".partial" in p.name)


class Boom(RuntimeError):
    pass


def boom(*args, **kwargs):
    raise Boom("serialiser failed")


# ---- the shared helper ----------------------------------------------------------------------------

def test_atomic_file_refuses_an_existing_file_and_replaces_it_with_force(tmp_path):
    path = tmp_path / "out.txt"
    path.write_bytes(USER)
    with pytest.raises(ExportError, match="out.txt: already exists") as info:
        atomic_write_text(path, "new")
    assert "--force" in info.value.hint and path.read_bytes() == USER
    atomic_write_text(path, "new", force=True)
    assert path.read_text() == "new" and leftovers(tmp_path) == []


def test_a_failure_half_way_through_leaves_no_partial_and_no_temp_file(tmp_path):
    for force, before in ((False, None), (True, USER)):
        path = tmp_path / f"out-{force}.bin"
        if before is not None:
            path.write_bytes(before)
        with pytest.raises(Boom):
            with atomic_file(path, force=force) as tmp:
                tmp.write_bytes(b"half of it")
                raise Boom("disk full")
        assert (path.read_bytes() if path.exists() else None) == before
    assert leftovers(tmp_path) == []


def test_atomic_dir_appears_whole_and_replaces_only_with_force(tmp_path):
    folder = tmp_path / "1"
    folder.mkdir()
    (folder / "mine.txt").write_bytes(USER)
    with pytest.raises(ExportError, match="already exists"):
        with atomic_dir(folder):
            pass
    with pytest.raises(Boom):
        with atomic_dir(folder, force=True) as staged:
            (staged / "model.onnx").write_bytes(b"half")
            raise Boom
    assert [p.name for p in folder.iterdir()] == ["mine.txt"] and (folder / "mine.txt").read_bytes() == USER
    with atomic_dir(folder, force=True) as staged:
        (staged / "model.onnx").write_bytes(b"new")
    assert [p.name for p in folder.iterdir()] == ["model.onnx"] and leftovers(tmp_path) == []


# ---- every writer: refuse without force, replace with force, nothing left by a failure ----------------

@pytest.fixture
def writers(tmp_path, monkeypatch, exported_dir) -> dict[str, tuple[Callable[[Path, bool], object], str]]:
    """name -> (write(path, force), the serialiser a failure test replaces)."""
    from modelport.discover import open_artifact
    from modelport.package import build_package
    from modelport.reid import report
    from modelport.reid.report import compare_reports, write_report
    from modelport.search.html import write_html
    from modelport.search.query import Hit

    monkeypatch.setattr(report, "build_report", lambda db, **options: REPORT_DATA)
    left = write_report("unused.db", tmp_path / "pages" / "left.html")
    runner = open_artifact(exported_dir / f"{STEM}.onnx")
    return {
        "reid report": (lambda p, f: write_report("unused.db", p, force=f), "modelport.reid.pages.timeline"),
        "reid compare": (lambda p, f: compare_reports(left.path, left.path, p, force=f),
                         "modelport.reid.pages.comparison"),
        "search html": (lambda p, f: write_html([Hit(1, str(tmp_path / "gone.jpg"), 0.5)], "a dog", p, force=f),
                        "modelport.search.html._thumbnail"),
        "edge package": (lambda p, f: build_package(runner, BENCH, p, force=f), "modelport.package._add_bytes"),
    }


WRITERS = ["reid report", "reid compare", "search html", "edge package"]


@pytest.mark.parametrize("name", WRITERS)
def test_writer_refuses_a_user_file_without_force_and_replaces_it_with_force(name, writers, tmp_path):
    write, _ = writers[name]
    path = tmp_path / "out" / "result"
    path.parent.mkdir()
    path.write_bytes(USER)
    with pytest.raises(ExportError, match="already exists") as info:
        write(path, False)
    assert "--force" in info.value.hint
    assert path.read_bytes() == USER
    write(path, True)
    assert path.read_bytes() != USER and path.stat().st_size > 0
    if name == "edge package":
        with tarfile.open(path) as tar:
            assert "README.md" in tar.getnames()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", WRITERS)
@pytest.mark.parametrize("where", ["serialiser", "after the bytes are written"])
def test_writer_failing_mid_write_leaves_no_partial_and_no_temp_file(name, where, writers, tmp_path, monkeypatch):
    write, serialiser = writers[name]
    if where == "serialiser":
        if name == "edge package":  # fail after the artifact is already in the archive
            from modelport import package

            real = package._add_bytes
            monkeypatch.setattr(package, "_add_bytes",
                                lambda tar, n, data: boom() if n == "README.md" else real(tar, n, data))
        else:
            monkeypatch.setattr(serialiser, boom)
    else:
        monkeypatch.setattr(modelport.atomic, "_fsync", boom)
    fresh, kept = tmp_path / "out" / "fresh", tmp_path / "out" / "kept"
    kept.parent.mkdir()
    kept.write_bytes(USER)
    for path, force in ((fresh, False), (kept, True)):
        with pytest.raises(Boom):
            write(path, force)
    assert not fresh.exists() and kept.read_bytes() == USER
    assert leftovers(tmp_path) == []


def test_search_query_refuses_an_existing_html_file_before_searching(tmp_path):
    page = tmp_path / "results.html"
    page.write_bytes(USER)
    res = subprocess.run([sys.executable, "-m", "modelport.cli", "search", "query", "a dog", "--db",
                          str(tmp_path / "missing.db"), "--html", str(page)], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "300"})
    assert res.returncode == 2 and "results.html: already exists" in res.stderr and "--force" in res.stderr
    assert "Traceback" not in res.stderr and page.read_bytes() == USER


# ---- Triton repositories ----------------------------------------------------------------------------

def test_triton_version_folder_is_kept_without_force_and_replaced_whole_with_it(tmp_path, exported_dir):
    onnx = exported_dir / f"{STEM}.onnx"
    root = tmp_path / "repo"
    version = root / "m" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(USER)  # someone's own model, not modelport's
    with pytest.raises(ExportError, match="already exists"):
        build_model(ModelEntry(str(onnx), name="m", version=1), root)
    assert [p.name for p in version.iterdir()] == ["model.onnx"] and (version / "model.onnx").read_bytes() == USER
    build_model(ModelEntry(str(onnx), name="m", version=1), root, force=True)
    assert (version / "model.onnx").read_bytes() == onnx.read_bytes()
    assert leftovers(root) == []


def test_triton_config_written_by_hand_is_kept_as_a_backup(tmp_path, exported_dir):
    onnx = str(exported_dir / f"{STEM}.onnx")
    root = tmp_path / "repo"
    build_model(ModelEntry(onnx, name="m"), root)
    config = root / "m" / "config.pbtxt"
    edited = config.read_bytes().replace(b"max_batch_size: 16", b"max_batch_size: 2")
    config.write_bytes(edited)
    built = build_model(ModelEntry(onnx, name="m"), root)
    assert built.backup is not None and built.backup.read_bytes() == edited
    # a second differing rebuild in the same second gets its own backup instead of overwriting the first
    config.write_bytes(edited)
    again = build_model(ModelEntry(onnx, name="m"), root)
    assert again.backup != built.backup and built.backup.read_bytes() == edited
    assert leftovers(root) == []


def test_triton_build_failing_mid_write_leaves_the_model_as_it_was(tmp_path, exported_dir, monkeypatch):
    from modelport.triton import build

    onnx = str(exported_dir / f"{STEM}.onnx")
    root = tmp_path / "repo"
    build_model(ModelEntry(onnx, name="m"), root)
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    monkeypatch.setattr(build, "config_text", boom)  # the model file is already staged when this runs
    with pytest.raises(Boom):
        build_model(ModelEntry(onnx, name="m"), root)
    with pytest.raises(Boom):
        build_model(ModelEntry(onnx, name="m", version=1), root, force=True)
    assert {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (root / "m").iterdir()) == ["1", "config.pbtxt"]


# ---- SQLite databases: created whole, never over another file; an existing database is opened ------------

def test_reid_database_is_never_created_over_a_user_file(tmp_path):
    from modelport.reid import store

    path = tmp_path / "detections.db"
    path.write_bytes(USER * 10)
    with pytest.raises(store.DatabaseError, match="not a SQLite database"):
        store.connect(path, create=True)
    assert path.read_bytes() == USER * 10
    fresh = tmp_path / "new" / "detections.db"
    conn = store.connect(fresh, create=True)
    conn.execute("INSERT INTO reid_meta VALUES ('mine', 'kept')")
    conn.commit()
    conn.close()
    conn = store.connect(fresh, create=True)  # an existing database is opened, not replaced
    assert conn.execute("SELECT value FROM reid_meta WHERE key = 'mine'").fetchone() == ("kept",)
    conn.close()
    assert leftovers(tmp_path) == []


def test_reid_database_failing_while_created_leaves_nothing(tmp_path, monkeypatch):
    from modelport.reid import store

    monkeypatch.setattr(store, "MODELPORT_DDL", "CREATE TABLE broken (")
    with pytest.raises(store.DatabaseError, match="detections.db: could not create"):
        store.connect(tmp_path / "detections.db", create=True)
    assert list(tmp_path.iterdir()) == []


def test_search_index_is_never_created_over_a_user_file(tmp_path, monkeypatch):
    from modelport.search import store

    path = tmp_path / "index.db"
    path.write_bytes(USER * 10)
    with pytest.raises(CorruptFileError, match="index.db"):
        store.IndexStore(path, create=True)
    assert path.read_bytes() == USER * 10
    with store.IndexStore(tmp_path / "sub" / "new.db", create=True) as index:
        assert len(index) == 0
    shutil.rmtree(tmp_path / "sub")
    monkeypatch.setattr(store, "_SCHEMA", "CREATE TABLE broken (")
    with pytest.raises(CorruptFileError, match="broken.db: could not create"):
        store.IndexStore(tmp_path / "broken.db", create=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.db"]
