"""Runners close their runtimes' threads deterministically: on ``close``, and at exit for runners left open, so a
process ends cleanly even with batches still running (issue 27: a crash at exit under load)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from modelport.formats import closing
from modelport.formats.base import example_batch
from modelport.formats.onnx import OnnxRunner
from modelport.formats.openvino import OpenVinoRunner

# What a caller that stops early or raises leaves behind: ONNX Runtime stream runs and OpenVINO async requests
# still running when the interpreter exits, nothing closed. Before the fix, OpenVINO's request threads calling
# back into a finalising interpreter aborted it ("FATAL: exception not rethrown", rc 134) in 10 of 10 runs.
LEFT_RUNNING = """
import sys
from pathlib import Path
from modelport.formats.base import example_batch
from modelport.formats.onnx import OnnxRunner
from modelport.formats.openvino import OpenVinoRunner

folder = Path(sys.argv[1])
onnx = OnnxRunner(folder / "osnet_x0_25_msmt17.onnx", threads=2, streams=2)
ov = OpenVinoRunner(folder / "osnet_x0_25_msmt17_openvino_model")
batch = example_batch(onnx.spec.with_batch(None), count=16, seed=16)
for runner in (onnx, ov):
    runner(batch[:1])
    runner(batch)
onnx._start(batch)
ov._start(batch)
print("left running", flush=True)
"""


def test_close_stops_the_runtimes_threads_and_a_later_call_reopens_them(exported_dir):
    onnx = OnnxRunner(exported_dir / "osnet_x0_25_msmt17.onnx", threads=2, streams=2)
    ov = OpenVinoRunner(exported_dir / "osnet_x0_25_msmt17_openvino_model")
    batch = example_batch(onnx.spec.with_batch(None), count=16, seed=3)
    want = {r.format: r(batch)["embeddings"] for r in (onnx, ov)}
    assert onnx._pool is not None and ov._queue is not None  # the threaded paths really ran
    assert onnx in closing._OPEN and ov in closing._OPEN
    closing._close_open()  # what runs at exit
    assert onnx._pool is None and onnx._stream_session is None
    assert ov._queue is None and ov._request is None and not ov._compiled
    for runner in (onnx, ov):
        np.testing.assert_allclose(runner(batch)["embeddings"], want[runner.format], atol=1e-5)
        runner(batch[:1])
        assert runner in closing._OPEN  # reopened, so closed at exit again
    onnx.close()
    onnx.close()  # closing twice is harmless
    ov.close()


def test_closing_from_a_stream_worker_does_not_join_it(exported_dir):
    onnx = OnnxRunner(exported_dir / "osnet_x0_25_msmt17.onnx", threads=2, streams=2)
    onnx(example_batch(onnx.spec.with_batch(None), count=8, seed=1))
    onnx._pool.submit(onnx.close).result(timeout=60)  # joining itself would raise "cannot join current thread"
    assert onnx._pool is None


@pytest.mark.slow
def test_exit_with_batches_still_running_is_clean_under_load(exported_dir):
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # the load the crash was seen under
    try:
        for attempt in range(8):
            run = subprocess.run([sys.executable, "-c", LEFT_RUNNING, str(exported_dir)], capture_output=True,
                                 text=True, timeout=120)
            assert run.returncode == 0 and "left running" in run.stdout, (attempt, run.returncode, run.stderr[-2000:])
            assert "terminate called" not in run.stderr and "FATAL" not in run.stderr, run.stderr[-2000:]
    finally:
        busy.kill()
        busy.wait()
