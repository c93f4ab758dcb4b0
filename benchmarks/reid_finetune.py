"""Before/after scores of `reid adapt` and `reid finetune` on the synthetic scene through cameras A, B and C.

Every scene is synthetic (modelport/reid/synth.py, cameras.py). The starting model is the demo's: a random
OSNet x0.25 whose BatchNorm statistics are calibrated on clean synthetic crops (camera-A-like); no trained
weights. One run, one scene seed, each model labelled with its recipe:

- held-out people (``--holdout-by people``: every track of half the people is never trained on): the
  untrained model on camera A and on camera B; AdaBN on camera B; fine-tuned on camera B from the untrained
  model; fine-tuned on camera B from the AdaBN model;
- held-out tracks (``--holdout-by tracks``: people seen in other tracks, unlabelled): untrained and fine-tuned;
- camera B's every track clustered (extract + cluster --standardize --threshold auto) with the untrained and
  the fine-tuned (held-out tracks) model.

``--adabn 0,1,2``: only AdaBN, on cameras A, C (fog, an affine intensity shift) and a dark camera, per scene
seed. ``--finetune-c 0,1,2``: only fine-tuning on camera C, from the untrained model (normalisation layers only,
the default, and every weight) and from its AdaBN model, per scene seed. Writes one JSON line (git commit,
library versions, machine, load average) to --out and prints a table.

    flock /tmp/modelport-bench.lock python benchmarks/reid_finetune.py --out benchmarks/results/reid_finetune.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

ROWS = (  # (key, model recipe, camera, held out)
    ("untrained_A", "untrained (random, BatchNorm calibrated on clean crops)", "A", "people"),
    ("untrained_B", "untrained (random, BatchNorm calibrated on clean crops)", "B", "people"),
    ("adabn_B", "AdaBN on camera B (BatchNorm statistics re-estimated, nothing trained)", "B", "people"),
    ("finetuned_B_people", "fine-tuned on camera B's tracks, from untrained", "B", "people"),
    ("adabn_finetuned_B_people", "AdaBN on camera B, then fine-tuned on its tracks", "B", "people"),
    ("untrained_B_tracks", "untrained (random, BatchNorm calibrated on clean crops)", "B", "tracks"),
    ("finetuned_B_tracks", "fine-tuned on camera B's tracks, from untrained", "B", "tracks"),
)


def run(seed: int, people: int, frames: int, epochs: int, lr: float | None, crops: int, root: Path) -> dict:
    from modelport.reid.adapt import adapt
    from modelport.reid.extract import extract, load_model
    from modelport.reid.finetune import finetune
    from modelport.reid.identify import run_cluster
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data
    from modelport.zoo.calibrate import make_untrained_checkpoint

    weights = make_untrained_checkpoint(root)
    settings = {"epochs": epochs, "lr": lr, "crops": crops, "holdout": 0.5, "seed": 0}
    row: dict = {"scene_seed": seed, "people": people, "frames": frames, "finetune": settings, "adabn_crops": 512,
                 "seconds": {}}
    dbs = {}
    for cam in ("A", "B"):
        data = write_demo_data(root / f"camera_{cam}", people=people, frames=frames, seed=seed, camera=cam)
        dbs[cam] = root / f"camera_{cam}.db"
        import_mot(dbs[cam], data.video, data.detections, ground_truth=data.ground_truth)
        row[f"camera_{cam}"] = data.camera.description
        row[f"detections_{cam}"] = data.detection_count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = adapt(dbs["A"], weights, out=root / "a_adabn.pt", crops=512)  # its "before": untrained on A
        row["untrained_A"] = asdict(plain.before)
        start = time.perf_counter()
        adapted = adapt(dbs["B"], weights, out=root / "osnet_x0_25_adabn_B.pt", crops=512)
        row["seconds"]["adabn"] = round(time.perf_counter() - start, 1)
        row["untrained_B"], row["adabn_B"] = asdict(adapted.before), asdict(adapted.after)
        kw = {k: v for k, v in settings.items() if k != "holdout"}
        start = time.perf_counter()
        strict = finetune(dbs["B"], weights, out=root / "osnet_x0_25_people.pt", holdout_by="people", **kw)
        row["seconds"]["finetune_people"] = round(time.perf_counter() - start, 1)
        assert asdict(strict.before) == row["untrained_B"]  # same held-out people, same crops
        row["finetuned_B_people"] = asdict(strict.after)
        row["finetune_people_losses"] = [round(v, 4) for v in strict.losses]
        settings.update(lr=strict.lr, train=strict.train, steps=strict.steps)  # what the defaults resolved to
        both = finetune(dbs["B"], adapted.path, out=root / "osnet_x0_25_adabn_ft.pt", holdout_by="people", **kw)
        row["adabn_finetuned_B_people"] = asdict(both.after)
        tuned = finetune(dbs["B"], weights, out=root / "osnet_x0_25_finetuned.pt", holdout_by="tracks", **kw)
        row["untrained_B_tracks"], row["finetuned_B_tracks"] = asdict(tuned.before), asdict(tuned.after)
        row["trained_on"] = {
            "people": {"tracks": strict.tracks, "pairs": strict.pairs, "crops": strict.crops,
                       "held_out_people": strict.held_out_people, "held_out_tracks": strict.held_out_tracks},
            "tracks": {"tracks": tuned.tracks, "pairs": tuned.pairs, "crops": tuned.crops,
                       "held_out_people": tuned.held_out_people, "held_out_tracks": tuned.held_out_tracks}}
        for label, model in (("untrained", weights), ("finetuned", tuned.path)):
            extract(dbs["B"], load_model(model), batch=16)
            scores = run_cluster(dbs["B"], root / f"ids_{label}", model=str(model), threshold="auto",
                                 standardize=True, webp=False).scores
            row[f"cluster_B_{label}"] = scores.to_dict() if scores else None
    return row


ABLATION = {  # camera B's conditions one group at a time (plus the earlier camera B), on the same scene
    "earlier camera B: global warm cast, 50% brightness, 35% saturation, blur 1.2 px, 35% resolution": {
        "cast": (0.75, 1.0, 1.3), "saturation": 0.35, "brightness": 0.5, "blur": 1.2, "scale": 0.35},
    "light pools and shade only": {"lighting": 0.8},
    "flicker and white-balance drift only": {"flicker": 0.12, "drift": 0.2},
    "sensor noise and JPEG only": {"noise": 9.0, "jpeg": 25},
    "low saturation and contrast only": {"saturation": 0.45, "contrast": 0.6, "brightness": 0.75},
    "half resolution and blur only": {"scale": 0.5, "blur": 0.8},
}


def scene_db(root: Path, name: str, people: int, frames: int, seed: int, camera) -> Path:
    """The scene rendered through ``camera`` and imported into a fresh ``root/{name}.db`` (replacing both)."""
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data

    data = write_demo_data(root / name, people=people, frames=frames, seed=seed, camera=camera, force=True)
    db = root / f"{name}.db"
    db.unlink(missing_ok=True)
    import_mot(db, data.video, data.detections, ground_truth=data.ground_truth)
    return db


def ablation(seed: int, people: int, frames: int, root: Path) -> list[dict]:
    """The untrained model's held-out-people scores with each group of camera B's conditions alone."""
    from modelport.reid.cameras import CAMERAS, CameraConditions
    from modelport.reid.tuning import eval_crops, held_out_scores, load_split
    from modelport.zoo import build
    from modelport.zoo.calibrate import make_untrained_checkpoint

    built = build(make_untrained_checkpoint(root))
    rows = []
    for name, settings in ABLATION.items():
        conditions = CameraConditions("ablation", seed=CAMERAS["B"].seed, **settings)
        db = scene_db(root, "ablation", people, frames, seed, conditions)
        split = load_split(db, class_name="person", camera=None, holdout=0.5, seed=0, by="people")
        scores = held_out_scores(built.module, split, eval_crops(split, built.spec.preprocess, 32))
        rows.append({"conditions": name, **asdict(scores)})
    return rows


ADABN_CAMERAS = {  # camera -> what it shows; "dark" is an affine shift AdaBN is not expected to undo here
    "A": "A",
    "C": "C",
    "dark: 15% exposure (an affine map with a large offset in the model's normalised units)": {"brightness": 0.15},
}


def adabn_seeds(seeds: list[int], people: int, frames: int, root: Path) -> list[dict]:
    """Per scene seed and camera: the untrained model's held-out-people scores, then AdaBN's (512 crops of the
    other people's tracks). AdaBN on camera A is the reference: what new statistics give without a shift."""
    from modelport.reid.adapt import adapt
    from modelport.reid.cameras import CameraConditions
    from modelport.zoo.calibrate import make_untrained_checkpoint

    weights = make_untrained_checkpoint(root)
    rows = []
    for seed in seeds:
        for label, cam in ADABN_CAMERAS.items():
            conditions = cam if isinstance(cam, str) else CameraConditions("dark", **cam)
            db = scene_db(root, "scene", people, frames, seed, conditions)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = adapt(db, weights, out=root / "osnet_x0_25_adabn.pt", crops=512, force=True)
            rows.append({"scene_seed": seed, "camera": label, "untrained": asdict(result.before),
                         "adabn": asdict(result.after), "adabn_crops": result.crops,
                         "seconds": round(time.perf_counter() - start, 1)})
    return rows


def environment() -> dict:
    import numpy
    import onnxruntime
    import sklearn
    import torch

    from modelport.bench_record import Recipe, provenance
    from modelport.machine import physical_cores

    recipe = Recipe("bn_calibrated", "random init, seed 0 (make_untrained_checkpoint)",
                    "osnet_x0_25, BatchNorm calibrated on 64 synthetic person crops; the rows score it and models "
                    "made from it (AdaBN, fine-tuned on synthetic scenes), each row labelled")
    return {**provenance(recipe),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpu": platform.processor() or platform.machine(), "physical_cores": physical_cores(),
                        "python": platform.python_version()},
            "versions": {"torch": torch.__version__, "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
                         "scikit-learn": sklearn.__version__}}


def finetune_seeds(seeds: list[int], people: int, frames: int, epochs: int, lr: float | None, crops: int,
                   root: Path) -> list[dict]:
    """Per scene seed, on camera C (fog, which AdaBN recovers): fine-tuning on the camera's tracks from the untrained
    model (normalisation layers only, the default, and every weight) and from its AdaBN model (normalisation
    layers), held-out people scored before and after (same split, same crops)."""
    from modelport.reid.adapt import adapt
    from modelport.reid.finetune import finetune
    from modelport.zoo.calibrate import make_untrained_checkpoint

    weights = make_untrained_checkpoint(root)
    kw = {"epochs": epochs, "lr": lr, "crops": crops, "seed": 0, "holdout_by": "people", "force": True}
    rows = []
    for seed in seeds:
        db = scene_db(root, "scene", people, frames, seed, "C")
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adapted = adapt(db, weights, out=root / f"osnet_x0_25_adabn_C_{seed}.pt", crops=512, force=True)
            norm = finetune(db, weights, out=root / f"osnet_x0_25_ft_C_{seed}.pt", train="norm", **kw)
            every = finetune(db, weights, out=root / f"osnet_x0_25_ft_all_C_{seed}.pt", train="all", **kw)
            both = finetune(db, adapted.path, out=root / f"osnet_x0_25_adabn_ft_C_{seed}.pt", train="norm", **kw)
        rows.append({"scene_seed": seed, "camera": "C", "untrained": asdict(norm.before),
                     "finetuned": asdict(norm.after), "finetuned_all": asdict(every.after),
                     "adabn": asdict(adapted.after), "adabn_then_finetuned": asdict(both.after),
                     "adabn_before_finetune": asdict(both.before),
                     "trained_on": {"tracks": norm.tracks, "pairs": norm.pairs, "crops": norm.crops},
                     "finetune": {"epochs": epochs, "steps": norm.steps, "crops": crops,
                                  "lr": {"norm": norm.lr, "all": every.lr}},
                     "losses": {"norm": [round(v, 4) for v in norm.losses],
                                "all": [round(v, 4) for v in every.losses]},
                     "adabn_crops": 512, "seconds": round(time.perf_counter() - start, 1)})
    return rows


def finetune_c_table(record: dict) -> str:
    """Held-out people on camera C, per scene seed: rank-1 / mAP / ARI of each recipe."""
    cols = ("untrained", "finetuned", "finetuned_all", "adabn", "adabn_then_finetuned")
    lines = ["| scene seed | untrained | fine-tuned, norm layers | fine-tuned, every weight | AdaBN | "
             "AdaBN, then fine-tuned (norm layers) |", "|---|---|---|---|---|---|"]
    for r in record["finetune_camera_c"]:
        cells = [f"{r[c]['rank1']:.3f} / {r[c]['mAP']:.3f} / {r[c]['ari']:.3f}" if c in r else "-" for c in cols]
        lines.append(f"| {r['scene_seed']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the scene's seed")
    parser.add_argument("--people", type=int, default=10)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=None, help="default: finetune's for what is trained")
    parser.add_argument("--crops", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reid_finetune.jsonl"))
    parser.add_argument("--ablation", action="store_true",
                        help="only the untrained model's scores under each group of camera B's conditions alone")
    parser.add_argument("--adabn", type=str, default=None, metavar="SEEDS",
                        help="only AdaBN on cameras A, C and a dark camera, for these comma-separated scene seeds")
    parser.add_argument("--finetune-c", type=str, default=None, metavar="SEEDS",
                        help="only fine-tuning on camera C (from untrained and from AdaBN), for these scene seeds")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = environment()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        if args.finetune_c:
            record.update({"people": args.people, "frames": args.frames, "finetune_camera_c": finetune_seeds(
                [int(x) for x in args.finetune_c.split(",")], args.people, args.frames, args.epochs, args.lr,
                args.crops, Path(tmp))})
        elif args.adabn:
            record.update({"people": args.people, "frames": args.frames, "adabn_cameras": adabn_seeds(
                [int(x) for x in args.adabn.split(",")], args.people, args.frames, Path(tmp))})
        elif args.ablation:
            record.update({"scene_seed": args.seed, "people": args.people, "frames": args.frames,
                           "ablation": ablation(args.seed, args.people, args.frames, Path(tmp))})
        else:
            record.update(run(args.seed, args.people, args.frames, args.epochs, args.lr, args.crops, Path(tmp)))
    record["machine"]["load_average"] = {"before": [round(x, 2) for x in load_before],
                                         "after": [round(x, 2) for x in os.getloadavg()]}
    with args.out.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    if args.finetune_c:
        print(finetune_c_table(record))
        return
    if args.adabn:
        print("| scene seed | camera | untrained rank-1 / mAP / ARI | AdaBN rank-1 / mAP / ARI |")
        print("|---|---|---|---|")
        for r in record["adabn_cameras"]:
            u, a = r["untrained"], r["adabn"]
            print(f"| {r['scene_seed']} | {r['camera']} | {u['rank1']:.3f} / {u['mAP']:.3f} / {u['ari']:.3f} | "
                  f"{a['rank1']:.3f} / {a['mAP']:.3f} / {a['ari']:.3f} |")
        return
    if args.ablation:
        print("| camera conditions (untrained model, held-out people) | rank-1 | mAP | ARI |")
        print("|---|---:|---:|---:|")
        for r in record["ablation"]:
            print(f"| {r['conditions']} | {r['rank1']:.3f} | {r['mAP']:.3f} | {r['ari']:.3f} |")
        return
    print("| model (recipe) | camera | held out | rank-1 | mAP | ARI |")
    print("|---|---|---|---:|---:|---:|")
    for key, recipe, cam, held in ROWS:
        s = record[key]
        print(f"| {recipe} | {cam} | {held} | {s['rank1']:.3f} | {s['mAP']:.3f} | {s['ari']:.3f} |")
    for key in ("cluster_B_untrained", "cluster_B_finetuned"):
        s = record[key]
        if s:
            print(f"| {key}: every camera-B track | B | - | {s['rank1']:.3f} (track) | - | {s['ari']:.3f} |")


if __name__ == "__main__":
    main()
