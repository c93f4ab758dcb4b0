"""CUDA paths: verified export and loading on the GPU. Skipped where no CUDA device exists (CI)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import save_plain

import modelport
from modelport.discover import open_artifact
from modelport.export import export_all
from modelport.samples import person_crops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_torchscript_exported_and_run_on_cuda(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    with warnings.catch_warnings():  # the ONNX provider warning has its own test below
        warnings.simplefilter("ignore", RuntimeWarning)
        results = export_all(weights, "onnx,torchscript", device="cuda")
    assert all(r.ok for r in results), [r.error for r in results]
    runner = modelport.load(weights, format="torchscript", device="cuda")
    assert runner.device == "cuda" and runner.model_type == "torchscript"
    crops = person_crops(20, seed=5)
    cpu = open_artifact(weights).embed(crops)
    gpu = runner.embed(crops)
    # fp32 runners switch TF32 off, so the GPU agrees with the CPU to fp32 rounding.
    assert float((cpu * gpu).sum(1).min()) > 0.99999


def test_pytorch_runner_on_cuda_matches_cpu(tmp_path, osnet_model):
    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    gpu = open_artifact(weights, device="cuda")
    assert next(gpu.module.parameters()).is_cuda
    crops = person_crops(7, seed=6)
    sims = (gpu.embed(crops) * open_artifact(weights).embed(crops)).sum(1)
    assert sims.min() > 0.99999


def test_onnx_on_cuda_uses_the_cuda_provider_or_says_it_cannot(tmp_path, osnet_model):
    import onnxruntime as ort

    weights = save_plain(osnet_model, tmp_path / "osnet_x0_25_msmt17.pt", 512)
    assert export_all(weights, "onnx")[0].ok
    if "CUDAExecutionProvider" in ort.get_available_providers():
        runner = modelport.load(weights, device="cuda")
        assert runner.providers[0] == "CUDAExecutionProvider"
    else:
        with pytest.warns(RuntimeWarning, match="onnxruntime-gpu"):
            runner = modelport.load(weights, device="cuda")
        assert runner.providers == ["CPUExecutionProvider"]
    out = runner(np.zeros((3, 3, 256, 128), np.float32))["embeddings"]
    assert out.shape == (3, 512)
