"""ONNX Runtime streams: a large batch split into runs pulled by single-threaded streams gives exactly the
one-run result."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.formats.base import example_batch
from modelport.formats.onnx import STREAM_MIN_ROWS, OnnxRunner


def test_streams_split_large_batches_and_agree_with_one_run(exported_dir):
    path = exported_dir / "osnet_x0_25_msmt17.onnx"
    single = OnnxRunner(path, threads=2, streams=1)
    streamed = OnnxRunner(path, threads=2, streams=2)
    assert streamed.settings["streams"] == 2 and streamed.settings["streams_from_batch"] == 2 * STREAM_MIN_ROWS
    batch = example_batch(single.spec.with_batch(None), count=21, seed=5)
    assert streamed.stream_rows(batch.shape) == 8  # 3 runs (8, 8, 5) pulled by 2 streams
    assert streamed.stream_rows(batch[:9].shape) == 5  # never more than an even share
    assert streamed.stream_rows((4, 3, 640, 640)) == 1
    want = single(batch)["embeddings"]
    got = streamed(batch)["embeddings"]
    assert streamed._stream_session is not None  # the split path really ran
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    small = OnnxRunner(path, threads=2, streams=2)
    np.testing.assert_allclose(small(batch[:3])["embeddings"], want[:3], atol=1e-5)
    assert small._stream_session is None  # below streams_from_batch: one multi-threaded run
    eager = OnnxRunner(path, threads=2, streams=2, split_from=2)  # how detectors open: any full split
    np.testing.assert_allclose(eager(batch[:2])["embeddings"], want[:2], atol=1e-5)
    assert eager._stream_session is not None and eager.settings["streams_from_batch"] == 2
    eager.release_streams()  # idle: the stream session and its memory go; the next batch reopens it
    assert eager._stream_session is None
    np.testing.assert_allclose(eager(batch)["embeddings"], want, atol=1e-5)
    streamed.close()


def test_streams_default_to_the_thread_count_and_refuse_fixed_batches(exported_dir, tmp_path):
    from modelport.export import export

    assert OnnxRunner(exported_dir / "osnet_x0_25_msmt17.onnx", threads=2).streams == 2
    assert OnnxRunner(exported_dir / "osnet_x0_25_msmt17.onnx", threads=1).streams == 1
    weights = exported_dir / "osnet_x0_25_msmt17.pt"
    [fixed] = export(weights, "onnx", batch=4, out=tmp_path, verify=False)
    assert OnnxRunner(fixed, threads=2).streams == 1  # a fixed batch cannot be split
    with pytest.raises(ValueError, match="dynamic-batch"):
        OnnxRunner(fixed, threads=2, streams=2)
