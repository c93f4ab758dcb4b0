"""ONNX Runtime streams: a large batch split into runs pulled by single-threaded streams gives exactly the
one-run result. Streaming batch after batch (ONNX Runtime streams, OpenVINO's THROUGHPUT queue) keeps the
next batches running while one is returned, and returns each exactly as a call would."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.formats.base import STREAM_AHEAD, example_batch
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


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_stream_runs_batches_ahead_and_returns_every_batch_in_order(exported_dir, runtime):
    from modelport.formats.openvino import OpenVinoRunner

    if runtime == "onnx":
        path = exported_dir / "osnet_x0_25_msmt17.onnx"
        single = OnnxRunner(path, threads=2, streams=1)
        streamed = OnnxRunner(path, threads=2, streams=2)
    else:  # the THROUGHPUT queue's requests take the next batch while this one is returned
        single = streamed = OpenVinoRunner(exported_dir / "osnet_x0_25_msmt17_openvino_model")
    batch = example_batch(single.spec.with_batch(None), count=21, seed=6)
    sizes = [16, 3, 0, 1, 21, 16]  # a partial batch, an empty one, uneven runs
    starts = np.cumsum([0, *sizes])
    parts = [np.concatenate([batch, batch])[s:s + n] for s, n in zip(starts, sizes)]
    pulled: list[int] = []

    def source():
        for key, part in enumerate(parts):
            pulled.append(key)
            yield key, part

    got = []
    for key, vectors in streamed.embed_stream(source()):
        # The next STREAM_AHEAD batches are already queued to the runtime when a batch comes back.
        assert pulled[-1] == min(key + STREAM_AHEAD, len(parts) - 1)
        got.append((key, vectors))
    assert [k for k, _ in got] == list(range(len(parts)))
    for (_, vectors), part in zip(got, parts):
        assert vectors.shape == (len(part), 512)
        if len(part):
            np.testing.assert_allclose(vectors, single.embed(part, prepared=True), rtol=0, atol=1e-5)
    if runtime == "onnx":
        sequential = [v for _, v in single.embed_stream(enumerate(parts))]  # the base class: batch by batch
        for a, (_, b) in zip(sequential, got):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    streamed.close()


def test_stream_passes_the_sources_error_on_and_the_runner_stays_usable(exported_dir):
    path = exported_dir / "osnet_x0_25_msmt17.onnx"
    streamed = OnnxRunner(path, threads=2, streams=2)
    batch = example_batch(streamed.spec.with_batch(None), count=16, seed=7)

    def source():
        for key in range(STREAM_AHEAD + 1):
            yield key, batch
        raise OSError("video.mp4: cannot decode frame 12")

    seen = []
    with pytest.raises(OSError, match="frame 12"):
        for key, _ in streamed.stream(source()):
            seen.append(key)
    assert seen == [0]  # the later batches were in flight, not finished, when the source failed
    with pytest.raises(ValueError, match="expected input shape"):  # each batch is checked like a call
        list(streamed.stream([(0, batch[:, :, :128])]))
    np.testing.assert_allclose(next(streamed.embed_stream([(0, batch)]))[1],
                               streamed.embed(batch, prepared=True), rtol=0, atol=1e-6)
    streamed.close()

