"""Model inputs: seeded example batches for tracing and verification, single- or multi-input."""

from __future__ import annotations

from typing import Any, Mapping, Union

import numpy as np

from modelport.spec import ModelSpec

# What a runner takes: one array for single-input models, or one array per input name.
Feed = Union[np.ndarray, Mapping[str, np.ndarray]]


def example_batch(spec: ModelSpec, count: int | None = None, seed: int = 0) -> Feed:
    """A seeded, realistic input batch for tracing and verification (fixed batch size when the spec has one),
    as the spec's task makes it (``modelport.tasks``): crops, images, captions, or one array per input name."""
    from modelport.tasks import get_task

    return get_task(spec.task).example(spec, spec.max_batch or count or 2, seed)


def feed_rows(feed: Feed) -> int:
    """How many rows a batch (or every input of a multi-input feed) has."""
    return len(next(iter(feed.values()))) if isinstance(feed, Mapping) else len(feed)


def row_range(feed: Feed, start: int, stop: int) -> Feed:
    """Rows ``start:stop`` of a batch (of every input of a multi-input feed)."""
    return {k: v[start:stop] for k, v in feed.items()} if isinstance(feed, Mapping) else feed[start:stop]


def first_rows(feed: Feed, rows: int) -> Feed:
    """The first ``rows`` rows of a batch (of every input of a multi-input feed)."""
    return row_range(feed, 0, rows)


def feed_tensors(feed: Feed, spec: ModelSpec) -> tuple[Any, ...]:
    """The torch tensors a module is called with, in the spec's input order."""
    import torch

    if isinstance(feed, Mapping):
        return tuple(torch.from_numpy(np.ascontiguousarray(feed[t.name])) for t in spec.inputs)
    return (torch.from_numpy(feed),)
