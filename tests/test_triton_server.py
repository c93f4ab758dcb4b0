"""A real Triton Inference Server (the tritonserver binary of the nvidia-pytriton wheel) runs what modelport
writes: `triton build --backend python` repositories as they are, and any repository through
`modelport serve --engine triton`; queried with the official tritonclient over HTTP and gRPC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from modelport.discover import open_artifact
from modelport.preprocess import prepare
from modelport.samples import person_crops
from modelport.spec import ModelSpec, Source
from modelport.triton import ConfigOptions, ModelEntry, build_repository
from modelport.triton.config import PARAM_FORMAT, PARAM_SPEC, read_config
from modelport.triton.golden import verify_repository
from modelport.triton.server import free_port, have_tritonserver, start_tritonserver
from modelport.zoo import get_entry, spec_for

STEM = "osnet_x0_25_msmt17"
PRE = spec_for(get_entry("osnet_x0_25"), Source("random")).preprocess
pytestmark = pytest.mark.skipif(have_tritonserver() is not None, reason=f"no tritonserver: {have_tritonserver()}")


def crops(n: int, seed: int) -> np.ndarray:
    return prepare(person_crops(n, 256, 128, seed=seed), PRE)


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    """Max abs difference within 1e-4 of the reference's magnitude."""
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.abs(got - want).max() <= 1e-4 * max(np.abs(want).max(), 1.0)


def infer(protocol: str, url: str, model: str, batch: np.ndarray, output: str = "embeddings") -> np.ndarray:
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(url)
    tensor = module.InferInput("images", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    return client.infer(model, [tensor], outputs=[module.InferRequestedOutput(output)]).as_numpy(output)


@pytest.fixture(scope="module")
def runners(exported_dir):
    return {"osnet": open_artifact(exported_dir / f"{STEM}.onnx"),
            "osnet_ov": open_artifact(exported_dir / f"{STEM}_openvino_model")}


@pytest.fixture(scope="module")
def pyrepo(tmp_path_factory, exported_dir) -> Path:
    root = tmp_path_factory.mktemp("triton-python") / "repo"
    build_repository([
        # a long queue delay so that concurrent requests meet in one batch
        ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet",
                   options=ConfigOptions(backend="python", max_queue_delay_us=100_000)),
        ModelEntry(str(exported_dir / f"{STEM}_openvino_model"), name="osnet_ov",
                   options=ConfigOptions(backend="python", instances=2, dynamic_batching=False)),
    ], root)
    return root


@pytest.fixture(scope="module")
def triton(pyrepo):
    with start_tritonserver(pyrepo, exit_timeout=1) as server:
        yield server


def test_python_backend_model_has_model_py_beside_the_artifact_and_the_spec_in_parameters(pyrepo, exported_dir):
    assert {p.name for p in (pyrepo / "osnet" / "1").iterdir()} == {"model.py", "model.onnx", "golden"}
    assert {p.name for p in (pyrepo / "osnet_ov" / "1").iterdir()} == {"model.py", "model.xml", "model.bin",
                                                                          "metadata.json", "golden"}
    config = read_config(pyrepo / "osnet" / "config.pbtxt")
    assert (config.backend, config.platform) == ("python", "")
    assert config.parameters[PARAM_FORMAT].string_value == "onnx"
    spec = ModelSpec.from_json(config.parameters[PARAM_SPEC].string_value)
    assert spec == open_artifact(exported_dir / f"{STEM}.onnx").spec


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["osnet", "osnet_ov"])
def test_real_triton_answers_as_local_inference(triton, runners, model, protocol):
    batch = crops(3, seed=7)
    url = triton.http_url if protocol == "http" else triton.grpc_url
    assert_close(infer(protocol, url, model, batch), runners[model](batch)["embeddings"])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_real_triton_serving_the_repository_passes_its_golden_outputs(triton, pyrepo, protocol):
    url = f"http://{triton.http_url}" if protocol == "http" else f"grpc://{triton.grpc_url}"
    checks = verify_repository(pyrepo, url=url, local=False)
    assert [(c.model, c.version, c.target) for c in checks] == [("osnet", 1, url), ("osnet_ov", 1, url)]
    assert all(c.passed and c.result.outputs for c in checks), [c.result.summary() for c in checks]


def test_tritons_dynamic_batcher_batches_concurrent_requests(triton, runners):
    batch = crops(8, seed=11)
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda i: infer("grpc", triton.grpc_url, "osnet", batch[i : i + 1]), range(8)))
    assert_close(np.concatenate(outs), runners["osnet"](batch)["embeddings"])
    stats = httpclient.InferenceServerClient(triton.http_url).get_inference_statistics("osnet")["model_stats"][0]
    assert max(int(b["batch_size"]) for b in stats["batch_stats"]) > 1
    assert int(stats["execution_count"]) < int(stats["inference_count"])


def test_a_bad_request_fails_alone(triton, runners):
    with pytest.raises(InferenceServerException):
        infer("http", triton.http_url, "osnet", np.zeros((1, 3, 64, 64), np.float32))
    batch = crops(1, seed=3)
    assert_close(infer("http", triton.http_url, "osnet", batch), runners["osnet"](batch)["embeddings"])


@pytest.fixture(scope="module")
def native_repo(tmp_path_factory, exported_dir) -> Path:
    """Today's default build: onnxruntime / openvino platform configs for the Triton container."""
    root = tmp_path_factory.mktemp("triton-native") / "repo"
    build_repository([
        ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet",
                   options=ConfigOptions(max_batch_size=8, preferred_batch_sizes=(2, 4), instances=2)),
        ModelEntry(str(exported_dir / f"{STEM}_openvino_model"), name="osnet_ov"),
    ], root)
    return root


def test_serve_engine_triton_runs_the_repository_on_real_triton(native_repo, runners, tmp_path):
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "modelport.cli", "serve", str(native_repo), "--engine", "triton",
                                 "--port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port",
                                 str(metrics_port), "--device", "cpu", "--log-level", "warning"],
                                env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if client.is_server_ready():
                    break
            except Exception:  # not listening yet: it listens only after every instance warmed up
                pass
            assert time.time() < deadline, "serve --engine triton did not become ready"
            time.sleep(0.5)
        assert client.get_server_metadata()["name"] == "triton"
        # Triton's own batcher, instances and max batch, as the repository's config.pbtxt says
        config = client.get_model_config("osnet")
        assert config["backend"] == "python" and config["max_batch_size"] == 8
        assert config["dynamic_batching"]["preferred_batch_size"] == [2, 4]
        assert [g["count"] for g in config["instance_group"]] == [2]
        batch = crops(2, seed=5)
        for model in ("osnet", "osnet_ov"):
            assert_close(infer("http", f"127.0.0.1:{http_port}", model, batch), runners[model](batch)["embeddings"])
            assert_close(infer("grpc", f"127.0.0.1:{grpc_port}", model, batch), runners[model](batch)["embeddings"])
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            assert 'nv_inference_request_success{model="osnet"' in reply.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)  # Triton is SIGKILLed 15 s after the stop began (tests/test_serve_stop.py)
        except subprocess.TimeoutExpired:
            proc.kill()  # its guard then stops Triton: nothing is left running whatever this test reports
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]


def test_serve_engine_triton_refuses_an_unservable_repository_before_starting(tmp_path):
    (tmp_path / "repo" / "broken").mkdir(parents=True)
    (tmp_path / "repo" / "broken" / "config.pbtxt").write_text("not a config {")
    result = subprocess.run([sys.executable, "-m", "modelport.cli", "serve", str(tmp_path / "repo"), "--engine",
                             "triton", "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "broken" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_native_configs_carry_the_spec_and_format(native_repo, exported_dir):
    config = read_config(native_repo / "osnet_ov" / "config.pbtxt")
    assert (config.backend, config.parameters[PARAM_FORMAT].string_value) == ("openvino", "openvino")
    spec = json.loads(config.parameters[PARAM_SPEC].string_value)
    assert spec["name"] == open_artifact(exported_dir / f"{STEM}_openvino_model").spec.name
