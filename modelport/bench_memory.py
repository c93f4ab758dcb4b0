"""How much memory a benchmark will take, before anything runs: a model's activation memory per row at the
timed shape (one PyTorch pass at a reduced size, scaled), this machine's budget, and the batches that fit."""

from __future__ import annotations

import logging
import os
import resource
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from modelport.errors import ConfigError

log = logging.getLogger(__name__)

# A dynamic height and width is probed at about this many pixels and scaled up: activations of a convolutional
# network grow with the pixels, and a 720p probe would itself cost what the estimate is meant to prevent.
PROBE_PIXELS = 128 * 128
# A runtime's working set over PyTorch eager's live activations. Measured on a two-convolution 64-channel model
# at 720x1280 (0.48 GB of live activations per row): ONNX Runtime 0.45 GB per row (memory pattern off), OpenVINO
# 0.49, PyTorch and TorchScript 0.43. The margin covers allocator rounding and threads' scratch buffers.
RUNTIME_FACTOR = 1.25
# Above this much working memory kept by all runtimes together, each hands its memory back after its turn
# (``Runner.release_memory``) and warms up again untimed, as the detector benchmark does for large batches.
RELEASE_ABOVE = 2 << 30
BUDGET_SHARE = 0.8  # of the memory available now: the rest is left to the system and other processes
# What one runtime's call may hold while an export is verified or a package's golden outputs are made: those rows
# are checked, not timed, so they run in calls of at most about this much working set (``rows_per_call``).
CALL_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """What a benchmark may run: ``batches`` that fit ``budget`` bytes, those ``dropped`` from the defaults, and
    those at which runtimes ``release`` their memory between turns; all sizes in bytes."""

    budget: int
    base: int  # resident before any runtime ran
    per_row: int  # one runtime's working set per row at the timed shape
    runtimes: int
    batches: tuple[int, ...]
    dropped: tuple[int, ...] = ()
    release: tuple[int, ...] = ()

    def estimate(self, batch: int) -> int:
        """Peak resident bytes at ``batch``: every runtime's working set kept at once, or one at a time when
        they release it between turns."""
        held = self.per_row * batch * (1 if batch in self.release else self.runtimes)
        return self.base + held

    def record(self) -> dict[str, Any]:
        """The plan as the benchmark record's ``memory`` fields (docs/benchmark-schema.md), in MiB."""
        mib = 1 << 20
        return {"budget_mb": round(self.budget / mib), "base_mb": round(self.base / mib),
                "per_row_mb": round(self.per_row / mib, 1), "estimate_mb": {str(b): round(self.estimate(b) / mib)
                                                                            for b in self.batches},
                "released_between_turns": list(self.release), "dropped_batches": list(self.dropped)}


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``; elsewhere its peak so far)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_resident_bytes()


def peak_resident_bytes() -> int:
    """This process's peak resident memory so far (``getrusage``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if os.uname().sysname == "Darwin" else peak * 1024


def _available_bytes() -> int | None:
    """Memory the system can still give: ``MemAvailable``, lowered to a cgroup's limit where one is set."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(available, 0)


def default_budget() -> int:
    """The most a benchmark may hold: what this process holds plus a share of what the system has left."""
    available = _available_bytes()
    if available is None:  # no /proc: assume a modest machine rather than none
        available = 8 << 30
    return resident_bytes() + int(available * BUDGET_SHARE)


def activation_bytes(module: Any, feed: dict[str, Any] | Any, spec: Any) -> int:
    """Peak bytes of the tensors alive during one forward of ``module`` on a one-row ``feed`` (numpy, at the
    timed shape), inputs included. A dynamic height and width larger than ``PROBE_PIXELS`` is probed on a
    crop and scaled by the pixel ratio, so the estimate costs little even for a 4K input."""
    import numpy as np
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    arrays = feed if isinstance(feed, dict) else {spec.inputs[0].name: feed}
    scale, crops = 1.0, []
    for t in spec.inputs:
        a = np.asarray(arrays[t.name])[:1]
        if a.ndim == 4 and isinstance(t.shape[2], str) and isinstance(t.shape[3], str):
            h, w = a.shape[2:]
            if h * w > PROBE_PIXELS:
                side = (PROBE_PIXELS / (h * w)) ** 0.5
                ph, pw = max(32, int(h * side) // 32 * 32), max(32, int(w * side) // 32 * 32)
                scale = max(scale, h * w / (min(ph, h) * min(pw, w)))
                a = a[:, :, :ph, :pw]
        crops.append(torch.from_numpy(np.ascontiguousarray(a)))

    live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors referring to it]
    state = {"now": sum(c.numel() * c.element_size() for c in crops), "peak": 0}
    state["peak"] = state["now"]

    def drop(key: int) -> None:
        entry = live.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                state["now"] -= live.pop(key)[0]

    class LiveBytes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    key = storage.data_ptr()
                    if key not in live:
                        live[key] = [storage.nbytes(), 0]
                        state["now"] += storage.nbytes()
                        state["peak"] = max(state["peak"], state["now"])
                    live[key][1] += 1
                    weakref.finalize(t, drop, key)
            return out

    with torch.no_grad(), LiveBytes():
        module(*crops)
    return int(state["peak"] * scale)


def rows_per_call(per_row_activations: int, rows: int, *, limit: int | None = None, least: int = 2) -> int:
    """How many of ``rows`` one runtime call may take when each row needs ``per_row_activations`` bytes of live
    tensors (``activation_bytes``): as many as fit ``limit`` (default ``CALL_BYTES``) with the runtime's overhead,
    but at least ``least`` (verification runs a batch other than the traced one: calls of 2+ rows over 5 rows
    include a size other than 1)."""
    per_row = max(1, int(per_row_activations * RUNTIME_FACTOR))
    return max(min(least, rows), min(rows, (CALL_BYTES if limit is None else limit) // per_row))


def plan_memory(per_row_activations: int, batches: Sequence[int], runtimes: int, *, explicit: bool,
                budget: int | None = None, base: int | None = None, shape: str = "") -> MemoryPlan:
    """The batches that fit ``budget`` (default: ``default_budget()``) with ``runtimes`` runtimes open.

    A batch that does not fit even with runtimes releasing memory between turns is dropped from default
    batches (with a warning) or, when the user chose it (``explicit``), refused with a ConfigError naming
    --batch and --size; so is the case where no default batch fits."""
    budget = default_budget() if budget is None else budget
    base = resident_bytes() if base is None else base
    per_row = int(per_row_activations * RUNTIME_FACTOR)
    n = max(1, runtimes)
    release = tuple(b for b in batches if per_row * b * n > RELEASE_ABOVE)
    plan = MemoryPlan(budget, base, per_row, n, tuple(batches), release=release)
    fits = tuple(b for b in batches if plan.estimate(b) <= budget)
    if fits == tuple(batches):
        return plan
    gib = 1 << 30
    too_big = [b for b in batches if b not in fits]
    worst = plan.estimate(too_big[0])
    where = f" at {shape}" if shape else ""
    if explicit or not fits:
        raise ConfigError(
            f"batch {too_big[0]}{where} needs about {worst / gib:.1f} GiB ({per_row / gib:.2f} GiB per row per "
            f"runtime), over the {budget / gib:.1f} GiB this machine can give the benchmark",
            hint="time smaller batches (--batch 1) or a smaller input (--size 640x360 for an image model)")
    log.warning("not timing batch %s%s: about %.1f GiB each, over the %.1f GiB budget (--batch to choose)",
                ",".join(map(str, too_big)), where, worst / gib, budget / gib)
    return MemoryPlan(budget, base, per_row, n, fits, dropped=tuple(too_big),
                      release=tuple(b for b in release if b in fits))
