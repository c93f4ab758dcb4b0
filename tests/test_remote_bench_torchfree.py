"""``modelport bench URL`` on a client where torch, onnxruntime, openvino, ultralytics and open_clip cannot be
imported: the client runs in a subprocess whose ``sitecustomize`` refuses those imports (and records every attempt,
so an ImportError swallowed on the way counts too); the builtin server it times runs here, with all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import builtin_server

from modelport.triton import ConfigOptions, ModelEntry, build_repository

BLOCKED = ("torch", "torchvision", "onnxruntime", "openvino", "ultralytics", "open_clip")

SITECUSTOMIZE = textwrap.dedent(
    """
    import importlib.abc
    import os
    import sys

    BLOCKED = set(os.environ["MODELPORT_TEST_BLOCKED"].split(","))
    ATTEMPTS = os.environ["MODELPORT_TEST_ATTEMPTS"]


    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                with open(ATTEMPTS, "a") as handle:
                    handle.write(name + "\\n")
                raise ImportError(f"{name} is not installed on this client (test)")
            return None


    sys.meta_path.insert(0, Refuse())
    """
)


@pytest.fixture(scope="module")
def served(tmp_path_factory, exported_dir) -> str:
    """The builtin server in this process, serving the OSNet x0_25 ONNX export as ``osnet``; its address."""
    repo = tmp_path_factory.mktemp("torchfree") / "repo"
    entry = ModelEntry(
        str(exported_dir / "osnet_x0_25_msmt17.onnx"), name="osnet", options=ConfigOptions(max_batch_size=8)
    )
    build_repository([entry], repo)
    with builtin_server(repo) as server:
        yield server.address


def _client(tmp_path: Path, code: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``code`` in a fresh interpreter that cannot import the blocked packages; returns the finished process
    and the imports it attempted."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    attempts = tmp_path / "attempts.txt"
    attempts.write_text("")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        MODELPORT_TEST_BLOCKED=",".join(BLOCKED),
        MODELPORT_TEST_ATTEMPTS=str(attempts),
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    return done, attempts.read_text().split()


def test_the_client_really_cannot_import_torch(tmp_path):
    done, attempts = _client(tmp_path, "import torch")
    assert done.returncode != 0 and "not installed on this client" in done.stderr
    assert attempts == ["torch"]


def test_modelport_bench_url_writes_the_record_without_torch_on_the_client(served, tmp_path):
    record = tmp_path / "served.json"
    argv = ["modelport", "bench", f"http://{served}/osnet", "--batch", "1,3", "--seconds", "0.4", "--json", str(record)]
    done, attempts = _client(tmp_path, f"import sys; sys.argv = {argv!r}\nfrom modelport.cli import main; main()")
    assert done.returncode == 0, done.stdout + done.stderr
    assert attempts == [], f"the client tried to import {sorted(set(attempts))}"
    report = json.loads(record.read_text())
    assert [r["batch"] for r in report["rows"]] == [1, 3]
    assert report["model"]["name"] == "osnet_x0_25" and report["endpoints"] == [f"http://{served}/osnet"]
    for row in report["rows"]:
        assert row["status"] == "ok" and row["latency_ms"]["n"] >= 1 and row["throughput"] > 0
    assert "requests per endpoint" in done.stdout
