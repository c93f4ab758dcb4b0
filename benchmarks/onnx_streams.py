"""ONNX Runtime on the CPU, model only: spinning workers on or off, and one multi-threaded run of a small
batch against the batch split over single-threaded streams (``OnnxRunner``'s ``split_from``).

    python benchmarks/onnx_streams.py EXPORT.onnx [HEIGHT [WIDTH]]     # e.g. yolo11n.nms.onnx 640

Random inputs of the model's size; 6 s per setting. Prints images/s per setting.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelport.formats.onnx import OnnxRunner  # noqa: E402


def rate(runner: OnnxRunner, batch: np.ndarray, seconds: float = 6.0) -> float:
    runner(batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runner(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def main() -> None:
    path = Path(sys.argv[1])
    height = int(sys.argv[2]) if len(sys.argv) > 2 else 640
    width = int(sys.argv[3]) if len(sys.argv) > 3 else height
    rng = np.random.default_rng(0)
    for spin in (True, False):
        for size in (1, 2, 4):
            batch = rng.random((size, 3, height, width), dtype=np.float32)
            for split_from in sorted({2, 4}) if size > 1 else [2]:
                runner = OnnxRunner(path, spin=spin, split_from=split_from)
                how = "split" if runner.streams > 1 and size >= runner.split_from else "one run"
                print(f"spin={spin} batch={size} split_from={split_from} ({how}): {rate(runner, batch):.1f} img/s",
                      flush=True)
                runner.close()


if __name__ == "__main__":
    main()
