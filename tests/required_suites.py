"""Pytest plugin for CI: a skipped test fails the run unless it needs hardware this machine lacks.

`.ci/run` sets ``MODELPORT_REQUIRE_SUITES=1``. Without it (a developer's laptop without Chromium, say) skips
stay skips. With it, the browser, real-Triton and every other suite this machine can run is required: if
Chromium did not install or the wrong nvidia-pytriton resolved, CI fails instead of passing with whole
areas skipped. Only skips whose reason names CUDA or TensorRT are accepted, and in the documentation's tests
(tests/test_docs.py) a block whose reason is one of DOCS_SKIP_REASONS.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

REQUIRE_ENV = "MODELPORT_REQUIRE_SUITES"
# What a CPU-only CI machine cannot run; every other skip reason is a missing install that CI must fix.
HARDWARE_SKIP = re.compile(r"\bCUDA\b|\bTensorRT\b")
# A documentation block that cannot run in a test for what it is, not for what the machine lacks: the install
# commands (CI has already run them, from the README's own test command). Matched whole, in docs tests only.
DOCS_TESTS = "tests/test_docs.py::"
# And docs/scale.md's multi-machine deployment: Docker and images from Docker Hub and nvcr.io, which a CI machine
# that reaches package registries only cannot pull (tests/test_deploy.py checks the compose file instead).
DOCS_SKIP_REASONS = ("an install command, which .ci/run has already run",
                     "needs Docker with the compose plugin, images from Docker Hub and nvcr.io, and video files")
# Suites whose extra is not in the test extra (its pins would change the test environment): .ci/run runs each in
# a virtual environment of its own with MODELPORT_LANE set to its name, where it is required like any other.
OWN_LANES = {"tests/test_boxmot_compat.py": "boxmot"}
LANE_ENV = "MODELPORT_LANE"


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def _fail_if_required(report: Any) -> None:
    if not (_required() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    if HARDWARE_SKIP.search(reason):
        return
    if report.nodeid.startswith(DOCS_TESTS) and reason.removeprefix("Skipped: ") in DOCS_SKIP_REASONS:
        return
    lane = OWN_LANES.get(report.nodeid.split("::")[0])
    if lane and os.environ.get(LANE_ENV) != lane:
        return
    report.outcome = "failed"
    report.longrepr = (f"a required suite was skipped ({REQUIRE_ENV} is set; only CUDA/TensorRT may skip): "
                       f"{reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    _fail_if_required(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    # Module-level skips (importorskip at import, allow_module_level) never reach runtest_makereport.
    outcome = yield
    _fail_if_required(outcome.get_result())
