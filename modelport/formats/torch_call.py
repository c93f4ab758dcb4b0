"""Calling PyTorch from a runner: whether CUDA is there, which device a module may use, and running a
(TorchScript or eager) module on numpy inputs in strict fp32. torch is imported only when called."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import numpy as np

from modelport.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def torch_device(device: str, origin: object) -> str:
    """``device`` if usable, else ``cpu`` with a warning that says so."""
    if device.startswith("cuda") and not cuda_available():
        warnings.warn(f"{origin}: CUDA requested but no CUDA device is available; running on the CPU",
                      RuntimeWarning, stacklevel=3)
        return "cpu"
    return device


@contextmanager
def strict_fp32(device: str) -> Iterator[None]:
    """Turn off TF32 on CUDA while an fp32 model runs.

    cuDNN's default TF32 convolutions made an exact TorchScript export differ from eager PyTorch on an
    H100 (cosine 0.99982, max abs diff 0.09): an fp32 artifact must compute in fp32 to be verifiable.
    """
    if not device.startswith("cuda"):
        yield
        return
    import torch

    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def run_module(module: "nn.Module", spec: ModelSpec, device: str,
               arrays: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    """Call a PyTorch (or TorchScript) module on numpy inputs; its outputs by the spec's names, as float32."""
    import torch

    with torch.inference_mode(), strict_fp32(device):
        out = module(*(torch.from_numpy(a).to(device) for a in arrays))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return {t.name: o.float().cpu().numpy() for t, o in zip(spec.outputs, outs)}
