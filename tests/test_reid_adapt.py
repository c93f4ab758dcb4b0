"""`reid adapt` (AdaBN) on a camera whose shift it can undo: camera C, dense fog, one affine map of intensity."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import save_plain

from modelport.reid.importer import import_mot
from modelport.reid.synth import write_demo_data


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    """The demo's model: a random OSNet with BatchNorm calibrated on clean synthetic crops ("camera A")."""
    from modelport.zoo.calibrate import calibrated_untrained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = tmp_path_factory.mktemp("adapt") / "osnet_x0_25_demo.pt"
        return save_plain(calibrated_untrained("osnet_x0_25", 0), path, 512)


def test_camera_c_maps_every_pixel_and_channel_through_one_affine_function_of_intensity():
    from modelport.reid.cameras import CAMERAS

    frame = np.random.default_rng(0).uniform(0, 255, (36, 64, 3)).astype(np.float32)
    seen = CAMERAS["C"].apply(frame, 7)
    slope, offset = np.polyfit(frame.ravel(), seen.ravel(), 1)
    assert np.allclose(seen, slope * frame + offset, atol=1e-3)  # no cast, no light field, no noise
    assert slope == pytest.approx(0.2, abs=1e-4) and offset == pytest.approx(0.8 * 128, abs=1e-2)
    assert np.array_equal(seen, CAMERAS["C"].apply(frame, 8))  # nor anything that changes over time


def _shifted(pixels: np.ndarray, pre, gain: float, lift: float) -> np.ndarray:
    """Preprocessed crops as if their 0..255 pixels had been ``gain * x + lift`` before preprocessing."""
    mean, std = np.asarray(pre.mean, np.float32), np.asarray(pre.std, np.float32)
    offset = (lift * pre.scale + (gain - 1) * mean) / std
    return (gain * pixels + offset[None, :, None, None]).astype(np.float32)


def test_adabn_undoes_an_intensity_shift_but_for_the_first_convolutions_zero_padding():
    import torch

    from modelport.preprocess import prepare
    from modelport.reid.tuning import embed_crops
    from modelport.samples import person_crops
    from modelport.zoo import build
    from modelport.zoo.calibrate import calibrate_batchnorm, calibrated_untrained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = calibrated_untrained("osnet_x0_25", 0)
        pre = build(arch="osnet_x0_25", allow_random=True).spec.preprocess
    clean = np.ascontiguousarray(prepare(person_crops(32, pre.height, pre.width, seed=100), pre)[:, :, ::2, ::2])
    foggy = _shifted(clean, pre, 0.2, 0.8 * 128)

    def adabn(module, pixels):
        return calibrate_batchnorm(copy.deepcopy(module), [torch.from_numpy(pixels)])

    def agreement(first, second) -> float:
        return float((first * second).sum(axis=1).mean())  # mean cosine of each crop's two embeddings

    unadapted = agreement(embed_crops(model, clean, 32), embed_crops(model, foggy, 32))
    zero_padded = agreement(embed_crops(adabn(model, clean), clean, 32), embed_crops(adabn(model, foggy), foggy, 32))
    model.conv1.conv.padding_mode = "replicate"  # the border then sees the same affine map as the inside
    replicated = agreement(embed_crops(adabn(model, clean), clean, 32), embed_crops(adabn(model, foggy), foggy, 32))
    assert unadapted < 0.6, unadapted  # clean daylight's statistics on fog: another embedding
    assert replicated > 0.999, replicated  # exact, up to float rounding
    assert unadapted + 0.3 < zero_padded < replicated, (unadapted, zero_padded, replicated)


def test_adapt_recovers_what_the_foggy_camera_costs_held_out_people_and_round_trips_through_export(untrained,
                                                                                                   tmp_path):
    from modelport import load
    from modelport.reid.tuning import eval_crops, held_out_scores, load_split
    from modelport.verify import verify
    from modelport.zoo import build

    dbs = {}
    for cam in ("A", "C"):
        data = write_demo_data(tmp_path / f"camera_{cam}", people=10, frames=300, seed=0, camera=cam)
        dbs[cam] = tmp_path / f"camera_{cam}.db"
        import_mot(dbs[cam], data.video, data.detections, ground_truth=data.ground_truth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = build(untrained)
        split = load_split(dbs["A"], class_name="person", camera=None, holdout=0.5, seed=0, by="people")
        on_a = held_out_scores(built.module, split, eval_crops(split, built.spec.preprocess, 32))
    out = tmp_path / "adapted_c.pt"
    run = subprocess.run([sys.executable, "-m", "modelport.cli", "reid", "adapt", "--db", str(dbs["C"]), "--model",
                          str(untrained), "--crops", "256", "--out", str(out), "--export", "onnx", "--json"],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    on_c, adapted = summary["before"], summary["after"]
    assert summary["held_out_by"] == "people" and on_a.queries == on_c["queries"] == adapted["queries"] > 0
    # fog costs the daylight-prepared model, and new statistics give most of it back (benchmarks/REID_FINETUNE.md)
    assert on_c["mAP"] < on_a.mAP - 0.07, (on_a, on_c)
    assert adapted["mAP"] > on_c["mAP"] + 0.09, (on_c, adapted)
    assert adapted["rank1"] > on_c["rank1"], (on_c, adapted)
    (export,) = summary["exports"]
    assert export["ok"] and export["verified"]
    report = verify([Path(export["path"])], reference=load(out, arch=summary["arch"]), count=4)
    assert report.passed
