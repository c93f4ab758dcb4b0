"""CI cannot pass with whole suites skipped: under MODELPORT_REQUIRE_SUITES a skip fails unless it is CUDA/TensorRT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = '''
import pytest

def test_runs():
    pass

@pytest.mark.skipif(True, reason="Chromium is not installed (apt-get install chromium)")
def test_browser():
    pass

def test_triton():
    pytest.skip("no tritonserver: Triton Inference Server is not installed here")

@pytest.mark.skipif(True, reason="needs a CUDA device")
def test_cuda():
    pass

@pytest.mark.skipif(True, reason="TensorRT: no CUDA device")
def test_tensorrt():
    pass
'''


def run_probe(tmp_path: Path, required: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "MODELPORT_REQUIRE_SUITES"}
    env["PYTHONPATH"] = str(Path(__file__).parent)
    if required:
        env["MODELPORT_REQUIRE_SUITES"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "required_suites", "-p",
                           "no:cacheprovider", str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_without_the_flag_skips_stay_skips(tmp_path):
    done = run_probe(tmp_path, required=False)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 4 skipped" in done.stdout


def test_in_ci_a_skipped_browser_or_triton_suite_fails_the_run_but_cuda_and_tensorrt_may_skip(tmp_path):
    done = run_probe(tmp_path, required=True)
    assert done.returncode != 0, done.stdout
    assert "1 failed, 1 passed, 2 skipped, 1 error" in done.stdout
    assert "ERROR test_probe.py::test_browser" in done.stdout
    assert "FAILED test_probe.py::test_triton" in done.stdout
    assert "Chromium is not installed" in done.stdout and "no tritonserver" in done.stdout


def test_the_ci_script_requires_the_suites_and_fails_when_chromium_does_not_install():
    script = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "MODELPORT_REQUIRE_SUITES=1" in script
    assert "browser tests will be skipped" not in script


DOCS_PROBE = '''
import pytest

def test_install_block():
    pytest.skip("an install command, which .ci/run has already run")

def test_other_block():
    pytest.skip("needs a server that is not running")

def test_cuda_block():
    pytest.skip("needs a CUDA GPU")
'''


def test_in_ci_only_the_docs_install_blocks_may_skip_besides_cuda_and_tensorrt(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_docs.py").write_text(DOCS_PROBE)
    # The same reason outside the documentation's tests is not accepted.
    (tmp_path / "tests" / "test_other.py").write_text(DOCS_PROBE.split("def test_other_block")[0])
    env = {k: v for k, v in os.environ.items() if k != "MODELPORT_REQUIRE_SUITES"}
    env.update(PYTHONPATH=str(Path(__file__).parent), MODELPORT_REQUIRE_SUITES="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "required_suites", "-p",
                           "no:cacheprovider", "--rootdir", str(tmp_path), "tests"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert "2 failed, 2 skipped" in done.stdout, done.stdout
    assert "FAILED tests/test_docs.py::test_other_block" in done.stdout
    assert "FAILED tests/test_other.py::test_install_block" in done.stdout


def test_a_suite_with_a_lane_of_its_own_may_skip_in_the_main_run_and_is_required_in_its_lane(tmp_path):
    """BoxMOT's tests run in .ci/run's boxmot lane (its pins stay out of the test extra): a skip there fails."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_boxmot_compat.py").write_text(
        "import pytest\npytest.importorskip('no_such_module_here', reason='boxmot is not installed')\n")
    (tmp_path / "tests" / "test_other.py").write_text("def test_runs():\n    pass\n")
    base = {k: v for k, v in os.environ.items() if k not in ("MODELPORT_REQUIRE_SUITES", "MODELPORT_LANE")}
    base.update(PYTHONPATH=str(Path(__file__).parent), MODELPORT_REQUIRE_SUITES="1")
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "required_suites", "-p", "no:cacheprovider",
               "tests"]
    main = subprocess.run(command, cwd=tmp_path, env=base, capture_output=True, text=True, timeout=120)
    assert main.returncode == 0 and "1 passed, 1 skipped" in main.stdout, main.stdout
    lane = subprocess.run(command, cwd=tmp_path, env=dict(base, MODELPORT_LANE="boxmot"), capture_output=True,
                          text=True, timeout=120)
    assert lane.returncode != 0 and "a required suite was skipped" in lane.stdout, lane.stdout
    assert "boxmot is not installed" in lane.stdout
