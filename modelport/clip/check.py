"""CLIP-specific verification: a structural check that an export was re-parameterised, and a semantic check
that every format ranks images for fixed text queries exactly as PyTorch does.

A model exported without re-parameterisation computes the same function (the merge is exact in eval mode),
so numeric parity cannot tell; the train-time branches show up as extra convolutions in the graph.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from modelport.formats.base import Runner

QUERIES = (
    "a photo of a dog",
    "red car on highway",
    "a cat sleeping on a sofa",
    "a bowl of fruit on a table",
    "a city street at night",
    "a person riding a bicycle",
    "snowy mountains under a blue sky",
    "a sailing boat on the sea",
)
SEMANTIC_IMAGES = 12
TIE = 1e-5  # reference scores closer than this may swap places without counting as a different ranking


@dataclass(frozen=True, slots=True)
class StructureCheck:
    """Convolutions in an artifact versus those the re-parameterised PyTorch model runs."""

    label: str
    expected: int
    found: int | None  # None: the format cannot be inspected (TensorRT engines)

    @property
    def passed(self) -> bool:
        return self.found is None or self.found <= self.expected

    def summary(self) -> str:
        if self.found is None:
            return f"{self.label}: graph not inspectable"
        if self.passed:
            return f"{self.label}: {self.found} convolutions (re-parameterised model: {self.expected})"
        return (f"{self.label}: {self.found} convolutions where the re-parameterised model has {self.expected}: "
                "exported without re-parameterisation (train-time branches still in the graph)")


def reference_convolutions(module: nn.Module, example: torch.Tensor) -> int:
    """How many convolutions one forward pass of ``module`` runs (hooks count calls, so reuse counts)."""
    calls = 0

    def hook(*_):
        nonlocal calls
        calls += 1

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()
    return calls


def artifact_convolutions(fmt_id: str, path: Path) -> int | None:
    """Convolution ops in an exported graph, or None for formats whose graph cannot be read back."""
    if fmt_id == "onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return sum(node.op_type == "Conv" for node in model.graph.node)
    if fmt_id == "openvino":
        import openvino as ov

        from modelport.formats.openvino import xml_in

        ops = ov.Core().read_model(str(xml_in(path))).get_ordered_ops()
        return sum(op.get_type_name() in ("Convolution", "GroupConvolution") for op in ops)
    if fmt_id == "torchscript":
        from modelport.formats.torchscript import read_module

        graph = read_module(path, "cpu")[0].graph
        return _count_kinds(graph, {"aten::_convolution", "aten::conv2d", "aten::convolution"})
    return None


def _count_kinds(block, kinds: set[str]) -> int:
    total = 0
    for node in block.nodes():
        total += node.kind() in kinds
        total += sum(_count_kinds(b, kinds) for b in node.blocks())
    return total


def structure_check(module: nn.Module, example: torch.Tensor, fmt_id: str, path: Path) -> StructureCheck:
    """Compare the artifact with a re-parameterised copy of ``module`` (a no-op when it already is one)."""
    from modelport.clip.model import reparameterize

    expected = reference_convolutions(reparameterize(copy.deepcopy(module)), example)
    return StructureCheck(str(path), expected, artifact_convolutions(fmt_id, path))


@dataclass(slots=True)
class RankingResult:
    label: str
    identical: int  # queries whose image ranking matches the reference (up to ties)
    queries: int
    top1_agreement: float
    mismatches: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.identical == self.queries


@dataclass(slots=True)
class SemanticReport:
    reference: str
    queries: tuple[str, ...]
    images: int
    results: list[RankingResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def summary(self) -> str:
        return "; ".join(f"{r.label}: {r.identical}/{r.queries} rankings identical" for r in self.results)


def similarities(image_runner: Runner, text_runner: Runner, images: np.ndarray,
                 queries: tuple[str, ...] = QUERIES) -> np.ndarray:
    """(queries, images) cosine similarities."""
    return text_runner.embed_text(list(queries)) @ image_runner.embed(images).T


def same_ranking(reference: np.ndarray, got: np.ndarray, tie: float = TIE) -> bool:
    """True when ``got`` orders the items as ``reference`` does, allowing swaps of near-tied reference scores."""
    order = np.argsort(-got, kind="stable")
    ranked = reference[order]
    return bool(np.all(ranked[:-1] >= ranked[1:] - tie))


def same_top1(reference: np.ndarray, got: np.ndarray, tie: float = TIE) -> bool:
    """True when ``got``'s best item is one of the reference's best, up to the ties ``same_ranking`` allows."""
    return bool(reference[int(np.argmax(got))] >= reference.max() - tie)


def semantic_check(pairs: Mapping[str, tuple[Runner, Runner]], reference: str, images: np.ndarray,
                   queries: tuple[str, ...] = QUERIES) -> SemanticReport:
    """Rank ``images`` for each query under every (image, text) runner pair; compare with ``reference``'s."""
    sims = {label: similarities(img, txt, images, queries) for label, (img, txt) in pairs.items()}
    ref = sims[reference]
    results = []
    for label, got in sims.items():
        if label == reference:
            continue
        same = [same_ranking(r, g) for r, g in zip(ref, got)]
        top1 = float(np.mean([same_top1(r, g) for r, g in zip(ref, got)]))
        bad = [f"{q!r}: {np.argsort(-g)[:5].tolist()} vs {np.argsort(-r)[:5].tolist()}"
               for q, r, g, ok in zip(queries, ref, got, same) if not ok]
        results.append(RankingResult(label, sum(same), len(queries), top1, bad))
    return SemanticReport(reference, tuple(queries), len(images), results)


def semantic_images(spec, count: int = SEMANTIC_IMAGES, seed: int = 7) -> np.ndarray:
    """Seeded scenes, preprocessed for ``spec`` (the image encoder's)."""
    from modelport.clip.samples import scene_images
    from modelport.preprocess import prepare

    pre = spec.preprocess
    return prepare(scene_images(count, pre.height, pre.width + 64, seed=seed), pre)
