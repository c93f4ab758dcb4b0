"""What machine this is: CPU, cores, GPU, library versions, and a key that identifies the combination."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import time
from functools import lru_cache

# The /proc/cpuinfo flags that decide inference speed: fp32 vector width, int8 dot products (VNNI), AMX tiles.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
LIBRARIES = ("modelport", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "numpy")


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores (not hardware threads): what ONNX Runtime and OpenVINO recommend sizing pools by."""
    try:
        pairs = set()
        physical = core = None
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not key and core is not None:
                    pairs.add((physical, core))
                    physical = core = None
        if core is not None:
            pairs.add((physical, core))
        if pairs:
            return min(len(pairs), len(os.sched_getaffinity(0)))
    except OSError:
        pass
    return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of ``SPEED_FLAGS`` this CPU has (a flag not listed is absent)."""
    wanted = set(SPEED_FLAGS)
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return sorted(wanted & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def cpu_info() -> dict:
    """The CPU as a record's ``cpu`` field: model, the instruction sets that decide INT8 and fp32 speed (``vnni``:
    AVX-512 VNNI or AVX-VNNI, the int8 dot product; ``amx``: AMX int8 tiles) and core counts."""
    flags = cpu_flags()
    return {"model": cpu_model(), "flags": flags, "vnni": bool({"avx512_vnni", "avx_vnni"} & set(flags)),
            "amx": "amx_int8" in flags, "physical_cores": physical_cores(),
            "logical_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "source": "recorded"}


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install must not stop a CPU benchmark
        return None


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (None where it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info(*, gpu: bool = True) -> dict:
    """CPU, cores, GPU, platform and library versions. ``gpu=False`` records no GPU and so imports no torch: for
    records of work run elsewhere (a served model timed from this client), where this machine's GPU plays no part."""
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "physical_cores": physical_cores(),
        "logical_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": gpu_name() if gpu else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def machine_key(info: dict | None = None) -> str:
    """Stable id of (hardware, library versions): a benchmark is only trusted on the same key."""
    info = info or machine_info()
    basis = {k: info[k] for k in ("cpu", "physical_cores", "logical_cpus", "gpu", "libraries")}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def peak_gflops(seconds: float = 1.0, size: int = 2048) -> float:
    """Measured fp32 GFLOP/s of a large matrix product with all threads (the machine's practical peak)."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 3:
        torch.mm(a, b)
        runs += 1
    elapsed = time.perf_counter() - start
    return 2 * size**3 * runs / elapsed / 1e9
