"""The pins say what a fresh install gets, and the serving records ran what the pins install."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import tomllib

ROOT = Path(__file__).parents[1]
SERVE_RECORDS = ("serve_triton_load.json", "serve_triton_load_yolo11n_sync.json")


def pinned(name: str) -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    found = [r for reqs in extras.values() for r in reqs if re.match(rf"{re.escape(name)}\b", r)]
    assert len(found) == 1, found
    match = re.fullmatch(rf"{re.escape(name)}==([\w.]+)", found[0])
    assert match, f"{found[0]}: pin the version a fresh install resolves (==), not a range"
    return match.group(1)


def test_nvidia_pytriton_is_pinned_to_what_this_install_resolved():
    assert version("nvidia-pytriton") == pinned("nvidia-pytriton")


def test_the_triton_serving_records_ran_the_pinned_wheel_and_name_the_server_build():
    want = pinned("nvidia-pytriton")
    for name in SERVE_RECORDS:
        record = json.loads((ROOT / "benchmarks" / "results" / name).read_text())
        assert record["versions"]["nvidia-pytriton"] == want, name
        server = record["servers"]["triton"]
        assert server["name"] == "triton" and re.fullmatch(r"\d+\.\d+\.\d+", server["version"]), name
