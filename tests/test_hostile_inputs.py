"""Every command that takes a file answers every bad file the same way: a typed error on one line naming the
file, exit code 2, no traceback, nothing left behind, and no code from the file ever runs."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_plain

from modelport.zoo import create_model

MARKER = "PAYLOAD_RAN"


class Payload:
    """Unpickling this runs a shell command that creates the marker file: it must never happen."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        return (os.system, (f"touch {self.folder / MARKER}",))


def _hostile_detector(folder: Path, real: dict) -> dict:
    """A real Ultralytics checkpoint with a payload in its train_args: every global but one is allow-listed."""
    return {**real, "train_args": {"task": "detect", "x": Payload(folder)}}


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """Each bad input of the contract, named so that the architecture is never what fails."""
    from modelport.detect.untrained import save_untrained

    folder = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    good = save_plain(create_model("osnet_x0_25").eval(), folder / "good_osnet_x0_25.pt", 512)
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(data)

    put("osnet_x0_25_empty.pt", b"")
    put("osnet_x0_25_truncated.pt", good.read_bytes()[:5000])
    put("osnet_x0_25_random.pt", rng.bytes(4096))
    state = {"state_dict": create_model("osnet_x0_25").state_dict(), "x": Payload(folder)}
    torch.save(state, folder / "osnet_x0_25_hostile_zip.pt")
    torch.save(state, folder / "osnet_x0_25_hostile_legacy.pt", _use_new_zipfile_serialization=False)
    put("osnet_x0_25_hostile_raw.pt", pickle.dumps(Payload(folder)))
    # The defect as found: the text "ultralytics.nn" alone used to route a file to Ultralytics' loader.
    torch.save({"model": "ultralytics.nn.tasks.DetectionModel", "train_args": Payload(folder)}, folder / "yolo11n.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = save_untrained(folder / "real_yolo.pt", "yolo11n", imgsz=64, calib_images=4)
        torch.save(_hostile_detector(folder, torch.load(real, weights_only=False)), folder / "yolo11s_hostile.pt")
    torch.save({"backbone.layer9.weight": torch.zeros(3, 3)}, folder / "osnet_x0_25_foreign.pt")
    torch.save(create_model("resnet50").state_dict(), folder / "osnet_x0_25_resnet_weights.pt")
    put("corrupt.onnx", rng.bytes(2048))
    (folder / "corrupt_openvino_model").mkdir()
    (folder / "corrupt_openvino_model" / "corrupt.xml").write_text("<net><layers><layer id=")
    (folder / "corrupt_openvino_model" / "corrupt.bin").write_bytes(rng.bytes(64))
    (folder / "corrupt_openvino_model" / "metadata.json").write_text("{not json")
    files["corrupt_openvino_model"] = folder / "corrupt_openvino_model"
    put("corrupt.engine", b"MPRT" + rng.bytes(512))
    put("corrupt.torchscript", b"PK\x03\x04" + rng.bytes(1024))
    for name in ("osnet_x0_25_hostile_zip.pt", "osnet_x0_25_hostile_legacy.pt", "yolo11n.pt", "yolo11s_hostile.pt",
                 "osnet_x0_25_foreign.pt", "osnet_x0_25_resnet_weights.pt"):
        files[name] = folder / name
    files["osnet_x0_25_missing.pt"] = folder / "osnet_x0_25_missing.pt"
    good.unlink()
    return files


CHECKPOINTS = ("osnet_x0_25_empty.pt", "osnet_x0_25_truncated.pt", "osnet_x0_25_random.pt",
               "osnet_x0_25_hostile_zip.pt", "osnet_x0_25_hostile_legacy.pt", "osnet_x0_25_hostile_raw.pt",
               "yolo11n.pt", "yolo11s_hostile.pt", "osnet_x0_25_foreign.pt", "osnet_x0_25_resnet_weights.pt",
               "osnet_x0_25_missing.pt")
ARTIFACTS = ("corrupt.onnx", "corrupt_openvino_model", "corrupt.engine", "corrupt.torchscript")
# What the one line must say (besides the file's name), per input.
SAYS = {"osnet_x0_25_empty.pt": "empty file", "osnet_x0_25_truncated.pt": "truncated or corrupted",
        "osnet_x0_25_random.pt": "corrupted", "osnet_x0_25_hostile_zip.pt": "posix.system",
        "osnet_x0_25_hostile_legacy.pt": "posix.system", "osnet_x0_25_hostile_raw.pt": "posix.system",
        "yolo11n.pt": "posix.system", "yolo11s_hostile.pt": "posix.system", "osnet_x0_25_foreign.pt": "do not fit",
        "osnet_x0_25_resnet_weights.pt": "do not fit", "osnet_x0_25_missing.pt": "not found"}


def _commands(path: str, work: Path) -> dict[str, list[str]]:
    images = work / "images"
    return {
        "info": ["info", path],
        "export": ["export", path, "--format", "onnx", "--out", str(work / "exports")],
        "verify": ["verify", path],
        "load": ["load", path],
        "bench": ["bench", path, "--batch", "1", "--seconds", "0.1",
                  "--json", str(work / "benchmark.json")],
        "package": ["package", path, "--out", str(work / "edge.tar.gz")],
        "triton build": ["triton", "build", path, "--repo", str(work / "repo")],
        "reid extract": ["reid", "extract", "--model", path, "--db", str(work / "detections.db")],
        "search index": ["search", "index", str(images), "--model", path, "--db", str(work / "index.db")],
    }


def _cases():
    for name in CHECKPOINTS + ARTIFACTS:
        for command in ("info", "export", "verify", "load", "bench", "package", "triton build", "reid extract",
                        "search index"):
            if command == "export" and name in ARTIFACTS:
                continue  # export takes weights; an artifact there is refused by suffix, checked elsewhere
            yield pytest.param(name, command, id=f"{command}-{name}")


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def scene_db(tmp_path_factory) -> Path:
    """A small detections database for `reid extract` (2 people, 30 frames)."""
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data

    folder = tmp_path_factory.mktemp("scene")
    scene = write_demo_data(folder, people=2, frames=30, seed=3)
    import_mot(folder / "detections.db", scene.video, scene.detections)
    return folder / "detections.db"


@pytest.fixture
def work(tmp_path, monkeypatch, scene_db) -> Path:
    import shutil

    from PIL import Image

    shutil.copy2(scene_db, tmp_path / "detections.db")
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 48), (90, 120, 30)).save(tmp_path / "images" / "a.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELPORT_LOG_DIR", str(tmp_path.parent / f"{tmp_path.name}-logs"))
    return tmp_path


def run_cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    from modelport.cli import main

    monkeypatch.setattr(sys, "argv", ["modelport", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("name,command", list(_cases()))
def test_every_command_refuses_every_bad_file_the_same_way(bad, name, command, work, monkeypatch, capsys):
    path = bad[name]
    folder_before, work_before = _tree(path.parent), _tree(work)
    code, stderr = run_cli(_commands(str(path), work)[command], monkeypatch, capsys)
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert len(lines) == 1 and path.name in lines[0], stderr
    if name in SAYS:
        assert SAYS[name] in lines[0], stderr
    assert not (path.parent / MARKER).exists(), "a payload in a checkpoint ran"
    assert _tree(path.parent) == folder_before, "files appeared beside the bad input"
    assert _tree(work) == work_before, "a failed command left files behind"


def test_serve_refuses_a_repository_holding_a_corrupt_artifact(bad, tmp_path):
    repo = tmp_path / "repo"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(bad["corrupt.onnx"].read_bytes())
    (repo / "broken" / "config.pbtxt").write_text(
        'name: "broken"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'input [{ name: "images" data_type: TYPE_FP32 dims: [3, 256, 128] }]\n'
        'output [{ name: "embeddings" data_type: TYPE_FP32 dims: [512] }]\n')
    result = subprocess.run([sys.executable, "-m", "modelport.cli", "serve", str(repo), "--port", "0"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1 and "model.onnx" in lines[0], result.stderr


def test_an_unexpected_exception_is_one_line_naming_its_log(work, monkeypatch, capsys):
    import modelport.catalog

    def boom(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(modelport.catalog, "model_rows", boom)
    code, stderr = run_cli(["models"], monkeypatch, capsys)
    assert code == 70
    (line,) = [line for line in stderr.splitlines() if line.strip()]
    assert line.startswith("internal error: ZeroDivisionError: a bug (traceback written to ")
    log = Path(line.split("traceback written to ")[1].split(")")[0])
    assert "ZeroDivisionError" in log.read_text() and "Traceback" in log.read_text()


def test_trust_checkpoint_is_the_explicit_opt_in(bad, tmp_path):
    """The same hostile detector file runs its payload only when the user says they trust it."""
    from modelport.detect.model import load_ultralytics
    from modelport.errors import UnsafeCheckpointError
    from modelport.trust import trusted_checkpoints

    folder = tmp_path / "mine"
    folder.mkdir()
    hostile = folder / "yolo11s.pt"
    real = torch.load(bad["yolo11s_hostile.pt"].parent / "real_yolo.pt", weights_only=False)
    torch.save(_hostile_detector(folder, real), hostile)
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        load_ultralytics(hostile)
    assert not (folder / MARKER).exists()
    with trusted_checkpoints(), pytest.warns(UserWarning, match="unpickled in full"):
        try:
            load_ultralytics(hostile)
        except Exception:  # the payload replaced train_args; what matters is that it ran when trusted
            pass
    assert (folder / MARKER).exists()


def test_an_allow_listed_class_constructed_from_the_file_is_refused(tmp_path):
    """Real checkpoints create modules with NEWOBJ; REDUCE would run the class's __init__ on file data."""
    from ultralytics.nn.tasks import DetectionModel

    from modelport.detect.safe_load import check_detector_pickle
    from modelport.errors import UnsafeCheckpointError

    class Construct:
        def __reduce__(self):
            return (DetectionModel, ("attacker.yaml",))

    path = tmp_path / "yolo11n.pt"
    torch.save({"model": Construct()}, path)
    with pytest.raises(UnsafeCheckpointError, match="constructor of ultralytics.nn.tasks.DetectionModel"):
        check_detector_pickle(path)


def test_the_allow_list_is_derived_from_the_installed_packages():
    from torch import nn
    from ultralytics.nn.modules.head import Detect

    from modelport.detect.safe_load import detector_globals

    allowed = detector_globals()
    assert allowed["ultralytics.nn.modules.head.Detect"] is Detect
    assert allowed["torch.nn.modules.conv.Conv2d"] is nn.Conv2d
    assert not any(k.startswith("ultralytics.nn.autobackend") for k in allowed)  # loads files, installs packages
    assert all(k.startswith(("torch.nn.modules.", "ultralytics.nn.", "ultralytics.utils.")) for k in allowed)


def test_a_real_detector_checkpoint_still_loads(tmp_path):
    from modelport.detect.model import load_ultralytics
    from modelport.detect.untrained import save_untrained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = save_untrained(tmp_path / "yolo11n.pt", "yolo11n", imgsz=64, calib_images=4)
        model, ckpt = load_ultralytics(path)
    assert model.task == "detect" and not model.training
    assert next(model.parameters()).dtype == torch.float32
    out = model(torch.zeros(1, 3, 64, 64))
    assert (out[0] if isinstance(out, (list, tuple)) else out).shape[1] == 84


def test_pickle_scanner_reads_globals_without_running_anything():
    from modelport.pickle_scan import pickle_globals

    buffer = io.BytesIO()
    pickle.dump({"a": [1, 2], "b": Payload(Path("/nonexistent"))}, buffer, protocol=2)
    named, called = pickle_globals(buffer.getvalue())
    assert named == {"posix.system"} and called == {"posix.system"}


def test_export_replaces_its_own_artifact_but_not_a_users_file(exported, monkeypatch, capsys):
    """Re-exporting refreshes an earlier modelport export; a foreign file under the same name needs --force."""
    onnx = exported.with_suffix(".onnx")
    onnx.write_bytes(b"my own notes, not a model")
    code, stderr = run_cli(["export", str(exported), "--format", "onnx"], monkeypatch, capsys)
    assert code == 2 and "is not a modelport ONNX export" in stderr and "--force" in stderr, stderr
    assert onnx.read_bytes() == b"my own notes, not a model"
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")], "staging left behind"
    code, stderr = run_cli(["export", str(exported), "--format", "onnx", "--force"], monkeypatch, capsys)
    assert code == 0, stderr
    first = onnx.stat().st_ino
    code, stderr = run_cli(["export", str(exported), "--format", "onnx"], monkeypatch, capsys)
    assert code == 0, stderr  # its own export: replaced without --force, in one rename
    assert onnx.stat().st_ino != first
    from modelport.formats import get_format

    assert get_format("onnx").read_spec(onnx).name == "osnet_x0_25"
