"""ONNX Runtime on the CPU, model only: the settings behind ``OnnxRunner``'s streams.

    python benchmarks/onnx_streams.py EXPORT.onnx [HEIGHT [WIDTH]]          # small batches: spin, split_from
    python benchmarks/onnx_streams.py EXPORT.onnx HEIGHT WIDTH --runs BATCH  # run size inside the streams

Small batches: spinning workers on or off, and one multi-threaded run against the batch split over
single-threaded streams, 6 s per setting. ``--runs``: one large batch through the streams in runs of
``STREAM_RUN_VALUES`` input values against one run per stream, interleaved over 3 rounds. Random inputs of the
given size; prints images/s per setting.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelport.formats import onnx as onnx_format  # noqa: E402
from modelport.formats.onnx import OnnxRunner  # noqa: E402


def rate(runner: OnnxRunner, batch: np.ndarray, seconds: float = 6.0) -> float:
    runner(batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runner(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def small_batches(path: Path, height: int, width: int) -> None:
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


def run_sizes(path: Path, height: int, width: int, size: int, rounds: int = 3) -> None:
    batch = np.random.default_rng(0).random((size, 3, height, width), dtype=np.float32)
    runner = OnnxRunner(path, spin=False)
    default = onnx_format.STREAM_RUN_VALUES
    settings = {f"runs of {runner.stream_rows(batch.shape)} rows": default, "one run per stream": batch.size}
    rates: dict[str, list[float]] = {name: [] for name in settings}
    runner(batch)
    for _ in range(rounds):
        for name, values in settings.items():
            onnx_format.STREAM_RUN_VALUES = values
            start = time.perf_counter()
            runner(batch)
            rates[name].append(size / (time.perf_counter() - start))
    onnx_format.STREAM_RUN_VALUES = default
    for name, got in rates.items():
        print(f"batch={size} {name}: median {np.median(got):.1f} img/s (rounds {', '.join(f'{r:.1f}' for r in got)})")
    runner.close()


def main() -> None:
    args = sys.argv[1:]
    runs = None
    if "--runs" in args:
        at = args.index("--runs")
        runs = int(args[at + 1])
        del args[at : at + 2]
    path = Path(args[0])
    height = int(args[1]) if len(args) > 1 else 640
    width = int(args[2]) if len(args) > 2 else height
    if runs:
        run_sizes(path, height, width, runs)
    else:
        small_batches(path, height, width)


if __name__ == "__main__":
    main()
