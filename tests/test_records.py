"""Benchmark records say where their numbers come from (issue 27): every JSON record under benchmarks/ and
results/ carries the commit, the dirty flag, the CPU with its speed flags (VNNI or not) and the model's recipe,
and the common header writes them (docs/benchmark-schema.md, "Provenance")."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from modelport.bench_record import DIRTY_SCOPE, RECIPE_KINDS, Recipe, git_state, header, recipe_from_source
from modelport.machine import SPEED_FLAGS

ROOT = Path(__file__).resolve().parents[1]
COMMIT_SOURCES = ("recorded", "git log of the record")


def record_files() -> list[Path]:
    """Every *.json and *.jsonl under benchmarks/ and results/, except the ignored scratch folders (work/)."""
    found = []
    for folder in (ROOT / "benchmarks", ROOT / "results"):
        if folder.is_dir():
            found += [p for p in folder.rglob("*.json*") if p.suffix in (".json", ".jsonl")
                      and "work" not in p.relative_to(folder).parts]
    return sorted(found)


def records() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in record_files():
        name = str(path.relative_to(ROOT))
        if path.suffix == ".jsonl":
            out += [(f"{name}:{i}", json.loads(line))
                    for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
        else:
            out.append((name, json.loads(path.read_text())))
    return out


def provenance_problems(record: dict[str, Any]) -> list[str]:
    """What a record lacks or holds outside the allowed values (empty: it says where its numbers come from)."""
    problems = _commit_problems(record) + _cpu_problems(record.get("cpu")) + _recipe_problems(record.get("recipe"))
    if not any(isinstance(record.get(k), str) and record[k] for k in ("created", "date")):
        problems.append("no date: expected 'created' or 'date'")
    return problems


def _commit_problems(record: dict[str, Any]) -> list[str]:
    problems = []
    commit = record.get("commit")
    if not (isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit)):
        problems.append(f"commit {commit!r}: expected 40 hex digits")
    if record.get("commit_source") not in COMMIT_SOURCES:
        problems.append(f"commit_source {record.get('commit_source')!r}: expected one of {COMMIT_SOURCES}")
    if "dirty" not in record or record["dirty"] not in (True, False, None):
        problems.append(f"dirty {record.get('dirty', '<missing>')!r}: expected true, false or null (not recorded)")
    if not (isinstance(record.get("dirty_scope"), str) and record["dirty_scope"]):
        problems.append("dirty_scope: missing (what the dirty flag covered, or 'not recorded')")
    return problems


def _cpu_problems(cpu: Any) -> list[str]:
    if not isinstance(cpu, dict):
        return [f"cpu {cpu!r}: expected an object with model, flags, vnni, physical_cores, source"]
    problems = []
    if not (isinstance(cpu.get("model"), str) and cpu["model"]):
        problems.append(f"cpu.model {cpu.get('model')!r}: expected a name or 'unknown'")
    flags = cpu.get("flags", "<missing>")
    if flags is not None and not (isinstance(flags, list) and set(flags) <= set(SPEED_FLAGS)):
        problems.append(f"cpu.flags {flags!r}: expected a list drawn from {SPEED_FLAGS} or null (not recorded)")
    vnni = cpu.get("vnni", "<missing>")
    if vnni not in (True, False, None):
        problems.append(f"cpu.vnni {vnni!r}: expected true, false or null")
    elif isinstance(flags, list) and vnni != bool({"avx512_vnni", "avx_vnni"} & set(flags)):
        problems.append(f"cpu.vnni {vnni!r} disagrees with cpu.flags {flags}")
    elif flags is None and vnni is not None:
        problems.append("cpu.vnni is known while cpu.flags is not")
    cores = cpu.get("physical_cores", "<missing>")
    if cores is not None and not (isinstance(cores, int) and cores > 0):
        problems.append(f"cpu.physical_cores {cores!r}: expected a positive int or null")
    if not (isinstance(cpu.get("source"), str) and cpu["source"]):
        problems.append("cpu.source: missing ('recorded', or where the CPU was read)")
    return problems


def _recipe_problems(recipe: Any) -> list[str]:
    if not isinstance(recipe, dict):
        return [f"recipe {recipe!r}: expected an object with kind, origin, details, source"]
    problems = []
    if recipe.get("kind") not in RECIPE_KINDS:
        problems.append(f"recipe.kind {recipe.get('kind')!r}: expected one of {RECIPE_KINDS}")
    for key in ("origin", "source"):
        if not (isinstance(recipe.get(key), str) and recipe[key]):
            problems.append(f"recipe.{key}: missing")
    return problems


def test_there_are_records_to_check():
    assert len(record_files()) >= 10


@pytest.mark.parametrize("name,record", records(), ids=[name for name, _ in records()])
def test_every_record_carries_commit_dirty_flag_cpu_flags_and_recipe(name, record):
    assert not provenance_problems(record), f"{name}: " + "; ".join(provenance_problems(record))


def test_the_check_rejects_a_record_without_provenance():
    problems = provenance_problems({"machine": {"cpu": "x86_64"}, "date": "2026-11-30"})
    assert any(p.startswith("commit ") for p in problems) and any(p.startswith("cpu ") for p in problems)
    assert any(p.startswith("recipe ") for p in problems)


def test_header_records_commit_dirty_flag_cpu_flags_and_recipe():
    report = header("remote", {"name": "m", "source": {"kind": "random", "file": None, "sha256": None}}, {},
                    gpu=False, peak=False)
    assert not provenance_problems(report), provenance_problems(report)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert report["commit"] == head and report["commit_source"] == "recorded"
    assert isinstance(report["dirty"], bool) and report["dirty_scope"] == DIRTY_SCOPE
    assert report["cpu"]["source"] == "recorded" and isinstance(report["cpu"]["flags"], list)
    assert report["recipe"]["kind"] == "untrained"


def test_header_takes_the_recipe_the_writer_knows():
    recipe = Recipe("damped", "random init, seed 0", "residual BatchNorm x0.3")
    report = header("reid", {"name": "m", "source": {"kind": "random"}}, {}, gpu=False, peak=False, recipe=recipe)
    assert report["recipe"] == {"kind": "damped", "origin": "random init, seed 0",
                                "details": "residual BatchNorm x0.3", "source": "recorded"}


def test_recipe_of_a_weights_file_names_it_by_sha256():
    recipe = recipe_from_source({"kind": "weights", "file": "/w/osnet_x0_25_msmt17.pt", "sha256": "ab" * 32})
    assert recipe.kind == "trained" and "osnet_x0_25_msmt17.pt" in recipe.origin and "ab" * 32 in recipe.origin
    assert recipe_from_source({"kind": "random"}).kind == "untrained"


def test_unknown_recipe_kinds_and_sources_are_refused_by_name():
    with pytest.raises(ValueError, match="'pretrained'.*untrained, bn_calibrated, damped, trained"):
        Recipe("pretrained", "somewhere")
    with pytest.raises(ValueError, match="'hub'"):
        recipe_from_source({"kind": "hub"})


def test_dirty_counts_untracked_files(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("commit", "-q", "-m", "a")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "new.txt").write_text("not added")
    state = git_state(tmp_path)
    assert state["dirty"] is True and re.fullmatch(r"[0-9a-f]{40}", state["commit"])


def test_outside_a_checkout_the_commit_is_none_and_says_why(tmp_path):
    state = git_state(tmp_path)
    assert state["commit"] is None and state["dirty"] is None and state["commit_source"] == "not a git checkout"
