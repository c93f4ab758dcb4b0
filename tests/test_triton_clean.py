"""`triton clean` touches only Triton model folders inside the repository: symlinks are never followed, what
modelport did not write stays and is listed, and --dry-run shows the plan without changing anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_triton import STEM, parse
from typer.testing import CliRunner

from modelport.cli import app
from modelport.triton import ModelEntry, build_repository
from modelport.triton.repo import clean_repository


@pytest.fixture(scope="module")
def built(tmp_path_factory, exported_dir) -> Path:
    root = tmp_path_factory.mktemp("clean") / "repo"
    onnx = str(exported_dir / f"{STEM}.onnx")
    build_repository([ModelEntry(onnx, name="osnet"), ModelEntry(onnx, name="other")], root)
    return root


@pytest.fixture
def repo(tmp_path, built) -> Path:
    """A private copy of a two-model repository a test may change."""
    return Path(shutil.copytree(built, tmp_path / "repo"))


def tree(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` (not following links) with its bytes, link target or "dir"."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = ("-> " + str(path.readlink()) if path.is_symlink() else "dir" if path.is_dir()
                      else path.read_bytes())
    return found


def outside_model(folder: Path, repo: Path) -> Path:
    """A folder outside the repository that looks like a model (config, version 1) plus a marker file."""
    shutil.copytree(repo / "osnet", folder)
    (folder / "marker.txt").write_text("mine, outside the repository")
    return folder


def reasons(result) -> dict[str, str]:
    return {str(k.path): k.reason for k in result.left_alone}


def test_a_symlinked_model_folder_pointing_outside_keeps_its_files(tmp_path, repo):
    outside = outside_model(tmp_path / "elsewhere" / "model", repo)
    before = tree(outside)
    (repo / "linked").symlink_to(outside, target_is_directory=True)
    result = clean_repository(repo, backup=tmp_path / "backup")
    assert tree(outside) == before  # config.pbtxt, 1/model.onnx and the marker all survive
    assert (repo / "linked").is_symlink()
    assert "outside the repository" in reasons(result)[str(repo / "linked")]
    assert not (tmp_path / "backup" / "linked").exists()
    assert sorted(p.name for p in repo.iterdir()) == ["linked"]  # the real models were cleaned


def test_an_empty_folder_that_is_not_a_model_survives(tmp_path, repo):
    (repo / "scratch").mkdir()
    (repo / "notes").mkdir()
    (repo / "notes" / "todo.txt").write_text("mine")
    result = clean_repository(repo, backup=tmp_path / "backup")
    assert (repo / "scratch").is_dir() and (repo / "notes" / "todo.txt").read_text() == "mine"
    assert "not a Triton model folder" in reasons(result)[str(repo / "scratch")]
    assert "not a Triton model folder" in reasons(result)[str(repo / "notes")]
    assert not (repo / "osnet").exists() and not (repo / "other").exists()


def test_dry_run_shows_the_plan_and_changes_nothing(tmp_path, repo):
    (repo / "scratch").mkdir()
    (repo / "other" / "1" / "notes.txt").write_text("mine")
    before = tree(repo)
    plan = clean_repository(repo, backup=tmp_path / "backup", dry_run=True)
    assert tree(repo) == before
    assert not (tmp_path / "backup").exists()
    assert plan.dry_run and plan.backup == tmp_path / "backup"
    assert set(plan.removed) == {repo / "osnet" / "1", repo / "osnet" / "config.pbtxt", repo / "osnet"}
    assert plan.backed_up == [repo / "osnet" / "config.pbtxt"]
    assert set(reasons(plan)) == {str(repo / "scratch"), str(repo / "other" / "1"),
                                  str(repo / "other" / "config.pbtxt")}
    # The plan is what a real run then does.
    done = clean_repository(repo, backup=tmp_path / "backup")
    assert (done.removed, done.left_alone) == (plan.removed, plan.left_alone)


def test_a_version_folder_holding_a_user_file_is_kept_whole(tmp_path, repo):
    (repo / "osnet" / "1" / "notes.txt").write_text("mine")
    result = clean_repository(repo, ["osnet"], backup=tmp_path / "backup")
    assert sorted(p.name for p in (repo / "osnet" / "1").iterdir()) == ["golden", "model.onnx", "notes.txt"]
    assert "notes.txt" in reasons(result)[str(repo / "osnet" / "1")]
    # the version that stays keeps the config it is served with
    assert parse(repo / "osnet" / "config.pbtxt").name == "osnet"
    assert result.removed == [] and (repo / "other" / "1" / "model.onnx").is_file()


def test_golden_outputs_go_with_their_version_unless_the_folder_holds_a_user_file(tmp_path, repo):
    assert (repo / "other" / "1" / "golden" / "golden.json").is_file()
    (repo / "osnet" / "1" / "golden" / "mine.txt").write_text("mine")
    result = clean_repository(repo, backup=tmp_path / "backup")
    assert "golden" in reasons(result)[str(repo / "osnet" / "1")]
    assert (repo / "osnet" / "1" / "golden" / "mine.txt").is_file()
    assert repo / "other" / "1" in result.removed and not (repo / "other").exists()


def test_symlinked_version_folders_and_files_pointing_outside_are_left_alone(tmp_path, repo):
    outside = outside_model(tmp_path / "elsewhere" / "model", repo)
    before = tree(outside)
    (repo / "osnet" / "2").symlink_to(outside / "1", target_is_directory=True)
    (repo / "other" / "1" / "model.onnx").unlink()
    (repo / "other" / "1" / "model.onnx").symlink_to(outside / "1" / "model.onnx")
    result = clean_repository(repo, backup=tmp_path / "backup")
    assert tree(outside) == before
    why = reasons(result)
    assert "outside the repository" in why[str(repo / "osnet" / "2")]
    assert "model.onnx" in why[str(repo / "other" / "1")] and "outside" in why[str(repo / "other" / "1")]
    assert (repo / "osnet" / "2").is_symlink() and not (repo / "osnet" / "1").exists()
    assert (repo / "other" / "1" / "model.onnx").is_symlink()


def test_cli_dry_run_lists_what_would_go_and_what_stays(tmp_path, repo):
    outside = outside_model(tmp_path / "elsewhere" / "model", repo)
    (repo / "linked").symlink_to(outside, target_is_directory=True)
    (repo / "scratch").mkdir()
    before = tree(repo)
    res = CliRunner().invoke(app, ["triton", "clean", str(repo), "--dry-run", "--backup", str(tmp_path / "bk")],
                             env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert tree(repo) == before and not (tmp_path / "bk").exists()
    # Whitespace aside: the CLI's console may have been made earlier in this process, narrower, wrapping lines.
    flat, bare = " ".join(res.output.split()), "".join(res.output.split())
    assert f"wouldremove{repo / 'osnet' / '1'}" in bare
    assert "left alone" in flat and "not a Triton model folder" in flat and "outside the repository" in flat
    res = CliRunner().invoke(app, ["triton", "clean", str(repo), "--yes", "--backup", str(tmp_path / "bk")],
                             env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert f"removed{repo / 'osnet' / '1'}" in "".join(res.output.split())
    assert "outside the repository" in " ".join(res.output.split())
    assert (repo / "linked" / "1" / "model.onnx").is_file() and (repo / "scratch").is_dir()
