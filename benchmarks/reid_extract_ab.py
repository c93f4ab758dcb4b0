"""Interleaved A/B of `reid extract`: this tree's code against an older commit's, float and uint8 ONNX input.

Each tree (this one and ``--base``, unpacked with ``git archive``) exports the same BatchNorm-calibrated
random OSNet (float input and ``--uint8-input``) and imports the same demo scene (camera A) with its own code.
Every round then runs, each in a fresh process of its tree: extract end to end into a fresh copy of the
database, then the model alone on the same crops prepared in advance (one ``embed`` call per batch), back to
back. The four (tree, input) pairs alternate within each round, in reversed order every other round, so host
load drifting between rounds hits them alike. Medians of the extract / model-only ratio and of crops/s.

    flock /tmp/modelport-bench.lock python benchmarks/reid_extract_ab.py --base 5dab129 --rounds 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

PREPARE = """
import sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
from modelport.export import export
from modelport.reid.importer import import_mot
weights, video, det, work = map(Path, sys.argv[1:5])
export(weights, "onnx", out=work)
export(weights, "onnx", uint8_input=True, out=work)
import_mot(work / "template.db", video, det)
"""

ROUND = """
import json, shutil, sys, time
from pathlib import Path
from modelport import load
from modelport.reid import store
from modelport.reid.extract import _batches, extract
artifact, template, db = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
runner = load(artifact)
conn = store.connect(template)
rows = store.pending(conn, "none", "person")
conn.close()
inputs = [b.inputs for b in _batches(rows, runner.spec.preprocess, 16)]
runner(inputs[0])  # warm-up
shutil.copy(template, db)
result = extract(db, runner, batch=16)
start = time.perf_counter()
for b in inputs:
    runner.embed(b, prepared=True)
model = sum(len(b) for b in inputs) / (time.perf_counter() - start)
db.unlink()
print(json.dumps({"crops": result.computed, "extract": result.crops_per_s, "model": model}))
"""


def _child(tree: Path, code: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{tree}: {proc.stderr[-2000:]}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="5dab129", help="the older commit to compare against")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "reid_extract_ab.json")
    args = parser.parse_args()
    import onnxruntime
    from conftest import calibrated_model, save_plain

    from modelport.bench_record import Recipe, provenance
    from modelport.machine import physical_cores
    from modelport.reid.synth import write_demo_data

    repo = HERE.parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout
    base = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="reid_ab_") as tmp:
        work = Path(tmp)
        old = work / "base_tree"
        old.mkdir()
        archive = subprocess.run(["git", "archive", base], cwd=repo, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        weights = save_plain(calibrated_model("osnet_x0_25"), work / "osnet_x0_25_ab.pt", 512)
        scene = write_demo_data(work / "scene")
        trees = {f"{base} (base)": old, f"{head.strip()} (this tree)": repo}
        arms = []
        for label, tree in trees.items():
            folder = work / label.split()[0]
            folder.mkdir()
            _child(tree, PREPARE, str(weights), str(scene.video), str(scene.detections), str(folder))
            for variant, suffix in (("float input", ".onnx"), ("uint8 input", ".uint8in.onnx")):
                arms.append(
                    {
                        "tree": label,
                        "variant": variant,
                        "path": tree,
                        "folder": folder,
                        "artifact": folder / f"{weights.stem}{suffix}",
                        "rounds": [],
                    }
                )
        for r in range(args.rounds):
            for arm in arms if r % 2 == 0 else arms[::-1]:
                line = (
                    _child(
                        arm["path"],
                        ROUND,
                        str(arm["artifact"]),
                        str(arm["folder"] / "template.db"),
                        str(arm["folder"] / "run.db"),
                    )
                    .strip()
                    .splitlines()[-1]
                )
                arm["rounds"].append(json.loads(line))
                m = arm["rounds"][-1]
                print(
                    f"round {r} {arm['tree']} {arm['variant']}: extract {m['extract']:.1f} crops/s, model only "
                    f"{m['model']:.1f} img/s, ratio {m['extract'] / m['model']:.3f}",
                    flush=True,
                )
        load_after = os.getloadavg()
    rows = []
    for arm in arms:
        ext = np.array([m["extract"] for m in arm["rounds"]])
        model = np.array([m["model"] for m in arm["rounds"]])
        rows.append(
            {
                "tree": arm["tree"],
                "variant": arm["variant"],
                "crops": arm["rounds"][0]["crops"],
                "extract_crops_per_s": round(float(np.median(ext)), 1),
                "model_only_img_per_s": round(float(np.median(model)), 1),
                "ratio": round(float(np.median(ext)) / float(np.median(model)), 3),
                "paired_ratio_median": round(float(np.median(ext / model)), 3),
                "paired_ratio_range": [round(float((ext / model).min()), 3), round(float((ext / model).max()), 3)],
                "extract_rounds": [round(float(x), 1) for x in ext],
                "model_rounds": [round(float(x), 1) for x in model],
            }
        )
    record = {
        **provenance(Recipe("bn_calibrated", "random init, seed 0 (tests/conftest.calibrated_model)",
                            "osnet_x0_25, BatchNorm calibrated on 24 synthetic person crops; float and uint8 input"),
                    repo),
        "base": base,
        "rounds": args.rounds,
        "batch": 16,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "physical_cores": physical_cores(),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "load_average_after": [round(x, 2) for x in load_after],
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "arms": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print("| code | input | extract crops/s | model only img/s | ratio | paired (range) |")
    print("|---|---|---:|---:|---:|---|")
    for row in rows:
        lo, hi = row["paired_ratio_range"]
        print(
            f"| {row['tree']} | {row['variant']} | {row['extract_crops_per_s']} | {row['model_only_img_per_s']} | "
            f"{row['ratio']} | {row['paired_ratio_median']} ({lo}-{hi}) |"
        )


if __name__ == "__main__":
    main()
