"""Before/after scores of `reid adapt` and `reid finetune` on the synthetic scene through cameras A and B.

The model is the demo's (random OSNet x0.25, BatchNorm calibrated on clean synthetic crops). Every scene is
synthetic. For each scene seed: held-out people's scores (crop-level cross-track rank-1 and mAP, track ARI)
for the untrained model on camera A and B and after AdaBN (held-out people), and before/after fine-tuning on
camera B with held-out people and with held-out tracks (`--holdout-by`); then camera B's
every track clustered (extract + cluster --standardize --threshold auto) with the untrained and the fine-tuned
model. Writes JSON lines to --out and prints a Markdown table.

    python benchmarks/reid_finetune.py --seeds 0,1 --out benchmarks/results/reid_finetune.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path


def run(seed: int, people: int, frames: int, epochs: int, root: Path) -> dict:
    from modelport.reid.adapt import adapt
    from modelport.reid.extract import extract, load_model
    from modelport.reid.finetune import finetune
    from modelport.reid.identify import run_cluster
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data
    from modelport.zoo.calibrate import make_untrained_checkpoint

    weights = make_untrained_checkpoint(root)
    row: dict = {"seed": seed, "people": people, "frames": frames, "epochs": epochs}
    dbs = {}
    for cam in ("A", "B"):
        data = write_demo_data(root / f"camera_{cam}", people=people, frames=frames, seed=seed, camera=cam)
        dbs[cam] = root / f"camera_{cam}.db"
        import_mot(dbs[cam], data.video, data.detections, ground_truth=data.ground_truth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the untrained model's held-out scores on camera A are that adaptation's "before"
        plain = adapt(dbs["A"], weights, out=root / "a_adabn.pt", crops=512)
        row["untrained_A"] = asdict(plain.before) if plain.before else None
        adapted = adapt(dbs["B"], weights, out=root / "b_adabn.pt", crops=512)
        row["untrained_B"] = asdict(adapted.before) if adapted.before else None
        row["adabn_B"] = asdict(adapted.after) if adapted.after else None
        strict = finetune(dbs["B"], weights, out=root / "osnet_x0_25_people.pt", epochs=epochs, holdout_by="people")
        row["untrained_B_people"] = asdict(strict.before) if strict.before else None
        row["finetuned_B_people"] = asdict(strict.after) if strict.after else None
        start = time.perf_counter()
        tuned = finetune(dbs["B"], weights, out=root / "osnet_x0_25_finetuned.pt", epochs=epochs)
        row["finetune_seconds"] = round(time.perf_counter() - start, 1)
        row["untrained_B_tracks"] = asdict(tuned.before) if tuned.before else None
        row["finetuned_B_tracks"] = asdict(tuned.after) if tuned.after else None
        row["finetune_losses"] = [round(v, 4) for v in tuned.losses]
        for label, model in (("untrained", weights), ("finetuned", tuned.path)):
            extract(dbs["B"], load_model(model), batch=16)
            scores = run_cluster(dbs["B"], root / f"ids_{label}", model=str(model), threshold="auto",
                                 standardize=True, webp=False).scores
            row[f"cluster_B_{label}"] = scores.to_dict() if scores else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--frames", type=int, default=450)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reid_finetune.jsonl"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            row = run(seed, args.people, args.frames, args.epochs, Path(tmp))
        rows.append(row)
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    print("| seed | model, camera (held out) | rank-1 | mAP | ARI |")
    print("|---|---|---|---|---|")
    for row in rows:
        for key in ("untrained_A", "untrained_B", "adabn_B", "untrained_B_people", "finetuned_B_people",
                    "untrained_B_tracks", "finetuned_B_tracks"):
            s = row[key]
            if s:
                print(f"| {row['seed']} | {key} | {s['rank1']:.3f} | {s['mAP']:.3f} | {s['ari']:.3f} |")
        for key in ("cluster_B_untrained", "cluster_B_finetuned"):
            s = row[key]
            if s:
                print(f"| {row['seed']} | {key} (every track) | {s['rank1']:.3f} (track) | - | {s['ari']:.3f} |")


if __name__ == "__main__":
    main()
