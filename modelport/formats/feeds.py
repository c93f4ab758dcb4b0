"""Model inputs: seeded example batches for tracing and verification, single- or multi-input."""

from __future__ import annotations

from typing import Any, Mapping, Union

import numpy as np

from modelport.errors import ExportError
from modelport.preprocess import prepare
from modelport.spec import ModelSpec

# What a runner takes: one array for single-input models, or one array per input name.
Feed = Union[np.ndarray, Mapping[str, np.ndarray]]


def example_batch(spec: ModelSpec, count: int | None = None, seed: int = 0) -> Feed:
    """A seeded, realistic input batch for tracing and verification (fixed batch size when the spec has one).

    Plain-tensor models (``task == "tensors"``, several inputs or none of them pixels) get one seeded array per
    input, by name, drawn from each input's declared range (``spec.extra["example"]``).
    """
    from modelport.samples import person_crops

    n = spec.max_batch or count or 2
    if spec.task == "tensors":
        return example_tensors(spec, n, seed)
    if spec.inputs[0].dtype == "int64":
        from modelport.clip.text import example_tokens

        return example_tokens(spec, n, seed=seed)
    pre = spec.preprocess
    return prepare(person_crops(n, pre.height, pre.width, seed=seed), pre)


def example_tensors(spec: ModelSpec, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded values for every input: the shapes of ``spec.extra["example"][name]["shape"]`` (dynamic
    dimensions there are concrete) with ``rows`` rows, uniform in that entry's ``[low, high)``."""
    rng = np.random.default_rng(seed)
    table = spec.extra.get("example", {})
    feeds = {}
    for t in spec.inputs:
        entry = table.get(t.name, {})
        shape = tuple(entry.get("shape") or t.shape)[1:]
        if not all(isinstance(d, int) for d in shape):
            raise ExportError(f"{spec.name}: input {t.name} has dynamic dimensions {t.shape} and no example size",
                              hint="give its shape with concrete sizes in the export config")
        low, high = entry.get("low", 0.0), entry.get("high", 1.0)
        if t.dtype.startswith("int"):
            feeds[t.name] = rng.integers(int(low), max(int(high), int(low) + 1), (rows, *shape)).astype(t.dtype)
        else:
            feeds[t.name] = rng.uniform(low, high, (rows, *shape)).astype(np.float32)
    return feeds


def feed_rows(feed: Feed) -> int:
    """How many rows a batch (or every input of a multi-input feed) has."""
    return len(next(iter(feed.values()))) if isinstance(feed, Mapping) else len(feed)


def feed_tensors(feed: Feed, spec: ModelSpec) -> tuple[Any, ...]:
    """The torch tensors a module is called with, in the spec's input order."""
    import torch

    if isinstance(feed, Mapping):
        return tuple(torch.from_numpy(np.ascontiguousarray(feed[t.name])) for t in spec.inputs)
    return (torch.from_numpy(feed),)
