"""``modelport bench URL``: a served model timed from this client through the remote runner. Per batch size:
latency per call (the runner splits a batch into requests of the server's max_batch_size, several in flight)
and images/s, the batch sizes interleaved in rounds so drift on either machine hits all alike; plus which
endpoint answered how many requests. The client needs numpy and tritonclient only: no torch or local runtime
(tests/test_remote_bench_torchfree.py)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable, Sequence

import numpy as np

from modelport.bench_record import header, row
from modelport.errors import ModelportError
from modelport.formats.base import example_batch
from modelport.timing import interleave

Progress = Callable[[str], None]


def bench_endpoint(
    source: str,
    *,
    batches: Sequence[int] = (1, 16, 64),
    seconds: float = 3.0,
    rounds: int = 5,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> dict:
    """Time the model served at ``source`` (one URL, or several comma-separated) at each batch size; returns a
    record shaped like ``modelport bench``'s (schema in docs/benchmark-schema.md), one ``remote`` row per batch."""
    from modelport.formats.remote import load as load_remote

    if not batches or min(batches) < 1:
        raise ModelportError(f"batch sizes must be positive integers, got {list(batches)}")
    if seconds <= 0 or rounds < 1:
        raise ModelportError(f"seconds must be positive and rounds at least 1, got {seconds} and {rounds}")
    say = progress or (lambda _msg: None)
    say(f"connecting to {source}")
    start = time.perf_counter()
    runner = load_remote(source, timeout=timeout)
    load_s = round(time.perf_counter() - start, 3)
    try:
        spec = runner.spec.with_batch(None)
        inputs = {b: example_batch(spec, count=b, seed=b) for b in batches}
        for b in batches:  # warm-up: connections, the server's first runs
            say(f"warming up batch {b}")
            for _ in range(2):
                _check_rows(runner(inputs[b]), b, source)
        warm = list(runner.sent)

        def measure(b: int) -> float:
            begin = time.perf_counter()
            runner(inputs[b])
            return time.perf_counter() - begin

        say(f"timing batches {', '.join(map(str, batches))} in {rounds} interleaved rounds")
        samples = interleave(list(batches), measure, seconds * len(batches), rounds, key=str)
        requests = [{"url": e.url, "requests": n - w} for e, n, w in zip(runner.endpoints, runner.sent, warm)]
        settings = dict(runner.settings)
    finally:
        runner.close()
    rows = [row("remote", "remote", b, precision=runner.spec.precision, path=source, load_s=load_s,
                settings=settings, latencies=samples[str(b)]) for b in batches]
    model = {"name": runner.spec.name, "task": runner.spec.task, "source": asdict(runner.spec.source),
             "gflop_per_image": None, "untrained": runner.spec.is_random}
    bench_settings = {"batches": list(batches), "device": "remote", "threads": None, "seconds_per_batch": seconds,
                      "rounds": rounds, "parity_rows": 0, "formats": ["remote"], "timeout_s": timeout}
    # The client's GPU and matrix-product peak play no part in timing a served model, and probing them would
    # import torch.
    report = header("remote", model, bench_settings, gpu=False, peak=False)
    return {**report, "endpoints": [e.url for e in runner.endpoints], "requests_per_endpoint": requests,
            "rows": rows}


def _check_rows(outputs: dict[str, np.ndarray], rows: int, source: str) -> None:
    """The server answered every row (a timing of wrong answers would be no timing)."""
    for name, value in outputs.items():
        if len(value) != rows:
            raise ModelportError(f"{source}: output {name!r} has {len(value)} rows for a batch of {rows}")
