"""MobileCLIP2-S0 with seeded random (BatchNorm-calibrated) weights: both encoders exported to every format
here, verified numerically, structurally (re-parameterised) and semantically, and usable from the export alone."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from modelport.clip.check import QUERIES, same_ranking  # noqa: E402
from modelport.clip.export import export_clip  # noqa: E402
from modelport.clip.model import ImageEncoder, build_clip, clip_models, clip_norm  # noqa: E402
from modelport.clip.samples import scene_images  # noqa: E402
from modelport.errors import RandomWeightsNotAllowedError, WeightsMismatchError  # noqa: E402
from modelport.export import available_formats  # noqa: E402
from modelport.formats import get_format  # noqa: E402
from modelport.formats.pytorch import PyTorchRunner  # noqa: E402
from modelport.preprocess import prepare  # noqa: E402
from modelport.zoo import RandomWeightsWarning  # noqa: E402
from modelport.zoo.calibrate import calibrate_batchnorm  # noqa: E402
from modelport.zoo.checkpoints import RANDOM_MARKER  # noqa: E402

NAME = "MobileCLIP2-S0"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)


def _calibration(clip: torch.nn.Module) -> None:
    """Random FastViTs give every image the same embedding (cosine 0.9999996); calibrated BN fixes that."""
    from modelport.spec import Preprocess

    pre = Preprocess(height=256, width=256, mean=(0.0,) * 3, std=(1.0,) * 3)
    calibrate_batchnorm(clip.visual, [torch.from_numpy(prepare(scene_images(8, 256, 256, seed=3), pre))])


def _no_download(*args, **kwargs):
    raise AssertionError(f"a download was attempted: {args} {kwargs}")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("clip")


@pytest.fixture(scope="module")
def checkpoint_and_model(work):
    """The calibrated model, and its train-time (not re-parameterised) weights saved as a checkpoint."""
    import open_clip

    path = work / f"{NAME}_random.pt"

    def prepare_and_save(clip):
        _calibration(clip)
        torch.save({"state_dict": clip.state_dict(), RANDOM_MARKER: "random"}, path)

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        mp.setattr(open_clip.factory, "download_pretrained", _no_download)
        mp.setattr(open_clip.pretrained, "download_pretrained_from_hf", _no_download)
        model = build_clip(NAME, allow_random=True, prepare=prepare_and_save)
    return path, model


@pytest.fixture(scope="module")
def model(checkpoint_and_model):
    return checkpoint_and_model[1]


@pytest.fixture(scope="module")
def exported(work, checkpoint_and_model):
    path, model = checkpoint_and_model
    return export_clip(NAME, path, model=model, out=work / "exports")


@pytest.fixture(scope="module")
def images():
    # 320x240 scenes: the centre crop of the spec's preprocessing is exercised.
    return scene_images(6, 240, 320, seed=11)


def test_open_clip_lists_every_mobileclip():
    assert {"MobileCLIP2-S0", "MobileCLIP2-S2", "MobileCLIP2-S3", "MobileCLIP2-S4", "MobileCLIP2-B",
            "MobileCLIP2-L-14", "MobileCLIP-S1", "MobileCLIP-S2", "MobileCLIP-B"} <= set(clip_models())


@pytest.mark.parametrize("name, trained_with_openai_norm", [
    ("MobileCLIP-S1", False), ("MobileCLIP-S2", False), ("MobileCLIP-B", False), ("MobileCLIP2-S0", False),
    ("MobileCLIP2-S2", False), ("MobileCLIP2-B", False), ("MobileCLIP2-S3", True), ("MobileCLIP2-S4", True),
    ("MobileCLIP2-L-14", True)])
def test_mean_std_come_from_the_pretrained_config(name, trained_with_openai_norm):
    norm = clip_norm(name)
    if trained_with_openai_norm:
        assert norm.mean == pytest.approx(OPENAI_MEAN)
    else:
        assert norm.mean == (0.0, 0.0, 0.0) and norm.std == (1.0, 1.0, 1.0)


def test_image_encoder_folds_mean_std_and_normalises():
    visual = torch.nn.Flatten()
    clip = type("Clip", (), {"visual": visual})()
    x = torch.rand(2, 3, 4, 4)
    mean, std = OPENAI_MEAN, (0.26862954, 0.26130258, 0.27577711)
    got = ImageEncoder(clip, mean, std)(x)
    want = torch.nn.functional.normalize(((x - torch.tensor(mean).view(1, 3, 1, 1)) /
                                          torch.tensor(std).view(1, 3, 1, 1)).flatten(1), dim=-1)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(ImageEncoder(clip, (0.0,) * 3, (1.0,) * 3)(x), torch.nn.functional.normalize(x.flatten(1)))


def test_no_weights_and_no_allow_random_is_a_typed_error_naming_the_file_to_provide():
    with pytest.raises(RandomWeightsNotAllowedError, match="--weights") as info:
        build_clip(NAME)
    assert "open_clip_model.safetensors" in info.value.hint and "MobileCLIP2-S0" in info.value.hint


def test_specs_describe_both_encoders(model):
    image, text = model.image_spec, model.text_spec
    assert [(t.name, t.dtype, t.shape) for t in image.inputs] == [("images", "float32", ("batch", 3, 256, 256))]
    assert [(t.name, t.shape) for t in image.outputs] == [("image_embeddings", ("batch", 512))]
    assert [(t.name, t.dtype, t.shape) for t in text.inputs] == [("text_tokens", "int64", ("batch", 77))]
    assert [(t.name, t.shape) for t in text.outputs] == [("text_embeddings", ("batch", 512))]
    # Only /255 outside the graph; S0 was trained without normalisation.
    assert image.preprocess.mean == (0.0, 0.0, 0.0) and image.preprocess.std == (1.0, 1.0, 1.0)
    assert image.extra["folded_mean"] == [0.0, 0.0, 0.0] and image.extra["max_batch"] == 128
    assert text.extra["max_batch"] == 64 and text.extra["tokenizer"]["model"] == NAME
    assert image.is_random and text.extra["reparameterized"]


def test_calibrated_image_embeddings_depend_on_the_input(model, images):
    emb = PyTorchRunner(model.image, model.image_spec, None).embed(images)
    sims = emb @ emb.T
    assert sims[~np.eye(len(emb), dtype=bool)].max() < 0.99


def test_every_available_format_is_exported_and_verified(exported, work):
    formats = [f.id for f in available_formats()]
    assert exported.ok, [(r.format, r.error) for rs in exported.results.values() for r in rs]
    for which in ("image", "text"):
        assert sorted(exported.paths(which)) == sorted(formats)
        for fmt_id, path in exported.paths(which).items():
            assert path == get_format(fmt_id).artifact_path(work / "exports", f"{NAME}_random_{which}")
    # the image tower's graph was checked for un-merged branches in every format (the text tower has none)
    assert [s.label for s in exported.structure] == [str(p) for p in exported.paths("image").values()]
    assert all(s.passed and s.expected > 50 for s in exported.structure)
    # every format ranks the fixed images for every fixed query exactly as PyTorch does
    semantic = exported.semantic
    assert semantic.passed and sorted(r.label for r in semantic.results) == sorted(formats)
    assert semantic.queries == QUERIES and all(r.identical == len(QUERIES) for r in semantic.results)


@pytest.mark.parametrize("fmt_id", [f.id for f in available_formats()])
def test_text_queries_round_trip_through_the_export_alone(exported, model, fmt_id):
    runner = get_format(fmt_id).load(exported.paths("text")[fmt_id])  # a fresh process would do just this
    got = runner.embed_text(list(QUERIES))
    assert got.shape == (len(QUERIES), 512)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    import open_clip

    tokens = open_clip.get_tokenizer(NAME)(list(QUERIES))
    with torch.no_grad():
        want = model.clip.encode_text(tokens, normalize=True).numpy()
    assert (got * want).sum(1).min() > 0.9999
    centred = (got - want.mean(0)) * (want - want.mean(0))
    assert (centred.sum(1) / np.linalg.norm(got - want.mean(0), axis=1)
            / np.linalg.norm(want - want.mean(0), axis=1)).min() > 0.999


def test_triton_repository_takes_both_encoders(exported, tmp_path):
    from modelport.triton.build import ModelEntry, build_model

    configs = {which: build_model(ModelEntry(str(exported.paths(which)["onnx"])), tmp_path).config.read_text()
               for which in ("image", "text")}
    assert 'name: "text_tokens"' in configs["text"] and "TYPE_INT64" in configs["text"]
    assert 'name: "images"' in configs["image"] and "TYPE_FP32" in configs["image"]


def test_top1_agreement_counts_ties_as_the_rankings_do():
    # Two images tied for first place (1e-7 apart) in PyTorch; the export swaps them. The ranking is identical up to
    # ties, so the top-1 agreement must not say otherwise (it said 0.875 beside "identical": 8 for one tied query).
    from modelport.clip.check import semantic_check

    class Stub:
        def __init__(self, sims):
            self.sims = np.asarray(sims, dtype=np.float64)

        def embed_text(self, queries):
            return self.sims

        def embed(self, images):
            return np.eye(self.sims.shape[1])

    reference = [[0.5, 0.5 + 1e-7, 0.1], [0.9, 0.2, 0.1]]
    swapped = [[0.5 + 1e-7, 0.5, 0.1], [0.9, 0.2, 0.1]]
    report = semantic_check({"pytorch": (Stub(reference), Stub(reference)), "onnx": (Stub(swapped), Stub(swapped))},
                            "pytorch", np.zeros((3, 1)), queries=("a", "b"))
    (result,) = report.results
    assert result.identical == 2 and result.top1_agreement == 1.0
    wrong = [[0.1, 0.5, 0.9], [0.9, 0.2, 0.1]]
    report = semantic_check({"pytorch": (Stub(reference), Stub(reference)), "onnx": (Stub(wrong), Stub(wrong))},
                            "pytorch", np.zeros((3, 1)), queries=("a", "b"))
    assert report.results[0].identical == 1 and report.results[0].top1_agreement == 0.5


def test_same_ranking_fails_on_a_real_swap_and_tolerates_ties():
    ref = np.array([0.9, 0.5, 0.1])
    assert same_ranking(ref, np.array([0.8, 0.6, 0.0]))
    assert not same_ranking(ref, np.array([0.5, 0.9, 0.1]))
    assert same_ranking(np.array([0.5, 0.5 + 1e-7, 0.1]), np.array([0.5 + 1e-7, 0.5, 0.1]))


def test_an_export_without_reparameterisation_is_caught(work, checkpoint_and_model):
    """Merging branches is exact in eval mode, so numbers agree; the graph's extra convolutions give it away."""
    import open_clip

    path, model = checkpoint_and_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = open_clip.create_model(NAME).eval()
    from modelport.zoo.checkpoints import read_checkpoint

    raw.load_state_dict(read_checkpoint(path)[0])
    unmerged = dataclasses.replace(model, image=ImageEncoder(raw, model.norm.mean, model.norm.std).eval())
    out = work / "unmerged"
    report = export_clip(NAME, model=unmerged, formats="onnx", out=out, encoders=("image",))
    assert not report.ok
    for result in report.results["image"]:
        assert result.check is not None and result.check.passed  # numeric parity alone cannot tell
        assert "without re-parameterisation" in result.error and result.path is None
    assert not any(out.iterdir())  # nothing left behind
    assert [s.found > s.expected for s in report.structure] == [True]


def test_checkpoint_loads_into_the_same_model(checkpoint_and_model, images):
    path, model = checkpoint_and_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        loaded = build_clip(NAME, path)
    assert loaded.image_spec.source.kind == "random" and loaded.image_spec.source.sha256
    a = PyTorchRunner(loaded.image, loaded.image_spec, None).embed(images)
    b = PyTorchRunner(model.image, model.image_spec, None).embed(images)
    assert np.abs(a - b).max() < 1e-5


def test_a_checkpoint_of_another_model_is_a_typed_error(tmp_path, checkpoint_and_model):
    state = torch.load(checkpoint_and_model[0], weights_only=True)["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("text.transformer.resblocks.11.")}
    bad = tmp_path / "truncated.pt"
    torch.save(state, bad)
    with pytest.raises(WeightsMismatchError, match="missing"):
        build_clip(NAME, bad)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "modelport.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"})


def test_cli_export_needs_weights_or_allow_random(tmp_path):
    result = _cli("export", NAME, "--out", str(tmp_path))
    assert result.returncode == 2 and "--weights" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_options_clip_exports_do_not_have_are_refused():
    from rich.console import Console

    from modelport.clip.cli import export_named
    from modelport.errors import ExportError

    with pytest.raises(ExportError, match="--batch, --int8 not supported"):
        export_named(NAME, None, None, out_dir=None, opset=17, allow_random=True, device="cpu", verify=True,
                     as_json=False, console=Console(), unsupported={"--batch": 4, "--half": False, "--int8": True})


@pytest.mark.skipif(get_format("tensorrt").unavailable_reason("cuda") is not None,
                    reason=f"TensorRT: {get_format('tensorrt').unavailable_reason('cuda')}")
def test_tensorrt_engines_for_both_encoders(work, checkpoint_and_model):
    path, model = checkpoint_and_model
    report = export_clip(NAME, path, "tensorrt", model=copy.deepcopy(model), out=work / "trt", device="cuda")
    assert report.ok, [(r.format, r.error) for rs in report.results.values() for r in rs]
    runner = get_format("tensorrt").load(report.paths("text")["tensorrt"], "cuda")
    assert runner.embed_text(["a photo of a dog"]).shape == (1, 512)


def get_format_of(path):
    from modelport.formats import format_of_path

    return format_of_path(path).id


def _invoke(*args):
    """The CLI in this process (no re-import of torch/open_clip); typed errors arrive as result.exception."""
    from typer.testing import CliRunner

    from modelport.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_models_lists_every_mobileclip_from_configs_without_building():
    from modelport.catalog import clip_rows

    rows = {r["name"]: r for r in clip_rows()}
    assert set(rows) == set(clip_models())
    assert rows[NAME] == {"name": NAME, "family": "clip", "task": "embed+embed_text", "feature_dim": 512,
                          "input": [3, 256, 256], "text_input": [77], "params": None}
    assert rows["MobileCLIP2-L-14"]["feature_dim"] == 768 and rows["MobileCLIP2-L-14"]["input"] == [3, 224, 224]


def test_load_opens_either_encoder_and_each_refuses_the_other_modality(exported, images):
    import modelport
    from modelport.errors import ModelportError

    for fmt_id in exported.paths("text"):
        text = modelport.load(exported.paths("text")[fmt_id])
        image = modelport.load(exported.paths("image")[fmt_id])
        assert text.embed_text(["a photo of a dog"]).shape == (1, 512)
        assert image.embed(images[:2]).shape == (2, 512)
        with pytest.raises(ModelportError, match="text encoder embeds text"):
            text.embed(images[:1])
        with pytest.raises(ModelportError, match="not a text encoder"):
            image.embed_text(["a photo of a dog"])


@pytest.mark.parametrize("which", ["text", "image"])
def test_cli_load_runs_every_encoder_artifact(exported, which):
    for path in exported.paths(which).values():
        result = _invoke("load", path)
        assert result.exit_code == 0, (path, result.output, result.exception)
        shown = " ".join(result.output.split())  # rich wraps at the test console's width
        assert "embedding=512-d" in shown and f"model_type={get_format_of(path)}" in shown


def test_cli_verify_takes_the_checkpoint_as_reference(exported, checkpoint_and_model, tmp_path):
    path, _ = checkpoint_and_model
    report = tmp_path / "verify.json"
    result = _invoke("verify", path, *exported.paths("image").values(), "--json", report)
    assert result.exit_code == 0, (result.output, result.exception)
    data = json.loads(report.read_text())
    assert data["passed"] and data["reference"] == f"pytorch {path}"
    assert sorted(r["format"] for r in data["results"]) == sorted(exported.paths("image"))


def test_verify_of_one_artifact_needs_the_checkpoint_its_spec_records(exported, checkpoint_and_model, tmp_path):
    from modelport.clip.verify import recorded_weights
    from modelport.errors import ModelportError
    from modelport.spec import Source, sha256_file

    text = exported.paths("text")["onnx"]  # exported from a model built in memory: no file recorded
    result = _invoke("verify", text)
    assert isinstance(result.exception, ModelportError) and "nothing to compare it with" in result.exception.message
    spec = get_format("onnx").read_spec(text)
    path = checkpoint_and_model[0]
    recorded = dataclasses.replace(spec, source=Source(kind="weights", file=str(path), sha256=sha256_file(path)))
    assert recorded_weights(recorded) == path
    changed = dataclasses.replace(spec, source=Source(kind="weights", file=str(path), sha256="0" * 64))
    assert recorded_weights(changed) is None  # a checkpoint that changed since the export is not the reference


def test_cli_verify_refuses_to_compare_an_image_with_a_text_encoder(exported):
    from modelport.errors import ModelportError

    result = _invoke("verify", exported.paths("image")["onnx"], exported.paths("text")["onnx"])
    assert isinstance(result.exception, ModelportError) and "different encoders" in result.exception.message


def test_bench_sources_are_recognised(exported, checkpoint_and_model, tmp_path):
    from modelport.clip.bench import resolve_source
    from modelport.errors import UnknownArchitectureError
    from modelport.families.clip import is_clip_source

    path, _ = checkpoint_and_model
    image = exported.paths("image")["onnx"]
    assert is_clip_source(NAME) and is_clip_source(str(image)) and is_clip_source(str(path))
    assert not is_clip_source("osnet_x0_25") and is_clip_source("weights.pt", arch=NAME)
    src = resolve_source(str(image), weights=path)  # name from the artifact's spec, siblings beside it
    assert (src.name, src.weights, src.folder, src.base) == (NAME, path, image.parent, f"{NAME}_random")
    assert resolve_source(str(path)).name == NAME  # the name is in the checkpoint's file name
    anonymous = tmp_path / "open_clip_model.safetensors"
    anonymous.write_bytes(b"")
    assert is_clip_source(str(anonymous))
    with pytest.raises(UnknownArchitectureError, match="--arch|which MobileCLIP"):
        resolve_source(str(anonymous))
    assert resolve_source(str(anonymous), arch="MobileCLIP2-S2").name == "MobileCLIP2-S2"


def test_cli_bench_times_both_encoders_in_every_runtime_with_parity(exported, checkpoint_and_model, tmp_path):
    record = tmp_path / "benchmark.json"
    path, _ = checkpoint_and_model
    result = _invoke("bench", exported.paths("image")["onnx"], "--weights", path, "--batch", "2", "--seconds", "0.3",
                     "--json", record)
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads(record.read_text())
    formats = sorted(exported.paths("image"))
    assert report["family"] == "clip" and report["model"]["name"] == NAME
    assert min(report["model"]["gflop_per_item"].values()) > 1  # S0: ~4.8 per image, ~5.8 per caption
    for which in ("image", "text"):
        rows = {r["runtime"]: r for r in report["rows"] if r["encoder"] == which and r["status"] == "ok"}
        assert sorted(rows) == sorted(["pytorch", *formats])
        for runtime, row in rows.items():
            assert row["batch"] == 2 and row["throughput"] > 0 and row["latency_ms"]["n"] >= 1
            assert row["parity"]["passed"] and row["parity"]["min_cosine"] > 0.9999
            if runtime != "pytorch":  # the exports beside the artifact were reused, not re-exported
                assert row["export_s"] is None and row["path"] == str(exported.paths(which)[runtime])
    assert report["semantic"]["passed"] and sorted(r["runtime"] for r in report["semantic"]["results"]) == formats
    assert "image rankings for 8 fixed queries identical" in " ".join(result.output.split())
    foreign = tmp_path / "other.json"  # another model's record is never replaced; this model's (above) is
    foreign.write_text(json.dumps({"model": {"name": "osnet_x0_25", "source": {"sha256": "0" * 64}}}))
    for target, code in ((foreign, 1), (record, 0)):
        before = target.read_text()
        result = _invoke("bench", exported.paths("image")["onnx"], "--weights", path, "--formats", "onnx",
                         "--batch", "1", "--seconds", "0.1", "--json", target)
        assert result.exit_code == code, (result.output, result.exception)
        assert (target.read_text() == before) == (code == 1)


def test_bench_exports_what_is_missing_verified(checkpoint_and_model, tmp_path):
    from modelport.clip.bench import run_clip_benchmark

    path, model = checkpoint_and_model
    report = run_clip_benchmark(NAME, weights=path, model=model, formats=["onnx"], batches=[1], seconds=0.1,
                                rounds=1, export_dir=tmp_path)
    onnx = {r["encoder"]: r for r in report["rows"] if r["runtime"] == "onnx"}
    assert set(onnx) == {"image", "text"}
    for which, row in onnx.items():
        assert row["status"] == "ok" and row["export_s"] > 0
        assert row["path"] == str(tmp_path / f"{NAME}_random_{which}.onnx")
    assert report["settings"]["export_dir"] == str(tmp_path) and report["model"]["untrained"]


def test_bench_refuses_precision_options_before_building():
    from modelport.errors import ModelportError

    result = _invoke("bench", NAME, "--allow-random", "--int8", "--baseline")
    assert isinstance(result.exception, ModelportError)
    assert "--int8, --baseline not supported" in result.exception.message


def test_python_api_exports_loads_verifies_and_benchmarks_a_clip_model(checkpoint_and_model, tmp_path, monkeypatch):
    import modelport

    monkeypatch.setenv("MODELPORT_CACHE", str(tmp_path / "cache"))
    path, _ = checkpoint_and_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        paths = modelport.export(NAME, "onnx", weights=path, out=tmp_path / "api", allow_random=True)
    image, text = sorted(paths, key=lambda p: not p.name.endswith("_image.onnx"))
    assert text.name.endswith("_text.onnx") and modelport.load(text).spec.task == "embed_text"
    report = modelport.verify([image])  # against open_clip's encoder, built from the checkpoint the artifact records
    assert report.passed and report.reference.startswith("pytorch") and report.results[0].outputs[0].min_cosine > 0.999
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        report = modelport.benchmark(NAME, weights=path, formats="onnx", batches=[1], seconds=0.1, rounds=1,
                                     allow_random=True)
    onnx = {r["encoder"]: r["status"] for r in report["rows"] if r["runtime"] == "onnx"}
    assert report["family"] == "clip" and onnx == {"image": "ok", "text": "ok"}
