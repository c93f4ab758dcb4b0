"""bench's memory bound: the activation estimate, the batches it lets run (dropped or refused, naming --batch and
--size), runtimes handing memory back between turns, and the peak RSS in the record. Budgets here are fake and
small: no test allocates more than a few MB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import modelport.bench as bench
import modelport.bench_memory as memory
from modelport.bench_memory import activation_bytes, plan_memory
from modelport.errors import ConfigError
from modelport.spec import ModelSpec, Preprocess, Source, TensorSpec

MB = 1 << 20
TESTS = Path(__file__).parent


class TwoConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Conv2d(3, 8, 3, padding=1)
        self.decode = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode(torch.relu(self.encode(x))))


def _spec() -> ModelSpec:
    return ModelSpec(name="two_convs", task="tensors", inputs=(TensorSpec("x", "float32", ("batch", 3, "h", "w")),),
                     outputs=(TensorSpec("y", "float32", ("batch", 3, "h", "w")),),
                     preprocess=Preprocess(0, 0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), scale=1.0), source=Source("random"))


def test_activation_estimate_counts_the_live_tensors_of_a_forward():
    x = np.zeros((1, 3, 64, 96), np.float32)
    got = activation_bytes(TwoConvs().eval(), {"x": x}, _spec())
    pixels = 64 * 96 * 4
    # input (3 planes) + conv out (8) + relu out (8) alive together; later tensors are smaller
    assert got == pytest.approx((3 + 8 + 8) * pixels, rel=0.1)


def test_a_large_dynamic_input_is_probed_on_a_crop_and_scaled(monkeypatch):
    x = np.zeros((1, 3, 256, 384), np.float32)
    module = TwoConvs().eval()
    monkeypatch.setattr(memory, "PROBE_PIXELS", 1 << 30)
    full = activation_bytes(module, {"x": x}, _spec())
    monkeypatch.setattr(memory, "PROBE_PIXELS", 64 * 64)
    calls = []
    module.register_forward_pre_hook(lambda _m, args: calls.append(tuple(args[0].shape)))
    scaled = activation_bytes(module, {"x": x}, _spec())
    assert calls[-1][2] * calls[-1][3] <= 64 * 64 * 2  # the probe ran small...
    assert scaled == pytest.approx(full, rel=0.1)  # ...and the estimate is the full size's


def test_default_batches_that_do_not_fit_are_dropped():
    plan = plan_memory(100 * MB, (1, 4), runtimes=3, explicit=False, budget=600 * MB, base=0)
    assert plan.batches == (1,) and plan.dropped == (4,)
    assert plan.estimate(1) <= 600 * MB < plan.estimate(4)
    assert plan.record()["dropped_batches"] == [4] and plan.record()["budget_mb"] == 600


def test_a_chosen_batch_that_does_not_fit_is_refused_naming_batch_and_size():
    with pytest.raises(ConfigError) as exc:
        plan_memory(100 * MB, (1, 4), runtimes=3, explicit=True, budget=600 * MB, base=0, shape="x 3x720x1280")
    assert "batch 4 at x 3x720x1280" in exc.value.message and "GiB" in exc.value.message
    assert "--batch" in exc.value.hint and "--size" in exc.value.hint


def test_when_no_default_batch_fits_the_benchmark_is_refused():
    with pytest.raises(ConfigError, match="batch 1"):
        plan_memory(100 * MB, (1, 4), runtimes=3, explicit=False, budget=100 * MB, base=0)


def test_large_working_sets_are_released_between_turns_and_then_fit(monkeypatch):
    monkeypatch.setattr(memory, "RELEASE_ABOVE", 400 * MB)
    plan = plan_memory(100 * MB, (1, 4), runtimes=3, explicit=False, budget=600 * MB, base=0)
    # at batch 4 three runtimes would hold 1.5 GB together, one at a time 500 MB
    assert plan.release == (4,) and plan.batches == (1, 4) and plan.estimate(4) == 500 * MB


class _Fake:
    def __init__(self) -> None:
        self.calls, self.released = 0, 0

    def __call__(self, batch):
        self.calls += 1
        return {"y": batch}

    def release_memory(self) -> None:
        self.released += 1


def test_a_released_runtime_warms_up_untimed_before_its_next_turn():
    cands = [bench.Candidate(name, name) for name in ("a", "b")]
    for c in cands:
        c.runner = _Fake()
    samples = bench.time_interleaved(cands, np.zeros((1, 3)), seconds=0.0, rounds=3, release=True)
    for c in cands:
        assert len(samples[c.id]) == 3 and c.runner.released == 1 + 3  # after the warm-up and after each turn
        assert c.runner.calls == 2 + 3 * 2  # two warm-up calls, then one untimed and one timed call per turn


def test_onnx_runtime_hands_its_arena_back_for_a_two_input_model(tmp_path, monkeypatch):
    from modelport.formats.onnx import load, session_options

    assert session_options().enable_mem_pattern is False  # a pattern per shape, beside the arena: twice the memory
    monkeypatch.syspath_prepend(str(TESTS))
    from modelport.families.factory import build_factory
    from modelport.families.factory_config import parse_config
    from modelport.formats import ExportOptions, get_format

    config = parse_config({"factory": "factory_pkg.models:build", "args": {"channels": 4, "embed_dim": 8},
                           "inputs": [{"name": "target", "shape": [1, 3, 32, 48]},
                                      {"name": "source", "shape": [1, 8]}],
                           "outputs": ["swapped"], "dynamic_axes": {"target": {0: "batch", 2: "h", 3: "w"},
                                                                    "source": {0: "batch"},
                                                                    "swapped": {0: "batch", 2: "h", 3: "w"}}}, "t")
    built = build_factory(config, allow_random=True)
    path = tmp_path / "swap.onnx"
    get_format("onnx").export(built.module, built.spec, path, ExportOptions())
    runner = load(path)
    feeds = {"target": np.random.rand(2, 3, 32, 48).astype(np.float32), "source": np.ones((2, 8), np.float32)}
    before, session = runner(feeds)["swapped"], runner.session
    runner.release_memory()  # the old code's shrink run fed only the first input and raised
    assert runner.session is not session  # a fresh session: the old arena is gone with the old one
    np.testing.assert_allclose(runner(feeds)["swapped"], before, rtol=1e-6, atol=1e-6)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("MODELPORT_CACHE", str(tmp_path / "cache"))
    from factory_pkg.models import build

    torch.save(build(channels=4, embed_dim=8).state_dict(), tmp_path / "best.pth")
    (tmp_path / "export.yaml").write_text(
        "factory: factory_pkg.models:build\nargs: {channels: 4, embed_dim: 8}\nweights: best.pth\n"
        "inputs:\n  - {name: target, shape: [1, 3, 32, 48]}\n  - {name: source, shape: [1, 8]}\n"
        "outputs: [swapped]\ndynamic_axes:\n  target: {0: batch, 2: h, 3: w}\n  source: {0: batch}\n"
        "  swapped: {0: batch, 2: h, 3: w}\n")
    return tmp_path


def _factory_bench(project, **kw):
    from modelport.families import BenchRequest, get_family

    request = BenchRequest(config=project / "export.yaml", formats=("onnx",), seconds=0.1, rounds=1, size=(48, 32),
                           **kw)
    return get_family("factory").benchmark(None, request)


def test_bench_drops_a_default_batch_over_budget_and_records_peak_rss(project, monkeypatch):
    monkeypatch.setattr(bench, "activation_bytes", lambda *a: 100 * MB)  # as if each row took 100 MB
    monkeypatch.setattr(memory, "resident_bytes", lambda: 0)
    real_plan = bench.plan_memory
    monkeypatch.setattr(bench, "plan_memory", lambda *a, **kw: real_plan(*a, **{**kw, "budget": 600 * MB}))
    report = _factory_bench(project)
    assert report["settings"]["batches"] == [1] and report["memory"]["dropped_batches"] == [4]
    assert {r["batch"] for r in report["rows"]} == {1}
    assert report["settings"]["parity_rows"] == 1  # never more rows than the largest timed batch
    assert 0 < report["memory"]["peak_rss_mb"] < 64 * 1024 and report["memory"]["estimate_mb"]["1"] == 250


def test_bench_refuses_a_chosen_batch_over_budget_before_exporting(project, monkeypatch):
    monkeypatch.setattr(bench, "activation_bytes", lambda *a: 100 * MB)
    monkeypatch.setattr(memory, "resident_bytes", lambda: 0)
    real_plan = bench.plan_memory
    monkeypatch.setattr(bench, "plan_memory", lambda *a, **kw: real_plan(*a, **{**kw, "budget": 600 * MB}))
    with pytest.raises(ConfigError, match="batch 4") as exc:
        _factory_bench(project, batches=(1, 4))
    assert "--batch" in exc.value.hint
    assert not list((project / "cache").rglob("*.onnx"))  # refused before anything was exported
