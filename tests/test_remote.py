"""modelport.load("http://HOST:PORT/MODEL") and grpc://: a Runner that prepares inputs here and infers on a
KServe v2 server (modelport's builtin server, real Triton), several servers used together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from conftest import builtin_server

import modelport
from modelport.discover import open_artifact
from modelport.errors import ModelportError
from modelport.formats import Runner
from modelport.formats.remote import (
    Endpoint,
    RemoteError,
    RemoteRunner,
    is_endpoint,
    parse_endpoints,
)
from modelport.samples import person_crops
from modelport.triton import ConfigOptions, ModelEntry, build_repository
from modelport.triton.config import config_text, read_config
from modelport.triton.server import free_port, have_tritonserver, start_tritonserver

STEM = "osnet_x0_25_msmt17"
needs_triton = pytest.mark.skipif(have_tritonserver() is not None, reason=f"no tritonserver: {have_tritonserver()}")


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * max(np.abs(want).max(), 1.0)


@pytest.fixture(scope="module")
def local(exported_dir) -> Runner:
    return open_artifact(exported_dir / f"{STEM}.onnx")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return person_crops(40, seed=21)


@pytest.fixture(scope="module")
def builtin(tmp_path_factory, exported_dir):
    repo = tmp_path_factory.mktemp("remote-builtin") / "repo"
    build_repository([ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet",
                                 options=ConfigOptions(max_batch_size=8))], repo)
    # the same model behind a config modelport did not write: no spec in its parameters
    build_repository([ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="bare")], repo)
    config = read_config(repo / "bare" / "config.pbtxt")
    config.ClearField("parameters")
    (repo / "bare" / "config.pbtxt").write_text(config_text(config))
    with builtin_server(repo) as server:
        yield server.address


@pytest.fixture(scope="module")
def tritons(tmp_path_factory, exported_dir):
    """Two real Triton servers on loopback serving the same Python-backend repository."""
    if have_tritonserver() is not None:
        pytest.skip(f"no tritonserver: {have_tritonserver()}")
    repo = tmp_path_factory.mktemp("remote-triton") / "repo"
    build_repository([ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet",
                                 options=ConfigOptions(backend="python"))], repo)
    servers = [start_tritonserver(repo, wait=False, exit_timeout=1) for _ in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_endpoint_urls_are_parsed_and_bad_ones_named():
    assert parse_endpoints("http://a:9000/osnet, grpc://b/osnet/versions/2,http://c:1/v2/models/m") == [
        Endpoint("http", "a:9000", "osnet"), Endpoint("grpc", "b:8001", "osnet", "2"), Endpoint("http", "c:1", "m")]
    assert is_endpoint("grpc://b:8001/osnet") and not is_endpoint("osnet_x0_25.onnx")
    for bad in ("http://a:8000", "http://a:8000/x/y", "ftp://a/m", "http://a:8000/m?x=1"):
        with pytest.raises(RemoteError, match="not a model endpoint"):
            parse_endpoints(bad)


def test_an_unreachable_server_is_a_typed_error_naming_it():
    url = f"http://127.0.0.1:{free_port()}/osnet"
    with pytest.raises(RemoteError, match=url.replace("/", ".")):
        modelport.load(url)


def test_builtin_server_embeddings_equal_local_inference(builtin, local, images):
    with modelport.load(f"http://{builtin}/osnet") as runner:
        assert isinstance(runner, RemoteRunner) and isinstance(runner, Runner)
        assert runner.spec == local.spec  # read from the config's parameters
        assert runner.chunk == 8  # requests of the server's max_batch_size
        assert_close(runner.embed(images), local.embed(images))
        assert runner(np.zeros((0, 3, 256, 128), np.float32))["embeddings"].shape == (0, 512)


def test_without_a_spec_the_metadata_serves_prepared_inputs_only(builtin, local, images):
    with modelport.load(f"http://{builtin}/bare") as runner:
        assert runner.spec.task == "tensors" and runner.spec.extra["spec_from"] == "metadata"
        with pytest.raises(ModelportError, match="no modelport spec"):
            runner.embed(images[:2])
        from modelport.preprocess import prepare

        batch = prepare(images[:5], local.spec.preprocess)
        assert_close(runner.embed(batch, prepared=True), local.embed(batch, prepared=True))


@needs_triton
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_real_triton_embeddings_equal_local_inference(tritons, local, images, protocol):
    port = tritons[0].http_port if protocol == "http" else tritons[0].grpc_port
    with modelport.load(f"{protocol}://127.0.0.1:{port}/osnet") as runner:
        assert runner.spec == local.spec
        assert_close(runner.embed(images), local.embed(images))


@needs_triton
def test_two_triton_servers_share_a_batch_stream(tritons, local, images):
    def served(server) -> int:
        stats = httpclient.InferenceServerClient(server.http_url).get_inference_statistics("osnet")
        return int(stats["model_stats"][0]["inference_count"])

    before = [served(s) for s in tritons]
    urls = f"http://{tritons[0].http_url}/osnet,grpc://{tritons[1].grpc_url}/osnet"
    from modelport.preprocess import prepare

    batches = [(i, prepare(images[i * 8 : i * 8 + 8], local.spec.preprocess)) for i in range(5)]
    with modelport.load(urls) as runner:
        out = dict(runner.embed_stream(batches))
        assert min(runner.sent) > 0
    for i, batch in batches:
        assert_close(out[i], local.embed(batch, prepared=True))
    rows = [served(s) - b for s, b in zip(tritons, before)]
    assert min(rows) > 0 and sum(rows) == 40, rows


@needs_triton
def test_endpoints_of_different_models_are_refused(tritons, builtin):
    with pytest.raises(RemoteError, match="different model"):
        modelport.load(f"http://{tritons[0].http_url}/osnet,http://{builtin}/bare")
    with modelport.load(f"http://{tritons[0].http_url}/osnet,http://{builtin}/osnet") as runner:
        assert runner.chunk == 8  # the same model; requests fit both servers


@needs_triton
def test_reid_extract_with_a_remote_model_stores_what_local_inference_stores(tritons, exported_dir, tmp_path):
    import shutil
    import sqlite3

    from modelport.reid.extract import extract
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data

    scene = write_demo_data(tmp_path / "scene", people=3, frames=60, seed=2)
    import_mot(tmp_path / "local.db", scene.video, scene.detections)
    shutil.copy(tmp_path / "local.db", tmp_path / "remote.db")
    local = extract(tmp_path / "local.db", open_artifact(exported_dir / f"{STEM}.onnx"), batch=16)
    urls = ",".join(f"http://{s.http_url}/osnet" for s in tritons)
    with modelport.load(urls) as runner:
        remote = extract(tmp_path / "remote.db", runner, batch=16)
    assert remote.model.key == local.model.key and remote.computed == local.computed > 0

    def rows(db: Path) -> dict[int, np.ndarray]:
        with sqlite3.connect(db) as conn:
            return {i: np.frombuffer(blob, "<f4") for i, blob in
                    conn.execute("SELECT detection_id, embedding FROM reid_embeddings")}

    want, got = rows(tmp_path / "local.db"), rows(tmp_path / "remote.db")
    assert want.keys() == got.keys()
    assert max(np.abs(got[i] - want[i]).max() for i in want) <= 1e-4


def test_a_remote_detector_detects_as_the_local_one(tmp_path):
    from test_serve import TinyDetector

    from modelport.detect.model import detector_spec
    from modelport.detect.runner import DetectRunner
    from modelport.formats import ExportOptions, get_format
    from modelport.spec import Source

    spec = detector_spec("tiny_det", ("person", "car"), 84, imgsz=64, source=Source("random"), max_batch=8)
    onnx = get_format("onnx").export(TinyDetector.module(), spec, tmp_path / "tiny_det.onnx", ExportOptions())
    build_repository([ModelEntry(str(onnx))], tmp_path / "repo")
    pictures = person_crops(5, 90, 120, seed=4)
    want = DetectRunner(open_artifact(onnx)).detect(pictures)
    with builtin_server(tmp_path / "repo") as server:
        runner = modelport.load(f"http://{server.address}/tiny_det")
        assert isinstance(runner, DetectRunner) and isinstance(runner.runner, RemoteRunner)
        got = runner.detect(pictures)
        runner.close()
    assert [d.names() for d in got] == [d.names() for d in want] and sum(map(len, want)) > 0
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-3)
        np.testing.assert_allclose(g.scores, w.scores, rtol=1e-5)


def test_a_request_that_fails_on_one_endpoint_is_retried_on_another(builtin, tmp_path, exported_dir, local, images):
    repo = tmp_path / "repo"
    build_repository([ModelEntry(str(exported_dir / f"{STEM}.onnx"), name="osnet",
                                 options=ConfigOptions(max_batch_size=8))], repo)
    with builtin_server(repo) as server:
        runner = modelport.load(f"http://{server.address}/osnet,http://{builtin}/osnet")
        try:
            server.stop()  # the first endpoint goes away after the runner was opened
            assert_close(runner.embed(images), local.embed(images))
            assert runner.sent[1] == 5  # every request ended on the second endpoint
        finally:
            runner.close()


def test_bench_times_a_served_model_at_each_batch_size(builtin):
    from modelport.triton.remote_bench import bench_endpoint

    url = f"http://{builtin}/osnet"
    report = bench_endpoint(f"{url},{url}", batches=(1, 12), seconds=0.4, rounds=2)
    assert [(r["runtime"], r["batch"], r["status"]) for r in report["rows"]] == [("remote", 1, "ok"),
                                                                                ("remote", 12, "ok")]
    calls = {r["batch"]: r["latency_ms"]["n"] for r in report["rows"]}
    assert min(calls.values()) >= 2  # every round took at least one sample of each
    # batch 1 is one request; batch 12 is two (the server's max_batch_size is 8), spread over both endpoints
    assert sum(e["requests"] for e in report["requests_per_endpoint"]) == calls[1] + 2 * calls[12]
    assert len(report["requests_per_endpoint"]) == 2 and report["model"]["name"] == "osnet_x0_25"
    for row in report["rows"]:
        lat = row["latency_ms"]
        assert 0 < lat["p50"] <= lat["p99"] and row["throughput"] == pytest.approx(row["batch"] / lat["mean"] * 1000)


def test_bench_cli_writes_the_record_and_refuses_options_for_local_runtimes(builtin, tmp_path, capsys):
    import json

    import typer

    from modelport.triton.cli import bench_remote

    record = tmp_path / "remote.json"
    bench_remote(f"http://{builtin}/osnet", batches=[2], seconds=0.2, json_path=record, unsupported={"--half": False})
    assert json.loads(record.read_text())["rows"][0]["batch"] == 2
    assert "requests per endpoint" in capsys.readouterr().out
    with pytest.raises(typer.BadParameter, match="--formats"):
        bench_remote(f"http://{builtin}/osnet", batches=[1], seconds=0.2, json_path=record,
                     unsupported={"--formats": "onnx"})
    with pytest.raises(RemoteError, match="failed"):
        bench_remote(f"http://127.0.0.1:{free_port()}/osnet", batches=[1], seconds=0.2, json_path=record,
                     unsupported={})


def test_modelport_bench_url_times_the_served_model(builtin, tmp_path):
    import json

    from typer.testing import CliRunner

    from modelport.cli import app

    record = tmp_path / "served.json"
    done = CliRunner().invoke(app, ["bench", f"http://{builtin}/osnet", "--batch", "2", "--seconds", "0.2",
                                    "--json", str(record)])
    assert done.exit_code == 0, done.output
    assert json.loads(record.read_text())["rows"][0]["batch"] == 2
    refused = CliRunner().invoke(app, ["bench", f"http://{builtin}/osnet", "--half"])
    assert refused.exit_code != 0 and "--half" in (refused.output + str(refused.exception))


CLIP = "MobileCLIP2-S0"


@pytest.fixture(scope="module")
def clip_server(tmp_path_factory):
    """ONNX image and text encoders of a calibrated random MobileCLIP2-S0 in one repository, served by the
    builtin engine; returns (encoder folder, server address)."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from modelport.clip.export import export_clip
    from modelport.clip.model import build_clip
    from modelport.clip.samples import scene_images
    from modelport.preprocess import prepare
    from modelport.spec import Preprocess
    from modelport.zoo import RandomWeightsWarning
    from modelport.zoo.calibrate import calibrate_batchnorm

    def calibrate(clip):
        pre = Preprocess(height=256, width=256, mean=(0.0,) * 3, std=(1.0,) * 3)
        calibrate_batchnorm(clip.visual, [torch.from_numpy(prepare(scene_images(8, 256, 256, seed=3), pre))])

    out = tmp_path_factory.mktemp("clip_models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = build_clip(CLIP, allow_random=True, prepare=calibrate)
    assert export_clip(CLIP, formats="onnx", out=out, model=model, verify=False).ok
    repo = tmp_path_factory.mktemp("clip_repo") / "repo"
    build_repository([ModelEntry(str(out / f"{CLIP}_untrained_{which}.onnx"), options=ConfigOptions(max_batch_size=8))
                      for which in ("image", "text")], repo)
    with builtin_server(repo) as server:
        yield out, server.address


def test_search_index_with_a_served_encoder_equals_the_local_index(clip_server, tmp_path):
    from typer.testing import CliRunner

    from modelport.cli import app
    from modelport.clip.samples import write_scenes
    from modelport.search import IndexStore, index_folder, open_encoders, search

    encoders_dir, address = clip_server
    gallery = tmp_path / "gallery"
    write_scenes(gallery, 10, seed=5)
    local_db, remote_db = tmp_path / "local.db", tmp_path / "remote.db"
    index_folder(gallery, open_encoders(str(encoders_dir / f"{CLIP}_untrained_image.onnx")), local_db, batch=4)
    url = f"http://{address}/{CLIP}_untrained_image"
    done = CliRunner().invoke(app, ["search", "index", str(gallery), "--model", url, "--db", str(remote_db),
                                    "--batch", "4", "--json"])
    assert done.exit_code == 0, done.output
    assert '"added": 10' in done.output and '"failed": 0' in done.output
    with IndexStore(local_db) as a, IndexStore(remote_db) as b:
        (paths_a, want), (paths_b, got) = a.embeddings(), b.embeddings()
        assert b.model().ref == url and b.model().same_model(a.model())
    assert paths_a == paths_b and np.abs(got - want).max() <= 1e-4
    # queried without --model: the index reopens the served encoders, the text one as the image one's partner
    want_hits, got_hits = search(local_db, text="a red car", top=3), search(remote_db, text="a red car", top=3)
    assert [h.path for h in got_hits] == [h.path for h in want_hits]
    assert np.allclose([h.score for h in got_hits], [h.score for h in want_hits], atol=1e-4)
    # an index of the local export is extended through the server: the same model
    assert index_folder(gallery, open_encoders(url), local_db).skipped == 10


def test_search_index_refuses_a_served_model_that_is_no_clip_encoder(builtin):
    from modelport.search import open_encoders

    with pytest.raises(ModelportError, match="not a CLIP encoder"):
        open_encoders(f"http://{builtin}/osnet")
