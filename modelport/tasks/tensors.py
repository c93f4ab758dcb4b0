"""The ``tensors`` task: a model's own inputs by name (the factory family); outputs are returned as they are."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from modelport.errors import ExportError
from modelport.spec import ModelSpec


def example(spec: ModelSpec, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
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
        if t.dtype.startswith("int") or t.dtype == "uint8":
            feeds[t.name] = rng.integers(int(low), max(int(high), int(low) + 1), (rows, *shape)).astype(t.dtype)
        else:
            feeds[t.name] = rng.uniform(low, high, (rows, *shape)).astype(np.float32)
    return feeds


def prepare(spec: ModelSpec, items: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [t.name for t in spec.inputs if t.name not in items]
    if missing:
        raise ValueError(f"{spec.name}: inputs {missing} missing; the model takes {[t.name for t in spec.inputs]}")
    return {t.name: np.asarray(items[t.name]) for t in spec.inputs}
