"""`triton build` of several models is all or nothing: a failing entry leaves the repository as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_triton import STEM

from modelport.errors import ExportError
from modelport.triton import ModelEntry, build_repository


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_failing_entry_leaves_the_earlier_entries_out_and_the_repository_as_it_was(tmp_path, exported_dir):
    repo = tmp_path / "model_repository"
    build_repository([ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet")], repo)
    before = _snapshot(repo)
    entries = [ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="fresh"),           # would succeed
               ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet"),           # a second version: fine
               ModelEntry(str(exported_dir / f"{STEM}.torchscript"), name="osnet")]    # cannot join onnx: fails
    with pytest.raises(ExportError, match="one model has one backend") as failed:
        build_repository(entries, repo)
    assert str(repo / "osnet") in str(failed.value) and ".staging" not in str(failed.value)
    assert _snapshot(repo) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_repository"]  # no staging copy left beside it


def test_a_build_that_passes_publishes_every_entry_with_paths_in_the_repository(tmp_path, exported_dir):
    repo = tmp_path / "model_repository"
    build_repository([ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet")], repo)
    built = build_repository([ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet"),
                              ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="fresh")], repo)
    assert [(b.name, b.version) for b in built] == [("osnet", 2), ("fresh", 1)]
    assert all(b.path.is_dir() and b.path.parent.parent == repo and b.config.is_file() for b in built)
    assert sorted(p.name for p in (repo / "osnet").iterdir() if p.is_dir()) == ["1", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_repository"]
