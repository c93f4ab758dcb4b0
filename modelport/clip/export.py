"""Export a MobileCLIP's image and text encoders to every format, each verified against open_clip's PyTorch
model (numerically, structurally, and by the image ranking of fixed text queries)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import torch

from modelport.clip.check import SemanticReport, StructureCheck, semantic_check, semantic_images, structure_check
from modelport.clip.model import ClipModel, build_clip, has_reparameterizable_blocks
from modelport.export import ExportResult, ReferenceCache, _remove, export_one, parse_formats
from modelport.formats import ExportOptions, get_format
from modelport.formats.base import example_batch
from modelport.formats.pytorch import PyTorchRunner
from modelport.naming import weights_stem
from modelport.zoo import BuiltModel

ENCODERS = ("image", "text")


@dataclass(slots=True)
class ClipExport:
    """Per-encoder, per-format export results plus the CLIP-specific checks."""

    model: ClipModel
    results: dict[str, list[ExportResult]]  # encoder -> one result per format
    structure: list[StructureCheck] = field(default_factory=list)
    semantic: SemanticReport | None = None

    @property
    def ok(self) -> bool:
        every = [r for rs in self.results.values() for r in rs]
        return (all(r.ok for r in every) and all(s.passed for s in self.structure)
                and (self.semantic is None or self.semantic.passed))

    def paths(self, encoder: str) -> dict[str, Path]:
        """format id -> artifact path of one encoder's successful exports."""
        return {r.format: r.path for r in self.results.get(encoder, []) if r.ok and r.path is not None}


def encoder(model: ClipModel, which: str) -> BuiltModel:
    """One encoder as the core exporter takes it (module + spec)."""
    if which not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, not {which!r}")
    module, spec = (model.image, model.image_spec) if which == "image" else (model.text, model.text_spec)
    return BuiltModel(module, spec, None)


def artifact_stem(model: ClipModel, weights: str | Path | None, which: str) -> str:
    base = weights_stem(weights) if weights is not None else f"{model.name}_untrained"
    return f"{base}_{which}"


def export_clip(
    name: str,
    weights: str | Path | None = None,
    formats: str | Iterable[str] | None = None,
    *,
    out: str | Path | None = None,
    opset: int = 17,
    allow_random: bool = False,
    device: str = "cpu",
    verify: bool = True,
    model: ClipModel | None = None,
    encoders: Iterable[str] = ENCODERS,
) -> ClipExport:
    """Write ``{stem}_image`` and ``{stem}_text`` artifacts for every requested format (default: all usable).

    A format whose export fails any check leaves no artifact behind.
    """
    chosen = parse_formats(formats, device)
    model = model or build_clip(name, weights, allow_random=allow_random)
    source = Path(weights) if weights is not None else None
    out_dir = Path(out) if out is not None else (source.parent if source is not None else Path.cwd())
    out_dir.mkdir(parents=True, exist_ok=True)
    options = ExportOptions(opset=opset, device=device)
    report = ClipExport(model, {})
    for which in encoders:
        built = encoder(model, which)
        stem = artifact_stem(model, weights, which)
        example = torch.from_numpy(example_batch(built.spec.with_batch(None), count=2))
        results = []
        references = ReferenceCache()  # per encoder: its formats share PyTorch's outputs
        for fmt in chosen:
            dest = fmt.artifact_path(out_dir, stem)

            def merged(staged: Path, built: BuiltModel = built, example: torch.Tensor = example,
                       fmt_id: str = fmt.id, dest: Path = dest) -> str | None:
                check = replace(structure_check(built.module, example, fmt_id, staged), label=str(dest))
                report.structure.append(check)
                return None if check.passed else check.summary()

            # Only encoders built from MobileOne / FastViT blocks can be left un-merged (not the text tower).
            also = merged if has_reparameterizable_blocks(built.module) else None
            results.append(export_one(built, fmt, dest, options, verify=verify, source=source, also=also,
                                      references=references))
        report.results[which] = results
    if verify:
        report.semantic = _semantic(report, device)
    return report


def _semantic(report: ClipExport, device: str) -> SemanticReport | None:
    """Rank the fixed images for the fixed queries with PyTorch and with each format that exported both."""
    model = report.model
    images = semantic_images(model.image_spec)
    pairs = {"pytorch": (PyTorchRunner(model.image, model.image_spec, None, device),
                         PyTorchRunner(model.text, model.text_spec, None, device))}
    if set(report.results) != set(ENCODERS):
        return None
    image_paths, text_paths = report.paths("image"), report.paths("text")
    for fmt_id in image_paths.keys() & text_paths.keys():
        fmt = get_format(fmt_id)
        pairs[fmt_id] = (fmt.load(image_paths[fmt_id], device), fmt.load(text_paths[fmt_id], device))
    if len(pairs) < 2:
        return None
    semantic = semantic_check(pairs, "pytorch", images)
    for result in semantic.results:
        if not result.passed:  # a format that ranks differently is not kept
            for results in report.results.values():
                for r in results:
                    if r.format == result.label and r.path is not None:
                        _remove(r.path)
                        r.error, r.path = f"semantic check failed: {'; '.join(result.mismatches)}", None
    return semantic
