"""The KServe v2 server, driven by the official tritonclient.http client, compared with modelport's runners."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
import uvicorn
from PIL import Image
from tritonclient.utils import InferenceServerException

from modelport.discover import open_artifact
from modelport.preprocess import prepare
from modelport.samples import person_crops
from modelport.serve import create_app
from modelport.spec import Source
from modelport.triton import ConfigOptions, ModelEntry, build_repository
from modelport.zoo import get_entry, spec_for

STEM = "osnet_x0_25_msmt17"
MAX_BODY = 8 << 20
PRE = spec_for(get_entry("osnet_x0_25"), Source("random")).preprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported_dir) -> Path:
    root = tmp_path_factory.mktemp("serve") / "repo"
    build_repository([
        # a long queue delay so that concurrent requests are certain to meet in one batch
        ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet",
                   options=ConfigOptions(preferred_batch_sizes=(4, 8), max_queue_delay_us=200_000)),
        ModelEntry(str(exported_dir / f"{STEM}_openvino_model"), name="osnet_ov",
                   options=ConfigOptions(dynamic_batching=False)),
        ModelEntry(str(exported_dir / f"{STEM}.torchscript"), name="osnet_ts"),
    ], root)
    return root


@pytest.fixture(scope="module")
def server(repo):
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(repo, max_body=MAX_BODY), host="127.0.0.1", port=port,
                                       log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert thread.is_alive() and time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(server):
    return httpclient.InferenceServerClient(server, concurrency=16)


@pytest.fixture(scope="module")
def runners(exported_dir):
    return {"osnet": open_artifact(exported_dir / f"{STEM}.onnx"),
            "osnet_ov": open_artifact(exported_dir / f"{STEM}_openvino_model"),
            "osnet_ts": open_artifact(exported_dir / f"{STEM}.torchscript")}


def crops_batch(n: int, seed: int) -> np.ndarray:
    return prepare(person_crops(n, 256, 128, seed=seed), PRE)


def infer(client, model: str, batch: np.ndarray, binary: bool) -> np.ndarray:
    meta = client.get_model_metadata(model)
    inp = httpclient.InferInput(meta["inputs"][0]["name"], list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary)
    out_name = meta["outputs"][0]["name"]
    result = client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput(out_name, binary_data=binary)])
    return result.as_numpy(out_name)


def test_health_metadata_and_config_through_the_official_client(client, repo):
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "modelport"
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.is_model_ready("osnet") and client.is_model_ready("osnet", "1")
    assert not client.is_model_ready("osnet", "7") and not client.is_model_ready("nope")
    meta = client.get_model_metadata("osnet_ts")
    assert meta["platform"] == "pytorch_libtorch" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "images__0", "datatype": "FP32", "shape": [-1, 3, 256, 128]}]
    assert meta["outputs"] == [{"name": "embeddings__0", "datatype": "FP32", "shape": [-1, 512]}]
    config = client.get_model_config("osnet")
    assert config["max_batch_size"] == 16 and config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    index = {row["name"]: row["state"] for row in client.get_model_repository_index()}
    assert index == {"osnet": "READY", "osnet_ov": "READY", "osnet_ts": "READY"}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("model", ["osnet", "osnet_ov", "osnet_ts"])
def test_infer_matches_modelports_own_runner(client, runners, model, binary):
    batch = crops_batch(3, seed=5)
    got = infer(client, model, batch, binary)
    want = runners[model](batch)["embeddings"]
    assert got.shape == (3, 512) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # the rows differ from each other, so a mixed-up row would fail the comparison above
    assert np.abs(want[0] - want[1]).max() > 1e-2


def test_concurrent_requests_are_batched_and_split_back(client, runners):
    batches = [crops_batch(1 + i % 2, seed=100 + i) for i in range(12)]
    before = client.get_inference_statistics("osnet")["model_stats"][0]
    pending = []
    for batch in batches:
        inp = httpclient.InferInput("images", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        pending.append(client.async_infer("osnet", [inp]))
    results = [p.get_result().as_numpy("embeddings") for p in pending]
    for batch, got in zip(batches, results):
        want = runners["osnet"](batch)["embeddings"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    after = client.get_inference_statistics("osnet")["model_stats"][0]
    requests = after["request_count"] - before["request_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert requests == 12 and after["inference_count"] - before["inference_count"] == 18
    assert executions < requests  # requests met in batches
    assert max(b["batch_size"] for b in after["batch_stats"]) > 2


def test_predict_returns_the_embedding_of_an_uploaded_image(server, runners):
    crop = person_crops(1, 256, 128, seed=9)[0]
    buffer = io.BytesIO()
    Image.fromarray(crop[..., ::-1]).save(buffer, "PNG")
    response = httpx.post(f"http://{server}/predict/osnet",
                          files={"image": ("crop.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "embed" and body["dim"] == 512 and body["model_version"] == "1"
    want = runners["osnet"].embed([crop])[0]
    assert float(np.dot(np.asarray(body["embedding"]), want)) > 0.99999
    raw = httpx.post(f"http://{server}/predict/osnet_ov", content=buffer.getvalue(),
                     headers={"Content-Type": "image/png"})
    assert raw.status_code == 200 and float(np.dot(np.asarray(raw.json()["embedding"]), want)) > 0.9999


def _expect(status: int, match: str, call) -> None:
    with pytest.raises(InferenceServerException) as info:
        call()
    assert info.value.status() == str(status) and match in info.value.message(), info.value


def test_bad_requests_get_clear_4xx_and_the_server_keeps_serving(client, server):
    good = crops_batch(1, seed=1)
    inp = httpclient.InferInput("images", [1, 3, 256, 128], "FP32")
    inp.set_data_from_numpy(good)
    _expect(404, "unknown model 'nope'", lambda: client.infer("nope", [inp]))
    _expect(404, "no loaded version '3'", lambda: client.infer("osnet", [inp], model_version="3"))
    small = httpclient.InferInput("images", [1, 3, 64, 64], "FP32")
    small.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.float32))
    _expect(400, "has shape [1, 3, 64, 64]; expected [batch (1..16), 3, 256, 128]",
            lambda: client.infer("osnet", [small]))
    too_many = httpclient.InferInput("images", [17, 3, 256, 128], "FP32")
    too_many.set_data_from_numpy(np.zeros((17, 3, 256, 128), np.float32))
    _expect(400, "expected [batch (1..16)", lambda: client.infer("osnet", [too_many]))
    doubles = httpclient.InferInput("images", [1, 3, 256, 128], "FP64")
    doubles.set_data_from_numpy(good.astype(np.float64))
    _expect(400, "is FP32, got FP64", lambda: client.infer("osnet", [doubles]))
    named = httpclient.InferInput("pixels", [1, 3, 256, 128], "FP32")
    named.set_data_from_numpy(good)
    _expect(400, "unknown ['pixels'], missing ['images']", lambda: client.infer("osnet", [named]))
    _expect(400, "has no outputs ['scores']",
            lambda: client.infer("osnet", [inp], outputs=[httpclient.InferRequestedOutput("scores")]))

    url = f"http://{server}"
    short_binary = json.dumps({"inputs": [{"name": "images", "shape": [1, 3, 256, 128], "datatype": "FP32",
                                           "parameters": {"binary_data_size": 12}}]}).encode()
    checks = [
        (httpx.post(f"{url}/v2/models/osnet/infer", content=b"{not json"), 400, "not valid JSON"),
        (httpx.post(f"{url}/v2/models/osnet/infer", content=json.dumps({"inputs": [
            {"name": "images", "shape": [1, 3, 256, 128], "datatype": "FP32", "data": [1.0, 2.0]}]})),
         400, "2 values for shape [1, 3, 256, 128]"),
        (httpx.post(f"{url}/v2/models/osnet/infer", content=short_binary + b"x" * 12,
                    headers={"Inference-Header-Content-Length": str(len(short_binary))}),
         400, "12 bytes of binary data for shape [1, 3, 256, 128] FP32 (expected 393216)"),
        (httpx.post(f"{url}/v2/models/osnet/infer", content=b"x" * (MAX_BODY + 1)), 413, "exceeds the limit"),
        (httpx.post(f"{url}/predict/osnet", files={"image": ("x.png", b"definitely not a png", "image/png")}),
         400, "could not decode the uploaded image"),
        (httpx.post(f"{url}/predict/osnet", content=b""), 400, "no image"),
        (httpx.post(f"{url}/predict/nope", content=b"x"), 404, "unknown model"),
    ]
    for response, status, match in checks:
        assert response.status_code == status, response.text
        assert match in response.json()["error"]
    # still serving, and still right
    assert infer(client, "osnet", good, True).shape == (1, 512)
    assert client.is_server_live()


def test_a_broken_model_is_reported_while_the_others_serve(tmp_path, repo):
    from fastapi.testclient import TestClient

    root = tmp_path / "repo"
    shutil.copytree(repo / "osnet", root / "osnet")
    (root / "broken").mkdir()
    (root / "broken" / "config.pbtxt").write_text("this is not a config")
    with TestClient(create_app(root)) as http:
        assert http.get("/v2/health/ready").status_code == 503
        index = {row["name"]: row for row in http.post("/v2/repository/index").json()}
        assert index["osnet"]["state"] == "READY" and index["broken"]["state"] == "UNAVAILABLE"
        assert "not a valid Triton model config" in index["broken"]["reason"]
        response = http.post("/v2/models/broken/infer", content=b"{}")
        assert response.status_code == 503 and "not ready" in response.json()["error"]
        assert http.get("/v2/models/osnet/ready").status_code == 200


def test_modelport_serve_command_serves_the_repository(repo, runners):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "modelport.cli", "serve", str(repo), "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if client.is_server_ready():
                    break
            except Exception:  # not listening yet
                pass
            assert time.time() < deadline, "modelport serve did not become ready"
            time.sleep(0.5)
        batch = crops_batch(2, seed=3)
        np.testing.assert_allclose(infer(client, "osnet_ov", batch, True), runners["osnet_ov"](batch)["embeddings"],
                                   rtol=1e-5, atol=1e-4)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


class TinyDetector:
    """A raw YOLO-style head on a 64x64 input: [B, 4 + 2 classes, 84 anchors], input-dependent boxes."""

    @staticmethod
    def module():
        import torch
        from torch import nn

        class Head(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                torch.manual_seed(0)
                self.mix = nn.Conv1d(3, 6, 1)

            def forward(self, x):
                # one cell per anchor at strides 8, 16 and 32, as YOLO heads lay them out
                cells = [nn.functional.avg_pool2d(x, s).flatten(2) for s in (8, 16, 32)]
                f = self.mix(torch.cat(cells, 2)) * 4  # (B, 6, 84)
                xy = torch.sigmoid(f[:, :2]) * 64
                wh = torch.sigmoid(f[:, 2:4]) * 24 + 4
                return torch.cat([xy, wh, torch.sigmoid(f[:, 4:])], 1)

        return Head().eval()


def test_predict_returns_detections_for_a_detector(tmp_path):
    from fastapi.testclient import TestClient

    from modelport.detect.model import count_anchors, detector_spec
    from modelport.detect.runner import DetectRunner
    from modelport.formats import ExportOptions, get_format
    from modelport.samples import person_crops as images

    assert count_anchors(64) == 84
    spec = detector_spec("tiny_det", ("person", "car"), 84, imgsz=64, source=Source("random"), max_batch=8)
    onnx = get_format("onnx").export(TinyDetector.module(), spec, tmp_path / "tiny_det.onnx", ExportOptions())
    build_repository([ModelEntry(str(onnx))], tmp_path / "repo")
    assert (tmp_path / "repo" / "tiny_det" / "labels.txt").read_text().split() == ["person", "car"]
    picture = images(1, 90, 120, seed=4)[0]  # not square: the letterbox must be undone
    buffer = io.BytesIO()
    Image.fromarray(picture[..., ::-1]).save(buffer, "PNG")
    (want,) = DetectRunner(open_artifact(onnx)).detect([picture])
    assert len(want) > 0
    with TestClient(create_app(tmp_path / "repo")) as http:
        assert http.get("/v2/models/tiny_det/config").json()["max_batch_size"] == 8
        response = http.post("/predict/tiny_det", files={"image": ("p.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    got = response.json()["detections"]
    assert len(got) == len(want)
    np.testing.assert_allclose([d["box"] for d in got], want.boxes, atol=0.01)
    np.testing.assert_allclose([d["score"] for d in got], want.scores, rtol=1e-5)
    assert [d["label"] for d in got] == want.names()


def test_a_runtime_failure_fails_that_request_only(repo):
    from fastapi.testclient import TestClient

    app = create_app(repo)
    body = json.dumps({"inputs": [{"name": "images", "shape": [1, 3, 256, 128], "datatype": "FP32",
                                   "data": crops_batch(1, seed=2).ravel().tolist()}]})
    with TestClient(app, raise_server_exceptions=False) as http:
        runner = app.state.models.models["osnet_ov"].versions[1].runners[0]
        real = runner._infer

        def broken(batch):
            raise RuntimeError("device lost")

        runner._infer = broken
        response = http.post("/v2/models/osnet_ov/infer", content=body)
        assert response.status_code == 500 and response.json()["error"] == "RuntimeError: device lost"
        runner._infer = real
        assert http.post("/v2/models/osnet_ov/infer", content=body).status_code == 200


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies_are_accepted(client, runners, algorithm):
    batch = crops_batch(2, seed=11)
    inp = httpclient.InferInput("images", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    result = client.infer("osnet", [inp], request_compression_algorithm=algorithm)
    want = runners["osnet"](batch)["embeddings"]
    np.testing.assert_allclose(result.as_numpy("embeddings"), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_unsupported_protocol_extensions_are_refused_by_name(client):
    inp = httpclient.InferInput("images", [1, 3, 256, 128], "FP32")
    inp.set_data_from_numpy(crops_batch(1, seed=1))
    _expect(400, "classification extension is not supported",
            lambda: client.infer("osnet", [inp],
                                 outputs=[httpclient.InferRequestedOutput("embeddings", class_count=3)]))


def test_fixed_batch_model_takes_exactly_its_batch(tmp_path, osnet_model):
    from fastapi.testclient import TestClient

    from modelport.formats import ExportOptions, get_format

    spec = spec_for(get_entry("osnet_x0_25"), Source("random"), batch=2)
    onnx = get_format("onnx").export(osnet_model, spec, tmp_path / "fixed.onnx", ExportOptions())
    build_repository([ModelEntry(str(onnx))], tmp_path / "repo")
    batch = crops_batch(2, seed=6)

    def body(rows: np.ndarray) -> str:
        return json.dumps({"inputs": [{"name": "images", "shape": list(rows.shape), "datatype": "FP32",
                                       "data": rows.ravel().tolist()}]})

    with TestClient(create_app(tmp_path / "repo")) as http:
        meta = http.get("/v2/models/fixed").json()
        assert meta["inputs"][0]["shape"] == [2, 3, 256, 128]  # no batch dimension to vary
        response = http.post("/v2/models/fixed/infer", content=body(batch))
        assert response.status_code == 200, response.text
        got = np.asarray(response.json()["outputs"][0]["data"], np.float32).reshape(2, 512)
        want = open_artifact(onnx)(batch)["embeddings"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        one = http.post("/v2/models/fixed/infer", content=body(batch[:1]))
        assert one.status_code == 400 and "expected [2, 3, 256, 128]" in one.json()["error"]


@pytest.mark.parametrize("policy, served", [("latest:1", ["2"]), ("all", ["1", "2"]), ("specific:1", ["1"])])
def test_the_version_policy_decides_which_versions_serve(tmp_path, exported_dir, policy, served):
    from fastapi.testclient import TestClient

    onnx = str(exported_dir / f"{STEM}.onnx")
    options = ConfigOptions(version_policy=policy)
    build_repository([ModelEntry(onnx, name="m", options=options), ModelEntry(onnx, name="m", options=options)],
                     tmp_path / "repo")
    with TestClient(create_app(tmp_path / "repo")) as http:
        assert http.get("/v2/models/m").json()["versions"] == served
        for version in ("1", "2"):
            status = http.get(f"/v2/models/m/versions/{version}/ready").status_code
            assert status == (200 if version in served else 404)
