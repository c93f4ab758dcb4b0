"""Clustering scores of the demo pipeline across scene and model seeds (how robust the demo's figures are).

Each BatchNorm-calibrated random OSNet x0_25 (see docs/testing.md) embeds each synthetic scene
(`reid demo-data --seed S`); `reid cluster --standardize --threshold auto` then reports ARI and
cross-track rank-1 against the ground truth. Scene seed 0 with model seed 0 is what the tests and
`modelport demo` use.

    python benchmarks/reid_scores.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-seeds", default="0,3")
    parser.add_argument("--scene-seeds", default="0,1,2")
    parser.add_argument("--recipe", choices=("tests", "demo"), default="tests",
                        help="BatchNorm calibration: the tests' (24 crops) or `modelport demo`'s (64 crops)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from conftest import calibrated_model, save_plain

    from modelport.bench_record import Recipe, provenance
    from modelport.export import export
    from modelport.reid.extract import extract, load_model
    from modelport.reid.identify import run_cluster
    from modelport.reid.importer import import_mot
    from modelport.reid.synth import write_demo_data
    from modelport.zoo.calibrate import make_untrained_checkpoint

    rows = []
    with tempfile.TemporaryDirectory(prefix="reid_scores_") as tmp:
        work = Path(tmp)
        scenes = {s: write_demo_data(work / f"scene{s}", seed=s) for s in map(int, args.scene_seeds.split(","))}
        for mseed in map(int, args.model_seeds.split(",")):
            folder = work / f"model{mseed}"
            folder.mkdir()
            if args.recipe == "demo":
                weights = make_untrained_checkpoint(folder, "osnet_x0_25", seed=mseed)
            else:
                weights = save_plain(calibrated_model("osnet_x0_25", seed=mseed), folder / "osnet_x0_25_msmt17.pt", 512)
            export(weights, "onnx", verify=False)
            runner = load_model(weights)
            for sseed, scene in scenes.items():
                db = work / f"d{mseed}_{sseed}.db"
                import_mot(db, scene.video, scene.detections, ground_truth=scene.ground_truth)
                extract(db, runner)
                r = run_cluster(db, work / "out", threshold="auto", standardize=True, force=True, webp=False)
                row = {"model_seed": mseed, "scene_seed": sseed, **r.scores.to_dict(),
                       "threshold": round(r.threshold, 4), "tracks": r.tracks}
                rows.append(row)
                print(json.dumps(row), flush=True)
    rank1 = np.array([r["rank1"] for r in rows])
    ari = np.array([r["ari"] for r in rows])
    crops = 64 if args.recipe == "demo" else 24
    recipe = Recipe("bn_calibrated", f"random init, model seeds {args.model_seeds}",
                    f"osnet_x0_25, BatchNorm calibrated on {crops} synthetic person crops ({args.recipe} recipe: "
                    + ("make_untrained_checkpoint)" if args.recipe == "demo" else "tests/conftest.calibrated_model)"))
    record = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "model": "osnet_x0_25 (calibrated random)",
              **provenance(recipe), "calibration": args.recipe, "calibration_crops": crops,
              "settings": "--standardize --threshold auto", "runs": rows,
              "rank1": {"mean": round(float(rank1.mean()), 3), "min": float(rank1.min()), "max": float(rank1.max())},
              "ari": {"mean": round(float(ari.mean()), 3), "min": float(ari.min()), "max": float(ari.max())}}
    args.out = args.out or HERE / "results" / ("reid_scores.json" if args.recipe == "tests"
                                               else "reid_scores_demo.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: record[k] for k in ("rank1", "ari")}))


if __name__ == "__main__":
    main()
