"""`reid extract --engine ray`: Ray Data (real, local, two CPUs) computes what in-process extraction computes,
on both stores, and a Ray worker killed mid-extraction costs nothing and duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import calibrated_model, save_plain

from modelport.reid import store
from modelport.reid.extract import extract, load_model
from modelport.reid.importer import import_mot
from modelport.reid.ray_extract import extract_ray
from modelport.reid.synth import write_demo_data


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module (two CPUs: one embedding actor, one decoding task at a time)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    """A BatchNorm-calibrated, seeded OSNet x0_25 exported to ONNX (its actors start without torch's import)."""
    from modelport.export import export

    folder = tmp_path_factory.mktemp("ray_model")
    weights = save_plain(calibrated_model("osnet_x0_25"), folder / "osnet_x0_25_msmt17.pt", 512)
    export(weights, "onnx", verify=False)
    return folder / "osnet_x0_25_msmt17.onnx"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_demo_data(tmp_path_factory.mktemp("ray_scene"), people=3, frames=30, seed=4)


def _import(db: str, scene) -> str:
    import_mot(db, scene.video, scene.detections, ground_truth=scene.ground_truth)
    return db


@pytest.fixture(scope="module")
def reference(scene, onnx_model, tmp_path_factory) -> dict[tuple, np.ndarray]:
    """In-process extraction's embedding of every detection, by (frame, box)."""
    db = _import(str(tmp_path_factory.mktemp("ray_ref") / "ref.db"), scene)
    extract(db, load_model(onnx_model), batch=4)
    return _embeddings(db)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, scene, tmp_path) -> str:
    location = str(tmp_path / "d.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    return _import(location, scene)


def _embeddings(db: str) -> dict[tuple, np.ndarray]:
    """Every stored embedding by its detection's (frame, box); fails on a detection with two or none."""
    conn = store.connect(db)
    try:
        rows = conn.execute("SELECT d.frame_index, d.x1, d.y1, d.x2, d.y2, e.embedding FROM object_detections d "
                            "LEFT JOIN reid_embeddings e ON e.detection_id = d.id").fetchall()
        vectors = conn.vectors([r[5] for r in rows if r[5] is not None])
    finally:
        conn.close()
    keys = [tuple(r[:5]) for r in rows]
    assert all(r[5] is not None for r in rows), "a detection has no embedding"
    assert len(set(keys)) == len(keys), "a detection has two embeddings"
    return dict(zip(keys, vectors))


def _same(got: dict[tuple, np.ndarray], want: dict[tuple, np.ndarray]) -> None:
    assert got.keys() == want.keys() and len(got) >= 20
    keys = sorted(want)
    np.testing.assert_allclose(np.stack([got[k] for k in keys]), np.stack([want[k] for k in keys]), atol=1e-5)


def _embedder_pids() -> dict[int, str]:
    """Processes of the Ray Data actors holding our runners (``ray::MapWorker(MapBatches(Embedder))``) by pid."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if title.startswith(b"ray::") and b"Embedder" in title:
                pids[int(entry.name)] = title.decode(errors="replace")
    return pids


def test_ray_extraction_stores_what_in_process_extraction_computes(ray_cluster, db, onnx_model, reference):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = extract_ray(db, onnx_model, batch=4, segment_rows=16)
    assert result.computed == len(reference) and result.already == 0
    _same(_embeddings(db), reference)
    again = extract_ray(db, onnx_model, batch=4)  # nothing left: nothing computed, nothing stored twice
    assert again.computed == 0 and again.already == len(reference)


def test_a_ray_worker_killed_mid_extraction_loses_nothing_and_embeds_nothing_twice(ray_cluster, db, onnx_model,
                                                                                     reference):
    killed: list[int] = []
    after: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        # From the kill until the run returns: the restarted actor can start and finish between two of the
        # driver's progress calls on a loaded machine (seen with one core per pytest-xdist worker).
        while not stop.wait(0.05):
            after.update(_embedder_pids())

    watcher = threading.Thread(target=watch, daemon=True)

    def kill_on_first_write(done: int, total: int) -> None:
        # Called by the driver after each batch it stored (commit_every=0): the first store is mid-extraction.
        if not killed and 0 < done < total:
            victims = _embedder_pids()
            assert victims, "no Ray actor embedding crops was found"
            victim = min(victims)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            watcher.start()
            # Decoding runs in tasks of its own, not fused into the actors (the CPU stage).
            assert not any("decode_crops" in title for title in victims.values()), victims

    # Segments of 4 crops: the driver stores (and the test can kill) after each, with most still to come.
    try:
        result = extract_ray(db, onnx_model, batch=2, segment_rows=4, progress=kill_on_first_write,
                             commit_every=0.0)
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
    assert killed, "extraction finished before a worker could be killed"
    assert after - set(killed), "Ray did not restart the killed actor"
    assert result.computed == len(reference)
    _same(_embeddings(db), reference)
    conn = store.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM reid_claims").fetchone()[0] == 0
    finally:
        conn.close()


def test_an_actor_pool_that_would_leave_no_cpu_for_decoding_is_refused(ray_cluster, db, onnx_model):
    from modelport.errors import ModelportError

    # It would wait forever: the actors hold every CPU and the decoding tasks they wait for never start.
    with pytest.raises(ModelportError, match="leave none of the Ray cluster's 2 CPU"):
        extract_ray(db, onnx_model, batch=4, actors=2)


def test_workers_that_draw_other_random_weights_than_the_driver_stop_the_run(ray_cluster, scene, tmp_path):
    # No file: the driver and each actor draw random weights of their own, which would mix two models' vectors.
    db = _import(str(tmp_path / "d.db"), scene)
    from modelport.errors import ModelportError

    # The worker's own error, unwrapped from Ray's (RayTaskError, UserCodeException), with its hint.
    refused = pytest.raises(ModelportError, match="a Ray worker loaded model .* the driver")
    with warnings.catch_warnings(), refused as err:
        warnings.simplefilter("ignore")
        extract_ray(db, tmp_path / "osnet_x0_25_missing.pt", allow_random=True, batch=8)
    assert type(err.value) is ModelportError and "same model file" in err.value.hint
    conn = store.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM reid_embeddings").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM reid_claims").fetchone()[0] == 0
    finally:
        conn.close()


CLI_IN_PROCESS = """
import sys
from modelport.cli import main
sys.argv = ["modelport", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert exc.code == 0, exc.code
print("ray imported:", "ray" in sys.modules)
"""


def test_extract_without_the_ray_engine_never_imports_ray(scene, onnx_model, tmp_path):
    db = _import(str(tmp_path / "d.db"), scene)
    done = subprocess.run([sys.executable, "-c", CLI_IN_PROCESS, "reid", "extract", "--db", db, "--model",
                           str(onnx_model), "--batch", "8"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "new embeddings" in done.stdout and "ray imported: False" in done.stdout


def _cli(*args: str, block_ray: bool = False, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    if block_ray:  # as on the default install, where the extra is absent
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None\n")
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "modelport.cli", "reid", "extract", *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path)


def test_the_ray_options_fail_as_usage_errors_or_name_the_extra(tmp_path):
    lone = _cli("--db", "x.db", "--model", "m.onnx", "--address", "ray://head:10001", tmp_path=tmp_path)
    assert lone.returncode == 2 and "--address joins a Ray cluster: give it with --engine ray" in lone.stderr
    wrong = _cli("--db", "x.db", "--model", "m.onnx", "--engine", "spark", tmp_path=tmp_path)
    assert wrong.returncode == 2 and "--engine must be local or ray, not 'spark'" in wrong.stderr
    absent = _cli("--db", "x.db", "--model", "m.onnx", "--engine", "ray", block_ray=True, tmp_path=tmp_path)
    assert absent.returncode == 2 and "Traceback" not in absent.stderr, absent.stderr
    assert [line.strip() for line in absent.stderr.splitlines() if "hint:" in line] == [
        "hint: pip install 'modelport[ray]'"]
