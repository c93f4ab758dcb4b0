"""Seeded fuzzing: mutated ONNX files and checkpoints give typed errors (or still load), never anything else."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from modelport.errors import ModelportError

MUTATIONS = 200


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One seeded mutation: flipped bytes, a cut, an inserted run, a zeroed block or a duplicated slice."""
    buf = bytearray(data)
    kind = rng.integers(5)
    if kind == 0:
        for pos in rng.integers(0, len(buf), size=int(rng.integers(1, 16))):
            buf[pos] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        del buf[int(rng.integers(0, len(buf))):]
    elif kind == 2:
        pos = int(rng.integers(0, len(buf)))
        buf[pos:pos] = rng.bytes(int(rng.integers(1, 64)))
    elif kind == 3:
        pos = int(rng.integers(0, len(buf)))
        buf[pos:pos + int(rng.integers(1, 4096))] = bytes(min(4096, len(buf) - pos))
    else:
        a, b = sorted(int(x) for x in rng.integers(0, len(buf), size=2))
        buf[b:b] = buf[a:b][:4096]
    return bytes(buf)


def fuzz(source: Path, open_it, tmp_path: Path, seed: int, count: int = MUTATIONS) -> dict[str, int]:
    """Open ``count`` mutations of ``source``; every outcome must be a success or a ModelportError."""
    rng = np.random.default_rng(seed)
    data = source.read_bytes()
    outcomes = {"ok": 0, "typed": 0}
    for i in range(count):
        path = tmp_path / f"m{i % 4}{''.join(source.suffixes)}"
        path.write_bytes(mutate(data, rng))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                open_it(path)
            outcomes["ok"] += 1
        except ModelportError as exc:
            assert path.name in exc.message, exc.message
            outcomes["typed"] += 1
        except Exception as exc:  # noqa: BLE001 - the point: nothing untyped may escape
            pytest.fail(f"mutation {i} (seed {seed}) raised {type(exc).__name__}: {exc}")
    return outcomes


def test_mutated_onnx_files_give_typed_errors(exported_dir, tmp_path):
    from modelport.formats import get_format

    onnx = get_format("onnx")

    def open_onnx(path: Path) -> None:
        onnx.read_spec(path)
        onnx.load(path).close()

    outcomes = fuzz(exported_dir / "osnet_x0_25_msmt17.onnx", open_onnx, tmp_path, seed=1)
    assert outcomes["typed"] > MUTATIONS // 2, outcomes  # the mutations really broke the files


def test_mutated_checkpoints_give_typed_errors(exported_dir, tmp_path):
    from modelport.zoo import build

    outcomes = fuzz(exported_dir / "osnet_x0_25_msmt17.pt", lambda p: build(p, arch="osnet_x0_25"), tmp_path, seed=2)
    assert outcomes["typed"] > MUTATIONS // 2, outcomes


def test_mutated_detector_checkpoints_give_typed_errors(tmp_path):
    from modelport.detect.model import load_ultralytics
    from modelport.detect.untrained import save_untrained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = save_untrained(tmp_path / "src" / "yolo11n.pt", "yolo11n", imgsz=64, calib_images=4)
    outcomes = fuzz(source, load_ultralytics, tmp_path, seed=3, count=MUTATIONS // 2)
    assert outcomes["typed"] > MUTATIONS // 4, outcomes
