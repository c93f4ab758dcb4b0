"""`modelport serve` under hostile requests: a gzip bomb, malformed and fuzzed KServe bodies, a flood and a
stuck model. Every answer is 200 or a 4xx with a JSON error, memory stays bounded, and the server keeps
serving afterwards. The real server runs in a subprocess so that its memory can be read from /proc."""

from __future__ import annotations

import copy
import gzip
import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from test_serve import TinyDetector, crops_batch, free_port

from modelport.discover import open_artifact
from modelport.serve import create_app
from modelport.spec import Source
from modelport.triton import ConfigOptions, ModelEntry, build_repository
from modelport.zoo import get_entry, spec_for

MB = 1 << 20
RSS_BUDGET = 256 * MB
TINY_SHAPE = (1, 3, 64, 64)  # TinyDetector's input; its config allows batches of 1..8


@pytest.fixture(scope="module")
def exports(tmp_path_factory, osnet_model) -> dict[str, Path]:
    """osnet_x0_25 (the suite's calibrated model) and the suite's tiny detector, exported to ONNX only."""
    from modelport.detect.model import detector_spec
    from modelport.formats import ExportOptions, get_format

    folder = tmp_path_factory.mktemp("hostile")
    onnx = get_format("onnx")
    osnet = onnx.export(osnet_model, spec_for(get_entry("osnet_x0_25"), Source("random")), folder / "osnet.onnx",
                        ExportOptions())
    spec = detector_spec("tiny", ("person", "car"), 84, imgsz=64, source=Source("random"), max_batch=8)
    tiny = onnx.export(TinyDetector.module(), spec, folder / "tiny.onnx", ExportOptions())
    return {"osnet": osnet, "tiny": tiny}


@pytest.fixture(scope="module")
def hostile_repo(tmp_path_factory, exports) -> Path:
    """osnet with dynamic batching, and the tiny detector without (one request runs at a time, which the
    queue test relies on)."""
    root = tmp_path_factory.mktemp("hostile-repo")
    build_repository([ModelEntry(str(exports["osnet"]), name="osnet"),
                      ModelEntry(str(exports["tiny"]), name="tiny", options=ConfigOptions(dynamic_batching=False))],
                     root)
    return root


@dataclass(frozen=True)
class Served:
    url: str
    pid: int
    log: Path  # the server's stdout and stderr

    def alive(self) -> bool:
        return httpx.get(f"{self.url}/v2/health/live", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def served(hostile_repo, tmp_path_factory):
    """`modelport serve` on a loopback port with its defaults (64 MB body limit), as a user runs it."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen([sys.executable, "-m", "modelport.cli", "serve", str(hostile_repo), "--port",
                                 str(port), "--device", "cpu", "--log-level", "warning"], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:  # not listening yet
                pass
            assert time.time() < deadline, "modelport serve did not become ready"
            time.sleep(0.2)
        yield Served(url, proc.pid, log)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "Traceback" not in log.read_text(), log.read_text()


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@dataclass
class Growth:
    before: int = 0
    peak: int = 0

    @property
    def bytes(self) -> int:
        return self.peak - self.before


@contextmanager
def memory_growth(pid: int):
    """The server's peak RSS over the block minus its RSS before: the kernel's high-water mark, reset first
    (clear_refs 5), and samples every 10 ms in case the reset is not allowed here."""
    growth = Growth()
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass
    growth.before = _status_kb(pid, "VmRSS")
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            growth.peak = max(growth.peak, _status_kb(pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield growth
    finally:
        done.set()
        sampler.join()
        growth.peak = max(growth.peak, _status_kb(pid, "VmRSS"), _status_kb(pid, "VmHWM"))


def gzip_bomb(inflated: int) -> bytes:
    """A KServe JSON request whose data array inflates to ``inflated`` bytes, compressed one MiB at a time
    (the test never holds the inflated text)."""
    head = b'{"inputs": [{"name": "images", "shape": [1, 3, 256, 128], "datatype": "FP32", "data": ['
    chunk = b"0," * (MB // 2)
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [z.compress(head)]
    parts += [z.compress(chunk) for _ in range(inflated // len(chunk))]
    parts += [z.compress(b"0]}]}"), z.flush()]
    return b"".join(parts)


def tiny_json(rows: int = 1, seed: int = 0) -> dict:
    values = np.random.default_rng(seed).random((rows, *TINY_SHAPE[1:])).round(3)
    return {"inputs": [{"name": "images", "shape": list(values.shape), "datatype": "FP32",
                        "data": values.ravel().tolist()}]}


def binary_body(header: dict, blob: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + blob, {"Inference-Header-Content-Length": str(len(text))}


def tiny_binary(rows: int = 1, seed: int = 0, declared: list | None = None, size: int | None = None,
                datatype: str = "FP32") -> tuple[bytes, dict[str, str]]:
    blob = np.random.default_rng(seed).random((rows, *TINY_SHAPE[1:]), np.float32).tobytes()
    header = {"inputs": [{"name": "images", "shape": declared or [rows, *TINY_SHAPE[1:]], "datatype": datatype,
                          "parameters": {"binary_data_size": len(blob) if size is None else size}}]}
    return binary_body(header, blob)


def json_with(**changes) -> bytes:
    body = tiny_json()
    body["inputs"][0].update(changes)
    return json.dumps(body).encode()


def test_a_gzip_bomb_is_refused_at_the_body_limit_without_inflating_it(served):
    bomb = gzip_bomb(1 << 30)  # 1 GiB of JSON
    assert len(bomb) < 2 * MB
    with memory_growth(served.pid) as growth:
        response = httpx.post(f"{served.url}/v2/models/osnet/infer", content=bomb, timeout=60,
                              headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert "inflated request body exceeds the limit of 67108864 bytes" in response.json()["error"]
    print(f"gzip bomb ({len(bomb)} bytes -> 1 GiB): server RSS grew {growth.bytes / MB:.1f} MB at peak")
    assert growth.bytes < RSS_BUDGET
    # an honest compressed request still works
    ok = httpx.post(f"{served.url}/v2/models/tiny/infer", content=gzip.compress(json.dumps(tiny_json()).encode()),
                    headers={"Content-Encoding": "gzip"}, timeout=30)
    assert ok.status_code == 200, ok.text


MALFORMED = [
    # (what, body, headers, status, part of the error)
    ("negative dimension", json_with(shape=[1, 3, -64, 64]), {}, 400, "non-negative integers"),
    ("huge dimensions", json_with(shape=[1 << 40, 3, 1 << 40, 64]), {}, 400, "12288 values for shape"),
    ("shape product past int64", *tiny_binary(declared=[1 << 32] * 4, size=0), 400, "bytes of binary data"),
    ("too many dimensions", json_with(shape=[1] * 40), {}, 400, "at most 32"),
    ("boolean dimension", json_with(shape=[True, 3, 64, 64]), {}, 400, "non-negative integers"),
    ("data shorter than the shape", json_with(data=[0.5] * 100), {}, 400, "100 values for shape [1, 3, 64, 64]"),
    ("ragged nested data", json_with(data=[[0.5] * 3, [0.5]]), {}, 400, "data is not FP32"),
    ("data of strings", json_with(data=["x"] * 12288), {}, 400, "data is not FP32"),
    ("datatype the model does not take", json_with(datatype="INT64", data=[1 << 70] * 12288), {}, 400,
     "is FP32, got INT64"),
    ("binary size short of the shape", *tiny_binary(size=12), 400, "12 bytes of binary data"),
    ("binary size past the body", *tiny_binary(declared=[2, 3, 64, 64], size=2 * 49152), 400,
     "runs past the end of the body"),
    ("binary size not an integer", *tiny_binary(size="49152"), 400, "binary_data_size must be"),
    ("header length past the body", tiny_binary()[0], {"Inference-Header-Content-Length": "99999999"}, 400,
     "outside the body"),
    ("header length not a number", tiny_binary()[0], {"Inference-Header-Content-Length": "12a"}, 400,
     "must be a non-negative integer"),
    ("unclaimed binary bytes", tiny_binary()[0] + b"xxxx", tiny_binary()[1], 400, "4 bytes of binary data follow"),
    ("wrong datatype", json_with(datatype="FP64"), {}, 400, "input 'images' is FP32, got FP64"),
    ("BYTES datatype", json_with(datatype="BYTES"), {}, 400, "unsupported datatype 'BYTES'"),
    ("datatype not a string", json_with(datatype=11), {}, 400, "unsupported datatype"),
    ("unknown input name", json_with(name="pixels"), {}, 400, "unknown ['pixels'], missing ['images']"),
    ("input name not a string", json_with(name=["images"]), {}, 400, "'name' must be a string"),
    ("input parameters not an object", json_with(parameters=[1]), {}, 400, "'parameters' must be an object"),
    ("batch over the model's max", *tiny_binary(rows=9), 400, "expected [batch (1..8), 3, 64, 64]"),
    ("empty batch", json_with(shape=[0, 3, 64, 64], data=[]), {}, 400, "expected [batch (1..8)"),
    ("input given twice", json.dumps({"inputs": tiny_json()["inputs"] * 2}).encode(), {}, 400, "once"),
    ("bad JSON", b"{not json", {}, 400, "not valid JSON"),
    ("JSON that is not an object", b"[1, 2]", {}, 400, "non-empty 'inputs' list"),
    ("deeply nested JSON", b"[" * 100_000, {}, 400, "not valid JSON"),
    ("a 5000-digit number", b'{"inputs": [' + b"9" * 5000 + b"]}", {}, 400, "not valid JSON"),
    ("not UTF-8", b'{"inputs": "\xff\xfe"}', {}, 400, "not valid JSON"),
    ("far more values than the model takes",
     b'{"inputs": [{"name": "images", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": ['
     + b"0," * 2_000_000 + b"0]}]}", {}, 413, "model 'tiny' takes at most 98304 per request"),
    ("unknown Content-Encoding", json.dumps(tiny_json()).encode(), {"Content-Encoding": "br"}, 415,
     "unsupported Content-Encoding 'br'"),
    ("stacked Content-Encodings", json.dumps(tiny_json()).encode(), {"Content-Encoding": "gzip, deflate"}, 415,
     "unsupported Content-Encoding"),
    ("gzip header on a plain body", json.dumps(tiny_json()).encode(), {"Content-Encoding": "gzip"}, 400,
     "not valid gzip data"),
    ("truncated gzip", gzip.compress(json.dumps(tiny_json()).encode())[:-100], {"Content-Encoding": "gzip"}, 400,
     "ends before the stream does"),
    ("deflate bomb", zlib.compress(b" " * (256 * MB), 9), {"Content-Encoding": "deflate"}, 413,
     "inflated request body exceeds"),
]


@pytest.mark.parametrize("what, body, headers, status, match", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_the_expected_4xx(served, what, body, headers, status, match):
    response = httpx.post(f"{served.url}/v2/models/tiny/infer", content=body, headers=headers, timeout=60)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert match in response.json()["error"]


def test_values_a_datatype_cannot_hold_are_a_400_not_a_crash():
    from modelport.serve.protocol import ProtocolError, parse_request

    body = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": [1, 1 << 70]}]})
    with pytest.raises(ProtocolError, match="data is not INT64") as info:
        parse_request(body.encode(), None)
    assert info.value.status == 400


def test_the_server_still_serves_after_malformed_requests(served):
    for body, headers in [(json.dumps(tiny_json()).encode(), {}), tiny_binary()]:
        response = httpx.post(f"{served.url}/v2/models/tiny/infer", content=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text


def test_a_client_that_leaves_mid_body_is_no_error_and_no_traceback(served):
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                     + b"[" * 1000)
        time.sleep(0.2)
    time.sleep(0.3)
    assert served.alive()
    assert "Traceback" not in served.log.read_text()


def test_32_concurrent_requests_through_the_official_client_are_all_right(served, exports):
    runner = open_artifact(exports["osnet"])
    client = httpclient.InferenceServerClient(served.url.removeprefix("http://"), concurrency=32,
                                              network_timeout=120)
    batches = [crops_batch(1 + i % 2, seed=300 + i) for i in range(32)]
    errors, results = [], []
    with memory_growth(served.pid) as growth:
        pending = []
        for i, batch in enumerate(batches):
            inp = httpclient.InferInput("images", list(batch.shape), "FP32")
            inp.set_data_from_numpy(batch, binary_data=i % 8 != 0)  # every 8th as JSON
            pending.append(client.async_infer("osnet", [inp]))
        for p in pending:
            try:
                results.append(p.get_result().as_numpy("embeddings"))
            except Exception as exc:  # noqa: BLE001 - counted and shown below
                errors.append(exc)
    client.close()
    print(f"32 concurrent requests: server RSS grew {growth.bytes / MB:.1f} MB at peak")
    assert errors == []
    for batch, got in zip(batches, results):
        want = runner(batch)["embeddings"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert growth.bytes < RSS_BUDGET


class Stuck:
    """Replaces a runner's ``_infer`` with one that blocks until released (how the existing runtime-failure
    test reaches a runner)."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.real = runner._infer
        self.entered = threading.Event()
        self.released = threading.Event()

    def __enter__(self) -> Stuck:
        def blocked(batch):
            self.entered.set()
            assert self.released.wait(30), "never released"
            return self.real(batch)

        self.runner._infer = blocked
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.runner._infer = self.real


def _post_tiny(http, results: list | None = None):
    response = http.post("/v2/models/tiny/infer", content=json.dumps(tiny_json()))
    if results is not None:
        results.append(response)
    return response


def test_a_full_queue_answers_429_and_the_server_keeps_serving(hostile_repo):
    from fastapi.testclient import TestClient

    app = create_app(hostile_repo, max_queue=2, timeout_s=30)
    with TestClient(app) as http:
        served = app.state.models.models["tiny"].versions[1]
        results: list = []
        with Stuck(served.runners[0]) as stuck:
            running = threading.Thread(target=_post_tiny, args=(http, results))
            running.start()
            assert stuck.entered.wait(10)  # the worker holds the first request
            queued = [threading.Thread(target=_post_tiny, args=(http, results)) for _ in range(2)]
            for t in queued:
                t.start()
            deadline = time.time() + 10
            while served.batcher._queue.qsize() < 2:
                assert time.time() < deadline, "the requests did not queue"
                time.sleep(0.01)
            refused = _post_tiny(http)
            assert refused.status_code == 429, refused.text
            assert "has 2 requests waiting, its queue's limit" in refused.json()["error"]
        for t in [running, *queued]:
            t.join(30)
        assert [r.status_code for r in results] == [200, 200, 200]
        assert _post_tiny(http).status_code == 200


def test_a_request_past_its_deadline_gets_504_and_the_server_keeps_serving(hostile_repo):
    from fastapi.testclient import TestClient

    app = create_app(hostile_repo, timeout_s=1.0)
    with TestClient(app) as http:
        runner = app.state.models.models["tiny"].versions[1].runners[0]
        with Stuck(runner) as stuck:
            slow = _post_tiny(http)
            assert stuck.entered.is_set()
        assert slow.status_code == 504, slow.text
        assert "did not finish within 1 s" in slow.json()["error"]
        assert _post_tiny(http).status_code == 200  # the stuck run finished; its result was dropped


def test_a_models_queue_policy_sets_its_queue_bound(hostile_repo, tmp_path):
    from modelport.serve.batcher import default_queue_size
    from modelport.serve.models import load_model

    shutil.copytree(hostile_repo / "osnet", tmp_path / "osnet")
    config = tmp_path / "osnet" / "config.pbtxt"
    config.write_text(config.read_text().replace("dynamic_batching {",
                                                 "dynamic_batching {\n  default_queue_policy { max_queue_size: 3 }"))
    assert load_model(tmp_path / "osnet", max_queue=50).versions[1].batcher.max_queue == 3
    assert load_model(hostile_repo / "osnet", max_queue=50).versions[1].batcher.max_queue == 50
    assert load_model(hostile_repo / "osnet").versions[1].batcher.max_queue == default_queue_size(16, 1) == 64


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a ``width`` x ``height`` RGB canvas and holds no pixels: bytes, not gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side, match", [(10_000, "10000x10000 pixels; the limit is 40000000 pixels"),
                                         (20_000, "could be decompression bomb")])  # Pillow's own guard
def test_an_image_too_big_to_decode_is_refused_before_decoding(served, side, match):
    bomb = png_header_only(side, side)  # 100 MP (0.3 GB as RGB) and 400 MP
    with memory_growth(served.pid) as growth:
        response = httpx.post(f"{served.url}/predict/osnet", files={"image": ("bomb.png", bomb, "image/png")},
                              timeout=30)
    assert response.status_code == 413, response.text
    assert match in response.json()["error"]
    assert growth.bytes < RSS_BUDGET


# Values a fuzzed field may take: every JSON type, and the numbers that break naive size arithmetic.
ODD_VALUES = [None, True, 0, -1, 1 << 63, 10**30, 1.5, 1e308, "", "FP32", "images", [], [[]], {}, [None],
              [-1], [1 << 62, 1 << 62], [1] * 40, {"binary_data_size": -5}]
ODD_SHAPES = [[-1, 3, 64, 64], [1 << 63, 1 << 63], [1, 3, 64], [], [1, 3, 64, 64, 1], [1.5, 3, 64, 64],
              ["1", 3, 64, 64], [0, 3, 64, 64], [10**30] * 4, [2, 3, 64, 64], [9, 3, 64, 64], [1, 64, 64, 3]]


def _paths(node, path=()):
    """Every key path in a JSON document (data arrays count as one leaf)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            if key != "data":
                yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*path, i)
            yield from _paths(value, (*path, i))


def _parent(doc, path):
    for key in path[:-1]:
        doc = doc[key]
    return doc


def mutate(rng: random.Random, header: dict, blob: bytes | None) -> tuple[bytes, dict[str, str], str]:
    """One hostile variant of a valid request: field deletions, odd values, shape edits, then maybe byte
    flips, truncation, a wrong header length or a Content-Encoding."""
    doc, notes = copy.deepcopy(header), []
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        kind = rng.choice(["delete", "retype", "shape", "shape"])
        inputs = doc.get("inputs")
        if kind == "shape" and isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
            inputs[0]["shape"] = rng.choice(ODD_SHAPES)
            notes.append(f"shape={inputs[0]['shape']}")
            continue
        paths = list(_paths(doc))
        if not paths:  # everything deleted already
            continue
        path = rng.choice(paths)
        parent = _parent(doc, path)
        if kind == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(ODD_VALUES)
        notes.append(f"{kind} {'/'.join(map(str, path))}")
    text = json.dumps(doc).encode()
    body, headers = (text + blob, {"Inference-Header-Content-Length": str(len(text))}) if blob else (text, {})
    if rng.random() < 0.3:
        edge = len(text) if blob else len(body)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(edge)
            body = body[:at] + bytes([body[at] ^ (1 << rng.randrange(8))]) + body[at + 1:]
        notes.append("flipped bytes")
    if rng.random() < 0.1:
        body = body[: rng.randrange(len(body))]
        notes.append("truncated")
    if blob and rng.random() < 0.1:
        headers["Inference-Header-Content-Length"] = rng.choice(["-1", "0", "abc", "1e3", str(len(body) + 1), b"\xb2"])
        notes.append(f"header length {headers['Inference-Header-Content-Length']!r}")
    if rng.random() < 0.1:
        encoding = rng.choice(["gzip", "deflate", "br", "identity"])
        body = gzip.compress(body) if encoding == "gzip" else zlib.compress(body) if encoding == "deflate" else body
        headers["Content-Encoding"] = encoding if rng.random() < 0.8 else rng.choice(["gzip", "deflate"])
        notes.append(f"encoded {encoding} as {headers['Content-Encoding']}")
    return body, headers, "; ".join(notes)


def test_fuzzed_requests_get_200_or_a_json_4xx_never_a_5xx(served):
    rng = random.Random(20240611)
    blob = np.random.default_rng(1).random(TINY_SHAPE, np.float32).tobytes()
    json_header = tiny_json()
    binary_header = {"inputs": [{"name": "images", "shape": list(TINY_SHAPE), "datatype": "FP32",
                                 "parameters": {"binary_data_size": len(blob)}}],
                     "outputs": [{"name": "output0", "parameters": {"binary_data": True}}]}
    seen: dict[int, int] = {}
    wrong = []
    with httpx.Client(base_url=served.url, timeout=30) as http, memory_growth(served.pid) as growth:
        for i in range(300):
            header, data = (json_header, None) if i % 2 else (binary_header, blob)
            body, headers, what = mutate(rng, header, data)
            response = http.post("/v2/models/tiny/infer", content=body, headers=headers)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            if response.status_code != 200:
                try:
                    error = response.json()["error"]
                except (ValueError, KeyError, TypeError):
                    error = None
                if not (400 <= response.status_code < 500 and isinstance(error, str)):
                    wrong.append((i, what, response.status_code, response.text[:300]))
        valid = http.post("/v2/models/tiny/infer", content=json.dumps(json_header))
    print(f"fuzz: statuses {dict(sorted(seen.items()))}, server RSS grew {growth.bytes / MB:.1f} MB at peak")
    assert wrong == []
    assert seen.get(200, 0) > 0 and len(seen) > 2  # the fuzz reached both outcomes
    assert valid.status_code == 200 and served.alive()
    assert growth.bytes < RSS_BUDGET
