"""Timing shared by every benchmark, local or remote: interleaved rounds and latency percentiles (numpy only, so
timing a served model needs no deep-learning runtime on the client)."""

from __future__ import annotations

import time
from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


def percentiles(latencies: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean in milliseconds and the sample count, from latencies in seconds."""
    ms = np.asarray(latencies) * 1000.0
    return {
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
        "n": int(len(ms)),
    }


def interleave(
    items: Sequence[T],
    measure: Callable[[T], R],
    seconds: float,
    rounds: int,
    *,
    key: Callable[[T], str],
    after_turn: Callable[[T], None] | None = None,
) -> dict[str, list[R]]:
    """Give each item ``rounds`` turns of an equal time slot, in turn, so that machine drift (thermal, other
    load) hits all of them alike; ``measure(item)`` runs one timed call and returns its sample. Every turn
    takes at least one sample. ``after_turn`` runs untimed at the end of each turn."""
    samples: dict[str, list[R]] = {key(item): [] for item in items}
    slot = seconds / (rounds * max(1, len(items)))
    for _ in range(rounds):
        for item in items:
            end = time.perf_counter() + slot
            while True:
                samples[key(item)].append(measure(item))
                if time.perf_counter() >= end:
                    break
            if after_turn is not None:
                after_turn(item)
    return samples
