"""ReID fine-tuning on the database's own tracks, the synthetic cameras, and what adapt and finetune share."""

from __future__ import annotations

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


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelport.cli", "reid", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    """The demo's model: a random OSNet with BatchNorm calibrated on clean synthetic crops ("camera A")."""
    from modelport.zoo.calibrate import calibrated_untrained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = tmp_path_factory.mktemp("ft") / "osnet_x0_25_demo.pt"  # the name tells the architecture
        return save_plain(calibrated_untrained("osnet_x0_25", 0), path, 512)


# A scene seed the fine-tuning recipe was never chosen on: seeds 0-2 chose it, 3-5 were first run in the record
# (benchmarks/REID_FINETUNE.md). Seed 4 is the quickest of those (362 crops, 60 steps).
FRESH_SEED = 4


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict:
    """One scene (same people, walks and detections) through cameras A and B (10 people, 300 frames)."""
    root = tmp_path_factory.mktemp("cameras")
    return {cam: write_demo_data(root / f"camera_{cam}", people=10, frames=300, seed=0, camera=cam)
            for cam in ("A", "B")}


@pytest.fixture(scope="module")
def fresh_c(tmp_path_factory) -> dict:
    """The fresh scene (10 people, 300 frames) through foggy camera C."""
    root = tmp_path_factory.mktemp("fresh")
    return {"C": write_demo_data(root / "camera_C", people=10, frames=300, seed=FRESH_SEED, camera="C")}


def camera_db(scenes: dict, cam: str, folder: Path) -> Path:
    """The scene as camera ``cam`` saw it, imported into a fresh ``folder/camera_<cam>.db``."""
    db, data = folder / f"camera_{cam.lower()}.db", scenes[cam]
    import_mot(db, data.video, data.detections, ground_truth=data.ground_truth)
    return db


@pytest.fixture
def db_b(scenes, tmp_path) -> Path:
    return camera_db(scenes, "B", tmp_path)


@pytest.fixture
def db_c(fresh_c, tmp_path) -> Path:
    return camera_db(fresh_c, "C", tmp_path)


def _frame(video: Path, index: int) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame.astype(np.float32)


def test_camera_b_sees_the_same_scene_darker_greyer_and_unevenly_lit(scenes):
    a, b = scenes["A"], scenes["B"]
    assert a.detections.read_text() == b.detections.read_text()  # same people, walks and detections
    assert a.ground_truth.read_text() == b.ground_truth.read_text()
    fa, fb = _frame(a.video, 120), _frame(b.video, 120)
    assert fb.mean() < 0.85 * fa.mean()
    balanced = [f / f.reshape(-1, 3).mean(axis=0) for f in (fa, fb)]  # the cast removed, as white balance would
    saturation = [np.mean(f.max(axis=2) - f.min(axis=2)) for f in balanced]
    assert saturation[1] < 0.6 * saturation[0]


def test_camera_b_lights_the_street_unevenly_and_its_light_changes_over_time():
    from modelport.reid.cameras import CAMERAS

    grey = np.full((180, 320, 3), 128, np.float32)  # an evenly grey street
    for name, uneven in (("A", False), ("B", True)):
        cam = CAMERAS[name]
        seen = cam.apply(grey, 10)
        columns = seen[90:].mean(axis=0)  # (W, 3) the lower half, where people walk, column by column
        spread = columns.mean(axis=1).std() / columns.mean()  # brightness along the street
        hue = np.std(columns[:, 2] / columns[:, 0])  # red over blue along the street: the lights' colours differ
        later = cam.apply(grey, 60).reshape(-1, 3).mean(axis=0) / seen.reshape(-1, 3).mean(axis=0)
        change = np.abs(later / later.mean() - 1).max()  # flicker and white-balance drift between two frames
        if uneven:  # a person walking across changes brightness and colour; so does everyone, over time
            assert spread > 0.1 and hue > 0.05 and change > 0.03, (spread, hue, change)
        else:
            assert spread < 1e-6 and hue < 1e-6 and change < 1e-6, (spread, hue, change)


def test_a_camera_renders_each_frame_the_same_way_every_time():
    from modelport.reid.cameras import CAMERAS

    frame = np.random.default_rng(0).uniform(0, 255, (36, 64, 3)).astype(np.float32)
    b = CAMERAS["B"]
    assert np.array_equal(b.apply(frame, 5), b.apply(frame, 5))
    assert not np.array_equal(b.apply(frame, 5), b.apply(frame, 6))  # noise, flicker and drift move on
    assert b.apply(frame, 5).shape == frame.shape and b.apply(frame, 5).dtype == np.float32


def test_unknown_or_impossible_camera_is_a_clear_error(tmp_path):
    from modelport.reid.cameras import CameraConditions, CameraError

    with pytest.raises(CameraError, match="unknown camera 'D'") as info:
        write_demo_data(tmp_path, people=2, frames=30, camera="D")
    assert "A, B, C" in info.value.hint
    with pytest.raises(CameraError, match="scale"):
        CameraConditions("bad", scale=0.0)


def test_camera_b_hurts_the_untrained_model_on_held_out_people_and_adabn_is_scored_on_the_same_crops(
        scenes, db_b, untrained, tmp_path):
    from modelport.reid.adapt import adapt
    from modelport.reid.tuning import embed_crops, eval_crops, held_out_scores, load_split
    from modelport.zoo import build

    db_a = camera_db(scenes, "A", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = build(untrained)
        split = load_split(db_a, class_name="person", camera=None, holdout=0.5, seed=0, by="people")
        on_a = held_out_scores(built.module, split, eval_crops(split, built.spec.preprocess, 32))
        result = adapt(db_b, untrained, out=tmp_path / "adapted_b.pt", crops=64)
        split_b = load_split(db_b, class_name="person", camera=None, holdout=0.5, seed=0, by="people")
        pixels, _ = eval_crops(split_b, built.spec.preprocess, 32)
        source = embed_crops(built.module, pixels, 32)
        moved = embed_crops(build(result.path, arch=result.arch).module, pixels, 32)
    on_b, adapted = result.before, result.after
    assert on_a.queries == on_b.queries == adapted.queries == len(pixels) > 0  # the same people's crops, both cameras
    # the shift hurts: the same people, walks and crops score far lower through camera B (measured 0.78 -> 0.36
    # mAP). AdaBN is not asserted to help: on this scene it does not, reliably (benchmarks/REID_FINETUNE.md)
    assert on_b.mAP < on_a.mAP - 0.2 and on_b.rank1 < on_a.rank1 - 0.2, (on_a, on_b)
    # New statistics give the same held-out crops other embeddings and so other scores. Measured: mean cosine of
    # each crop's two embeddings 0.31, rank-1 0.514 -> 0.431 (9 of 109 queries); statistics barely changed
    # (running variances x 1.001) give 0.9999 and one query, which `adapted != on_b` let pass.
    shift = float((source * moved).sum(axis=1).mean())
    assert shift < 0.8, shift
    assert abs(adapted.rank1 - on_b.rank1) * on_b.queries >= 3, (on_b, adapted)


def test_triplet_loss_pushes_apart_only_tracks_seen_together():
    import torch

    from modelport.reid.finetune import triplet_loss

    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.05], [1.0, 0.05]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    negative = torch.zeros((3, 3), dtype=torch.bool)
    negative[0, 1] = negative[1, 0] = True  # tracks 0 and 1 met; track 2 (same look as 0) never met 0
    assert float(triplet_loss(features, labels, negative, 0.3)) == 0.0  # 0 and 2 alike: no pressure
    negative[0, 2] = negative[2, 0] = True  # now 0 and 2 met: they are two people, so 0 and 2 must part
    assert float(triplet_loss(features, labels, negative, 0.3)) > 0.15  # 4 of 6 anchors at ~0.25
    assert float(triplet_loss(features, labels, torch.zeros((3, 3), dtype=torch.bool), 0.3)) == 0.0


@pytest.mark.slow
def test_finetune_on_the_foggy_camera_raises_held_out_peoples_scores_and_round_trips_through_export(
        db_c, untrained, tmp_path):
    from modelport import load
    from modelport.reid.tuning import load_split
    from modelport.spec import sha256_file
    from modelport.verify import verify
    from modelport.zoo.checkpoints import read_checkpoint

    out = tmp_path / "finetuned_c.pt"  # a name that does not tell the architecture: export is told it
    result = cli("finetune", "--db", str(db_c), "--model", str(untrained), "--out", str(out), "--export", "onnx",
                 "--json")  # the defaults: 5 epochs, norm layers only, held out by people
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    before, after = summary["before"], summary["after"]
    assert summary["held_out_by"] == "people" and summary["held_out_people"] > 0
    assert summary["train"] == "norm" and summary["lr"] == 1e-3 and summary["epochs"] == 5
    assert before["queries"] == after["queries"] > 0
    # People never trained on are found better after training on the others' tracks through the same camera.
    # Recorded (benchmarks/REID_FINETUNE.md, results/reid_finetune.jsonl line 6): on this fresh scene mAP
    # 0.417 -> 0.726 (+0.310), rank-1 0.876 -> 0.946; over all six seeds +0.091..+0.310, the fresh ones
    # +0.195..+0.310. This test measured 0.417 -> 0.617 (+0.200), rank-1 0.876 -> 0.953, the same on two runs of
    # a 2-core AVX-512 EPYC: the same torch rounds differently on another CPU, and 60 steps of training grow the
    # difference. The bound, +0.1, is half the smaller of the two measurements of this scene and under every fresh
    # seed's recorded gain; a run with 5 steps instead of 60 gained +0.044 here and fails it.
    assert after["mAP"] > before["mAP"] + 0.1, summary
    assert after["rank1"] > before["rank1"], summary
    assert summary["losses"][-1] < 0.5 * summary["losses"][0]  # it learns to tell co-occurring tracks apart
    assert summary["co_occurring_pairs"] > 0 and summary["resumed_from"] == 0
    # ground truth only scores: no track of a held-out person is trained on
    split = load_split(db_c, class_name="person", camera=None, holdout=0.5, seed=0, by="people")
    assert len(split.eval_tracks) == summary["held_out_tracks"]
    assert not set(split.track_truth[split.learn_tracks]) & set(split.held_people)
    state, extras = read_checkpoint(out)  # torchreid's layout, read back weights-only
    record = extras["modelport_finetune"]
    assert extras["epoch"] == 5 and record["source_sha256"] == sha256_file(untrained)
    assert record["database"] == str(db_c.resolve()) and "triplet" in record["method"]
    assert "normalisation layers" in record["method"] and record["settings"]["train"] == "norm"
    assert record["tracks"] == summary["tracks"] and record["after"] == after and record["before"] == before
    assert not out.with_name(f"{out.stem}.resume.pt").exists()  # the resumable checkpoint is gone when done
    source, _ = read_checkpoint(untrained)  # only normalisation layers moved
    moved = {k for k in source if not np.allclose(source[k].float().numpy(), state[k].float().numpy())}
    assert moved and all(".bn" in k or k.startswith(("fc.1", "bn")) or "norm" in k for k in moved), moved
    (export,) = summary["exports"]
    assert export["ok"] and export["verified"] and Path(export["path"]).is_file()
    reference = load(out, arch=summary["arch"])  # the file name does not tell it: the summary does
    report = verify([Path(export["path"])], reference=reference, count=4)
    assert report.passed


def test_finetune_all_weights_trains_the_convolutions_too(db_b, untrained, tmp_path):
    from modelport.reid.finetune import TuningError, finetune
    from modelport.zoo.checkpoints import read_checkpoint

    settings = dict(epochs=1, crops=48, tracks_per_batch=4, crops_per_track=2, holdout=0.0)
    result = finetune(db_b, untrained, out=tmp_path / "all.pt", train="all", **settings)
    assert result.train == "all" and result.lr == 3e-4
    assert result.held_out_by == "people"  # the default, as for adapt: whole people, none of their tracks trained on
    source, _ = read_checkpoint(untrained)
    state, extras = read_checkpoint(result.path)
    assert not np.allclose(source["conv1.conv.weight"].numpy(), state["conv1.conv.weight"].float().numpy())
    assert "every weight" in extras["modelport_finetune"]["method"]
    with pytest.raises(TuningError, match="--train must be one of norm, all"):
        finetune(db_b, untrained, out=tmp_path / "x.pt", train="head", **settings)


def test_an_interrupted_finetune_resumes_where_it_stopped_and_matches_an_uninterrupted_run(db_b, untrained, tmp_path):
    import torch

    from modelport.reid.finetune import TuningError, finetune, resume_path

    settings = dict(epochs=2, crops=48, tracks_per_batch=4, crops_per_track=2, holdout=0.0)
    whole = finetune(db_b, untrained, out=tmp_path / "whole.pt", **settings)

    class Stop(Exception):
        pass

    def stop_in_epoch_two(epoch: int, step: int, steps: int, loss: float) -> None:
        if epoch == 1:
            raise Stop

    cut = tmp_path / "cut.pt"
    with pytest.raises(Stop):
        finetune(db_b, untrained, out=cut, progress=stop_in_epoch_two, **settings)
    assert not cut.exists()
    saved = torch.load(resume_path(cut), weights_only=True)
    assert saved["epoch"] == 1 and "optimizer" in saved
    with pytest.raises(TuningError, match="other settings .*lr"):
        finetune(db_b, untrained, out=cut, **{**settings, "lr": 5e-4})
    resumed = finetune(db_b, untrained, out=cut, **settings)
    assert resumed.resumed_from == 1 and resumed.losses == pytest.approx(whole.losses)
    a, b = torch.load(whole.path, weights_only=True), torch.load(cut, weights_only=True)
    assert all(torch.allclose(a["state_dict"][k].float(), b["state_dict"][k].float(), atol=1e-6)
               for k in a["state_dict"])
    assert not resume_path(cut).exists()
