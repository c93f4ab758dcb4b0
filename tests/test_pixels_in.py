"""Pixels in, results out (benchmarks/pixels_in.py): the --uint8-input export served by the builtin server gives the
float-input export's embeddings for the same decoded crops, through the benchmark's own client path."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from modelport.export import export
from modelport.serve import create_app
from modelport.triton import ModelEntry, build_repository
from modelport.triton.server import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pixels_in  # noqa: E402

STEM = "osnet_x0_25_msmt17"


@pytest.fixture(scope="module")
def served(tmp_path_factory, exported_dir):
    """The builtin server with the float export and a --uint8-input export of the same weights; (address, repo)."""
    work = tmp_path_factory.mktemp("pixels-in")
    (folded,) = export(exported_dir / f"{STEM}.pt", "onnx", out=work, uint8_input=True)
    repo = work / "repo"
    build_repository(
        [
            ModelEntry(str(exported_dir / f"{STEM}.onnx"), name=pixels_in.MODELS["float"], options=pixels_in.OPTIONS),
            ModelEntry(str(folded), name=pixels_in.MODELS["uint8"], options=pixels_in.OPTIONS),
        ],
        repo,
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(repo), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"127.0.0.1:{port}", repo
    server.should_exit = True
    thread.join(timeout=10)


def test_uint8_input_export_served_gives_the_float_paths_embeddings(served, exported_dir):
    from modelport.discover import open_artifact

    address, repo = served
    clients = {
        k: pixels_in.Client(address, name, pixels_in.served_spec(repo, name)) for k, name in pixels_in.MODELS.items()
    }
    try:
        assert clients["uint8"].spec.inputs[0].dtype == "uint8" and clients["uint8"].spec.preprocess.in_graph
        assert clients["float"].spec.inputs[0].dtype == "float32"
        crops = pixels_in.crops(4)  # four sizes, all resized on the client
        check = pixels_in.agreement(clients, crops)
        assert check["crops"] == 4 and check["min_cosine"] > 0.9999 and check["max_abs_diff"] < 1e-3
        # and both equal the float export run here, not only each other
        local = open_artifact(exported_dir / f"{STEM}.onnx").embed(crops)
        served_uint8, sent, received = clients["uint8"].embed(crops, sizes=True)
        assert np.abs(served_uint8 - local).max() < 1e-3
        _, sent_float, _ = clients["float"].embed(crops, sizes=True)
        # the wire: 256x128x3 bytes per crop against four times as many as float32
        assert 4 * 256 * 128 * 3 <= sent < 4 * 256 * 128 * 3 + 1024 and sent_float > 3.9 * sent and received > 4 * 2048
    finally:
        for c in clients.values():
            c.close()


def test_a_cell_counts_images_bytes_and_cpu(served):
    address, repo = served
    name = pixels_in.MODELS["uint8"]
    client = pixels_in.Client(address, name, pixels_in.served_spec(repo, name))
    try:  # the builtin server runs in this process
        cell = pixels_in.run_cell(client, pixels_in.crops(8), 4, 0.2, server_pid=os.getpid())
    finally:
        client.close()
    assert cell["images"] == 4 * cell["requests"] >= 4 and cell["request_bytes"] >= cell["images"] * 256 * 128 * 3
    assert 0 < cell["stage_cpu_s"]["prepare"] <= cell["client_cpu_s"] and cell["wall_s"] >= 0.2
    row = pixels_in.per_image([cell])
    assert row["images"] == cell["images"] and row["client_cpu_ms"] > 0
