"""Fold preprocessing into the model: uint8 NHWC pixels in, the cast, scale, mean/std and layout inside.

Measured on a ReID pipeline, float normalisation on the host cost about half as much CPU as the model
itself; inside the graph it is one fused elementwise pass the runtime parallelises.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from modelport.errors import ExportError
from modelport.spec import ModelSpec, TensorSpec

TAG = "uint8in"  # file-name tag of such exports: x.uint8in.onnx, x_uint8in_openvino_model/


class FoldedPreprocess(nn.Module):
    """``model((x.permute(0, 3, 1, 2).float() * scale - mean) / std)`` as one module."""

    def __init__(self, model: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        pre = spec.preprocess
        std = torch.tensor(pre.std, dtype=torch.float32)
        mean = torch.tensor(pre.mean, dtype=torch.float32)
        self.bgr = pre.channel_order == "BGR"  # host pixels are RGB; a BGR-trained model flips them inside
        self.register_buffer("mul", (pre.scale / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("add", (-mean / std).view(1, 3, 1, 1), persistent=False)
        self.shift = bool(mean.any())  # detectors only scale (mean 0, std 1): no Add of zeros in their graph
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2)
        if self.bgr:
            x = x.flip(1)
        x = x.float() * self.mul
        return self.model(x + self.add if self.shift else x)


def folded_spec(spec: ModelSpec) -> ModelSpec:
    """The spec of a folded model: a (B, H, W, 3) uint8 image input, preprocessing marked in-graph."""
    if len(spec.inputs) != 1 or spec.inputs[0].dtype != "float32" or len(spec.inputs[0].shape) != 4:
        raise ExportError(f"{spec.name}: only single-image float32 models can take uint8 input",
                          hint="export without --uint8-input")
    if spec.preprocess.in_graph:
        return spec
    pre = spec.preprocess
    image = spec.inputs[0]
    # A dynamic-shape detector keeps its named height and width; a fixed input takes the spec's size.
    hw = image.shape[2:] if pre.stride else (pre.height, pre.width)
    pixels = TensorSpec(image.name, "uint8", (image.shape[0], *hw, 3))
    return replace(spec, inputs=(pixels,), preprocess=replace(pre, in_graph=True, channel_order="RGB"))


def fold(model: nn.Module, spec: ModelSpec) -> tuple[nn.Module, ModelSpec]:
    """``model`` wrapped to take uint8 pixels, and its spec."""
    if spec.preprocess.in_graph:
        return model, spec
    if spec.task != "embed":
        # Detectors letterbox on the host with their own path: modelport.detect.pixels wraps them.
        raise ExportError(f"{spec.name}: --uint8-input is for image embedders, not {spec.task} models",
                          hint="export without --uint8-input")
    return FoldedPreprocess(model, spec).eval(), folded_spec(spec)
