"""TorchScript export (trace + freeze, spec as an extra file) and its runner."""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from modelport.errors import CorruptFileError, ExportError
from modelport.formats.base import ExportOptions, Runner
from modelport.formats.feeds import example_batch, feed_tensors
from modelport.formats.torch_call import run_module, torch_device
from modelport.spec import SPEC_KEY, ModelSpec

_EXTRA = f"{SPEC_KEY}.json"


@contextmanager
def _quiet_jit():
    # torch 2.10+ marks torch.jit deprecated; TorchScript is still what libtorch/Triton deployments load.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=Warning)
        yield


def export(module, spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
    import torch

    example = feed_tensors(example_batch(spec), spec)
    try:
        # Traced convolutions record cuDNN's allow_tf32 flag as a constant; fp32 artifacts record False.
        with torch.no_grad(), _quiet_jit(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            traced = torch.jit.trace(module.eval(), example, check_trace=False)
            # Freezing inlines weights and folds constants: faster inference, same numerics.
            frozen = torch.jit.freeze(traced)
    except Exception as exc:
        raise ExportError(f"{dest}: TorchScript tracing failed: {exc}") from exc
    from modelport.formats import ultralytics_meta

    extra = {_EXTRA: spec.to_json()}
    if (meta := ultralytics_meta.metadata(spec)) is not None:  # Ultralytics' loader reads extra/config.txt
        extra[ultralytics_meta.TORCHSCRIPT_FILE] = json.dumps(meta)
    with _quiet_jit():
        torch.jit.save(frozen, str(dest), _extra_files=extra)
    return dest


def read_module(path: Path, device: str):
    import torch

    extra = {_EXTRA: ""}
    try:
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:
        raise CorruptFileError(f"{path}: not a loadable TorchScript file ({str(exc).splitlines()[0]})") from None
    if not extra[_EXTRA]:
        raise CorruptFileError(f"{path}: no modelport metadata in this TorchScript file",
                               hint="export it with `modelport export`")
    return module, ModelSpec.from_json(extra[_EXTRA], origin=str(path))


def read_spec(path: Path) -> ModelSpec:
    return read_module(path, "cpu")[1]


class TorchScriptRunner(Runner):
    format_id = "torchscript"

    def __init__(self, path: Path, device: str = "cpu") -> None:
        device = torch_device(device, path)
        self.module, spec = read_module(path, device)
        super().__init__(spec, path, device)
        import torch

        self.settings = {"frozen": True, "torch_threads": torch.get_num_threads()}

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return run_module(self.module, self.spec, self.device, (batch,))

    def _infer_many(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_module(self.module, self.spec, self.device, tuple(feeds[t.name] for t in self.spec.inputs))


def load(path: Path, device: str = "cpu", threads: int | None = None) -> TorchScriptRunner:
    return TorchScriptRunner(path, device)
