"""`modelport package ARTIFACT` right after `modelport export`, for every family, with no benchmark run first:
the package re-verifies with `modelport verify PKG`, and a tampered one (golden outputs edited, or the artifact
swapped for one with other weights) fails. A package never holds PyTorch weights (issue 28)."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
import torch
from conftest import calibrated_model, save_plain, untrained_yolo
from onnx import numpy_helper
from typer.testing import CliRunner

pytest.importorskip("ultralytics")
pytest.importorskip("open_clip")

TESTS = Path(__file__).parent
IMGSZ = 160  # the detector's input: nothing here depends on its size
CLIP = "MobileCLIP2-S0"
FACTORY_CONFIG = """
factory: factory_pkg.models:build
args: {channels: 8, embed_dim: 16}
weights: best.pth
name: tiny_swap
inputs:
  - {name: target, shape: [1, 3, 48, 80], dtype: float32, range: [0, 1]}
  - {name: source, shape: [1, 16], dtype: float32, range: [-1, 1]}
outputs: [swapped]
dynamic_axes:
  target: {0: batch, 2: height, 3: width}
  source: {0: batch}
  swapped: {0: batch, 2: height, 3: width}
"""
# case -> (family, artifact file name, where its golden outputs come from)
CASES = {
    "reid": ("reid", "osnet_x0_25_msmt17.onnx", "pytorch"),
    "yolo-raw": ("yolo", "yolo11n.onnx", "artifact"),
    "yolo-e2e": ("yolo", "yolo11n.nms.onnx", "artifact"),
    "clip-image": ("clip", f"{CLIP}_random_image.onnx", "artifact"),
    "clip-text": ("clip", f"{CLIP}_random_text.onnx", "artifact"),
    "factory": ("factory", "best.onnx", "artifact"),
}


def cli(*args: object):
    """The CLI in this process; a typed error arrives as ``result.exception``."""
    from modelport.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def said(result) -> str:
    return f"{result.output}\n{result.exception!r}"


@pytest.fixture(scope="module", autouse=True)
def _setting(tmp_path_factory):
    """No benchmark record anywhere (a fresh cache), the user's factory package importable, short timings."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELPORT_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.syspath_prepend(str(TESTS))
        mp.setattr("modelport.package.SECONDS", 0.05)
        yield


def _export(*args: object) -> None:
    done = cli("export", *args, "--format", "onnx")
    assert done.exit_code == 0, said(done)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """One ONNX export of each family, made with `modelport export`; family -> its folder."""
    import open_clip

    from modelport.clip.model import build_clip
    from modelport.zoo.checkpoints import RANDOM_MARKER

    folders = {family: tmp_path_factory.mktemp(family) for family in ("reid", "yolo", "clip", "factory")}
    _export(save_plain(calibrated_model("osnet_x0_25"), folders["reid"] / "osnet_x0_25_msmt17.pt", 512))
    yolo = untrained_yolo(folders["yolo"] / "yolo11n.pt", IMGSZ)
    _export(yolo, "--imgsz", IMGSZ, "--conf", 0.01)
    _export(yolo, "--imgsz", IMGSZ, "--conf", 0.01, "--nms")
    checkpoint = folders["clip"] / f"{CLIP}_random.pt"

    def save(model) -> None:  # test_clip's recipe: BatchNorm calibrated, so that images get different embeddings
        from modelport.clip.samples import scene_images
        from modelport.preprocess import prepare
        from modelport.spec import Preprocess
        from modelport.zoo.calibrate import calibrate_batchnorm

        pre = Preprocess(height=256, width=256, mean=(0.0,) * 3, std=(1.0,) * 3)
        calibrate_batchnorm(model.visual, [torch.from_numpy(prepare(scene_images(8, 256, 256, seed=3), pre))])
        torch.save({"state_dict": model.state_dict(), RANDOM_MARKER: "random"}, checkpoint)

    def no_download(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.setattr(open_clip.factory, "download_pretrained", no_download)
        mp.setattr(open_clip.pretrained, "download_pretrained_from_hf", no_download)
        build_clip(CLIP, allow_random=True, prepare=save)
        _export(CLIP, "--weights", checkpoint, "--out", folders["clip"])
    from factory_pkg.models import build

    factory_weights = folders["factory"] / "best.pth"
    torch.save({"state_dict": build(channels=8, embed_dim=16).state_dict(), "epoch": 3}, factory_weights)
    (folders["factory"] / "export.yaml").write_text(FACTORY_CONFIG)
    _export("--factory", "factory_pkg.models:build", "--weights", factory_weights,
            "--config", folders["factory"] / "export.yaml")
    return folders


@pytest.fixture(scope="module")
def packages(exported, tmp_path_factory) -> dict[str, Path]:
    """`modelport package ARTIFACT` of every case, right after the export; case -> the package."""
    out = tmp_path_factory.mktemp("packages")
    made = {}
    for case, (family, name, _) in CASES.items():
        done = cli("package", exported[family] / name, "--out", out / f"{case}.tar.gz")
        assert done.exit_code == 0, f"{case}: {said(done)}"
        made[case] = out / f"{case}.tar.gz"
    return made


def _members(package: Path) -> dict[str, bytes]:
    with tarfile.open(package) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _rewrite(package: Path, out: Path, change: Callable[[str, bytes], bytes]) -> Path:
    """A copy of ``package`` whose files pass through ``change(name, data) -> data``."""
    with tarfile.open(package) as src, tarfile.open(out, "w:gz", compresslevel=1) as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if data is not None:
                data = change(member.name, data)
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_package_right_after_export_holds_one_artifact_and_verifies(case, packages):
    family, name, reference = CASES[case]
    members = _members(packages[case])
    assert name in members and not any(n.endswith((".pt", ".pth")) for n in members)
    assert json.loads(members["golden/golden.json"])["reference"] == reference
    record = json.loads(members["benchmark.json"])  # no bench was run: the artifact alone was timed
    assert record["model"]["artifact"] == name and {r["batch"] for r in record["rows"] if r["throughput"]} >= {1}
    spec = json.loads(members["model.json"])
    assert spec["task"] == {"reid": "embed", "yolo": "detect", "factory": "tensors"}.get(
        family, "embed_text" if case == "clip-text" else "embed")
    done = cli("verify", packages[case])
    assert done.exit_code == 0 and "pass" in done.output, said(done)


@pytest.mark.parametrize("case", list(CASES))
def test_a_package_with_edited_golden_outputs_fails_verify(case, packages, tmp_path):
    def edit(name: str, data: bytes) -> bytes:
        if name != "golden/outputs.npz":
            return data
        with np.load(io.BytesIO(data)) as npz:
            outputs = {k: npz[k].copy() for k in npz.files}
        first = sorted(outputs)[0]
        outputs[first][0] += np.abs(outputs[first]).max() + 1  # one row of one output
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **outputs)
        return buffer.getvalue()

    done = cli("verify", _rewrite(packages[case], tmp_path / "edited.tar.gz", edit))
    assert done.exit_code == 1 and "fail" in done.output.lower(), said(done)


def _other_weights(data: bytes, seed: int = 3) -> bytes:
    """The same ONNX graph with every weight tensor changed by seeded noise: an export of other weights."""
    model = onnx.load_from_string(data)
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype == np.float32 and values.size >= 16:
            noisy = values * (1 + 0.5 * rng.standard_normal(values.shape)).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), init.name))
    return model.SerializeToString()


@pytest.mark.parametrize("case", [c for c in CASES if c != "clip-text"])  # 250 MB of text encoder: the image one
def test_a_package_whose_artifact_has_other_weights_fails_verify(case, packages, tmp_path):  # stands for CLIP
    artifact = CASES[case][1]
    swapped = _rewrite(packages[case], tmp_path / "swapped.tar.gz",
                       lambda name, data: _other_weights(data) if name == artifact else data)
    done = cli("verify", swapped)
    assert done.exit_code == 1 and "fail" in done.output.lower(), said(done)


def _pytorch_fastest(weights: Path, onnx_path: Path) -> None:
    """This machine's benchmark record of ``weights`` with PyTorch measured fastest, as `modelport bench` keeps it."""
    from dataclasses import asdict

    from modelport.bench import save_record
    from modelport.bench_record import header, row
    from modelport.formats import format_of_path

    spec = format_of_path(onnx_path).read_spec(onnx_path)
    report = header("reid", {"name": spec.name, "task": spec.task, "source": asdict(spec.source)},
                    {"batches": [1]}, peak=False)
    report["rows"] = [row("pytorch", "pytorch", 1, path=weights, latencies=[0.001]),
                      row("onnx", "onnx", 1, path=onnx_path, latencies=[0.004])]
    save_record(report)


def test_packaging_weights_whose_fastest_runtime_is_pytorch_ships_an_export_that_verifies(exported, tmp_path):
    weights = exported["reid"] / "osnet_x0_25_msmt17.pt"
    _pytorch_fastest(weights, exported["reid"] / "osnet_x0_25_msmt17.onnx")
    done = cli("package", weights, "--out", tmp_path / "pkg.tar.gz")
    assert done.exit_code == 0, said(done)
    members = _members(tmp_path / "pkg.tar.gz")
    assert "osnet_x0_25_msmt17.onnx" in members and "osnet_x0_25_msmt17.pt" not in members
    assert json.loads(members["golden/golden.json"])["reference"] == "pytorch"
    check = cli("verify", tmp_path / "pkg.tar.gz")
    assert check.exit_code == 0 and "pass" in check.output, said(check)


def test_packaging_weights_with_no_export_is_refused_saying_to_export_first(exported, tmp_path, monkeypatch):
    from modelport.errors import ExportError

    monkeypatch.chdir(tmp_path)  # no exports in the working directory either
    lonely = tmp_path / "alone" / "osnet_x0_25_market.pt"
    lonely.parent.mkdir()
    state = torch.load(exported["reid"] / "osnet_x0_25_msmt17.pt", weights_only=True)
    torch.save({**state, "classifier.bias": state["classifier.bias"] + 1}, lonely)  # other weights: no record
    done = cli("package", lonely, "--out", tmp_path / "pkg.tar.gz")
    assert isinstance(done.exception, ExportError), said(done)
    assert "modelport export" in str(done.exception) and str(lonely) in str(done.exception)
    assert not (tmp_path / "pkg.tar.gz").exists()


def test_verify_names_the_weights_in_a_package_that_holds_no_artifact(packages, tmp_path):
    from modelport.errors import CorruptFileError

    weights_only = tmp_path / "old.tar.gz"
    with tarfile.open(packages["reid"]) as src, tarfile.open(weights_only, "w:gz", compresslevel=1) as dst:
        for member in src.getmembers():  # what packages of PyTorch-fastest weights held before issue 28
            data = src.extractfile(member).read()
            if member.name.endswith(".onnx"):
                member.name = "osnet_x0_25_msmt17.pt"
            dst.addfile(member, io.BytesIO(data))
    done = cli("verify", weights_only)
    assert isinstance(done.exception, CorruptFileError), said(done)
    assert "osnet_x0_25_msmt17.pt" in str(done.exception) and "modelport package" in str(done.exception)

