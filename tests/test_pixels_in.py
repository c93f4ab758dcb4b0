"""Pixels in, results out (benchmarks/pixels_in.py): the --uint8-input export served by the builtin server gives the
float-input export's embeddings for the same decoded crops, through the benchmark's own client path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import builtin_server

from modelport.export import export
from modelport.triton import ModelEntry, build_repository

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pixels_in  # noqa: E402

STEM = "osnet_x0_25_msmt17"
OSNET = pixels_in.SUBJECTS["osnet"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, exported_dir):
    """The builtin server with the float export and a --uint8-input export of the same weights; (address, repo)."""
    work = tmp_path_factory.mktemp("pixels-in")
    (folded,) = export(exported_dir / f"{STEM}.pt", "onnx", out=work, uint8_input=True)
    repo = work / "repo"
    models, options = OSNET.models, OSNET.options
    build_repository(
        [
            ModelEntry(str(exported_dir / f"{STEM}.onnx"), name=models["float"], options=options),
            ModelEntry(str(folded), name=models["uint8"], options=options),
        ],
        repo,
    )
    with builtin_server(repo) as server:
        yield server.address, repo


def test_uint8_input_export_served_gives_the_float_paths_embeddings(served, exported_dir):
    from modelport.discover import open_artifact

    address, repo = served
    clients = {
        k: pixels_in.Client(address, name, pixels_in.served_spec(repo, name), OSNET) for k, name in OSNET.models.items()
    }
    try:
        assert clients["uint8"].spec.inputs[0].dtype == "uint8" and clients["uint8"].spec.preprocess.in_graph
        assert clients["float"].spec.inputs[0].dtype == "float32"
        crops = OSNET.sample(4)  # four sizes, all resized on the client
        check = pixels_in.agreement(clients, crops, OSNET)
        assert check["images"] == 4 and check["min_cosine"] > 0.9999 and check["max_abs_diff"] < 1e-3
        # and both equal the float export run here, not only each other
        local = open_artifact(exported_dir / f"{STEM}.onnx").embed(crops)
        served_uint8, _, sent, received = clients["uint8"].call(crops, sizes=True)
        assert np.abs(np.stack(served_uint8) - local).max() < 1e-3
        _, _, sent_float, _ = clients["float"].call(crops, sizes=True)
        # the wire: 256x128x3 bytes per crop against four times as many as float32
        assert 4 * 256 * 128 * 3 <= sent < 4 * 256 * 128 * 3 + 1024 and sent_float > 3.9 * sent and received > 4 * 2048
    finally:
        for c in clients.values():
            c.close()


def test_a_cell_counts_images_bytes_and_cpu(served):
    address, repo = served
    name = OSNET.models["uint8"]
    client = pixels_in.Client(address, name, pixels_in.served_spec(repo, name), OSNET)
    try:  # the builtin server runs in this process
        cell = pixels_in.run_cell(client, OSNET.sample(8), 4, 0.2, server_pid=os.getpid())
    finally:
        client.close()
    assert cell["images"] == 4 * cell["requests"] >= 4 and cell["request_bytes"] >= cell["images"] * 256 * 128 * 3
    assert 0 < cell["stage_cpu_s"]["prepare"] <= cell["client_cpu_s"] and cell["wall_s"] >= 0.2
    row = pixels_in.per_image([cell])
    assert row["images"] == cell["images"] and row["client_cpu_ms"] > 0


def test_the_detector_client_reads_served_answers_as_the_local_detector_does(tmp_path):
    """The yolo11n cell's client path (letterbox to uint8 as the served spec says, NMS, boxes back through each
    letterbox) gives the boxes ``DetectRunner.detect`` gives locally for the same scenes."""
    import warnings

    pytest.importorskip("ultralytics")
    import modelport
    from modelport.detect.export import export_detector
    from modelport.detect.untrained import save_untrained

    yolo = pixels_in.SUBJECTS["yolo11n"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = save_untrained(tmp_path / "yolo11n.pt", "yolo11n", seed=0, imgsz=320)
    (result,) = export_detector(weights, "onnx", out=tmp_path, imgsz=320, verify_conf=0.01, uint8_input=True)
    assert result.ok, result.error
    repo = tmp_path / "repo"
    name = yolo.models["uint8"]
    build_repository([ModelEntry(str(result.path), name=name, options=yolo.options)], repo)
    scenes = yolo.sample(4)  # four sizes, letterboxed on the client
    want = modelport.load(result.path).detect(scenes)  # the served defaults: conf 0.25, iou 0.7
    with builtin_server(repo) as server:
        client = pixels_in.Client(server.address, name, pixels_in.served_spec(repo, name), yolo)
        try:
            got, answer, sent, _ = client.call(scenes, sizes=True)
        finally:
            client.close()
    assert answer.shape == (4, 84, 2100) and 4 * 320 * 320 * 3 <= sent < 4 * 320 * 320 * 3 + 1024
    assert sum(len(d) for d in want) > 0  # boxes to compare
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.classes, w.classes)
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-3)
        np.testing.assert_allclose(g.scores, w.scores, atol=1e-5)
