"""`modelport bench` for MobileCLIP: both encoders in every runtime side by side, interleaved in rounds, with
parity and image rankings against open_clip's PyTorch model; the record follows docs/benchmark-schema.md
with an ``encoder`` per row."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from modelport.bench import (
    PARITY_ROWS,
    Candidate,
    cache_root,
    candidate_row,
    check_parity,
    open_candidate,
    size_mb,
    time_interleaved,
)
from modelport.bench_record import header
from modelport.clip.model import ClipModel
from modelport.clip.verify import ENCODERS, artifact_base, encoder_spec, recorded_weights
from modelport.errors import ModelportError, UnknownArchitectureError, WeightsNotFoundError
from modelport.formats import EXPORTABLE, get_format
from modelport.naming import weights_stem

DEFAULT_BATCHES = (1, 16)
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ClipSource:
    """What to benchmark: the model, its checkpoint (None: random) and where its exports may already be."""

    name: str
    weights: Path | None
    folder: Path | None
    base: str | None  # artifact names are {base}_image.onnx, {base}_text.onnx, ...


def _infer_name(filename: str) -> str | None:
    from modelport.clip.model import clip_models

    hits = [n for n in clip_models() if n.lower() in filename.lower()]
    return max(hits, key=len) if hits else None


def resolve_source(source: str | Path, weights: str | Path | None = None, arch: str | None = None) -> ClipSource:
    """A MobileCLIP name (with ``weights`` or none), an open_clip checkpoint (name from ``arch`` or the file
    name), or an encoder artifact (name and checkpoint from its spec; siblings beside it)."""
    from modelport.clip.model import clip_models, is_clip_model

    path = Path(source)
    given = Path(weights) if weights is not None else None
    if given is not None and not given.is_file():
        raise WeightsNotFoundError(f"{given}: weights file not found")
    if not path.exists():
        if not is_clip_model(str(source)):
            raise UnknownArchitectureError(f"{source}: neither a file nor a MobileCLIP name",
                                           hint=f"choose one of: {', '.join(clip_models())}")
        return ClipSource(str(source), given, given.parent if given else None, weights_stem(given) if given else None)
    spec = encoder_spec(path)
    if spec is not None:
        name = spec.extra["clip_model"]
        base = artifact_base(path, spec.extra["encoder"])
        return ClipSource(name, given or recorded_weights(spec), path.parent, base)
    name = arch or _infer_name(path.name)
    if name is None or not is_clip_model(name):
        raise UnknownArchitectureError(f"{path}: cannot tell which MobileCLIP this checkpoint is",
                                       hint=f"pass --arch with one of: {', '.join(clip_models())}")
    return ClipSource(name, path, path.parent, weights_stem(path))


def state_digest(model: ClipModel) -> str:
    """sha256 of the (re-parameterised) weights: names the export cache of a model built without a file."""
    digest = hashlib.sha256()
    for key, value in sorted(model.clip.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _existing(src: ClipSource, model: ClipModel, out_dir: Path, fmt_id: str, which: str) -> Path | None:
    """A usable export of this encoder: beside the source first, then in the cache; same model and weights."""
    fmt = get_format(fmt_id)
    base = src.base or (weights_stem(src.weights) if src.weights else f"{model.name}_untrained")
    for folder in [f for f in (src.folder, out_dir) if f is not None]:
        path = fmt.artifact_path(folder, f"{base}_{which}")
        spec = encoder_spec(path)
        if spec is None or spec.extra["encoder"] != which or spec.extra["clip_model"] != model.name:
            continue
        # Beside the source, an export of random weights records no file to compare: parity will tell.
        if spec.source.sha256 == model.image_spec.source.sha256 or folder == src.folder and not spec.source.sha256:
            return path
    return None


def _inputs(model: ClipModel, which: str, count: int, seed: int) -> np.ndarray:
    from modelport.clip.samples import scene_images
    from modelport.preprocess import prepare
    from modelport.tasks.embed_text import example as example_tokens

    if which == "text":
        return example_tokens(model.text_spec, count, seed=seed)
    pre = model.image_spec.preprocess
    return prepare(scene_images(count, pre.height, pre.width + 64, seed=seed), pre)


def encoder_gflops(model: ClipModel, which: str) -> float:
    """GFLOP per image / per caption (2 x multiply-adds), counted by PyTorch's FLOP counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module = model.image if which == "image" else model.text
    example = torch.from_numpy(_inputs(model, which, 1, seed=0))
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel is invisible to the counter
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            module(example)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return counter.get_total_flops() / 1e9


def _open(cand: Candidate, model: ClipModel, which: str, device: str, threads: int | None) -> None:
    from modelport.formats.pytorch import PyTorchRunner

    def make():
        if cand.format == "pytorch":
            module, spec = (model.image, model.image_spec) if which == "image" else (model.text, model.text_spec)
            return PyTorchRunner(module, spec, cand.path, device)
        return get_format(cand.format).load(cand.path, device, threads=threads)

    open_candidate(cand, make)


def _prepare_candidates(src: ClipSource, model: ClipModel, format_ids: list[str], out_dir: Path, device: str,
                        say: Progress) -> dict[str, list[Candidate]]:
    from modelport.clip.export import export_clip

    cands = {w: [Candidate("pytorch", "pytorch", path=src.weights, size_mb=size_mb(src.weights))] for w in ENCODERS}
    missing = []
    for fmt_id in format_ids:
        reason = get_format(fmt_id).unavailable_reason(device)
        for which in ENCODERS:
            cand = Candidate(fmt_id, fmt_id)
            if reason:
                cand.status, cand.reason = "unavailable", reason
            else:
                cand.path = _existing(src, model, out_dir, fmt_id, which)
            cands[which].append(cand)
        if not reason and any(c.path is None for w in ENCODERS for c in cands[w] if c.format == fmt_id):
            missing.append(fmt_id)
    if missing:
        say(f"exporting {', '.join(missing)} (both encoders, verified)")
        report = export_clip(model.name, src.weights, missing, out=out_dir, device=device, model=model)
        for which, results in report.results.items():
            for result in results:
                cand = next(c for c in cands[which] if c.format == result.format)
                cand.export_s, cand.path = round(result.seconds, 2), result.path if result.ok else None
                if not result.ok:
                    cand.status = "parity-failed" if result.check is not None else "export-failed"
                    cand.reason = result.error or ""
    return cands


def _semantic(cands: dict[str, list[Candidate]], model: ClipModel) -> dict | None:
    """Image rankings for the fixed queries, every runtime with both encoders open vs PyTorch."""
    from modelport.clip.check import semantic_check, semantic_images

    live = {w: {c.id: c.runner for c in cands[w] if c.runner is not None} for w in ENCODERS}
    pairs = {k: (live["image"][k], live["text"][k]) for k in live["image"].keys() & live["text"].keys()}
    if len(pairs) < 2 or "pytorch" not in pairs:
        return None
    report = semantic_check(pairs, "pytorch", semantic_images(model.image_spec))
    return {"queries": list(report.queries), "images": report.images, "passed": report.passed,
            "results": [{"runtime": r.label, "identical": r.identical, "queries": r.queries,
                         "top1_agreement": r.top1_agreement} for r in report.results]}


def run_clip_benchmark(
    source: str | Path,
    *,
    weights: str | Path | None = None,
    arch: str | None = None,
    formats: Sequence[str] | None = None,
    batches: Sequence[int] = DEFAULT_BATCHES,
    device: str = "cpu",
    threads: int | None = None,
    seconds: float = 3.0,
    rounds: int = 5,
    export_dir: Path | None = None,
    export_here: bool = False,
    allow_random: bool = False,
    model: ClipModel | None = None,
    progress: Progress | None = None,
) -> dict:
    """Measure both encoders of a MobileCLIP in every requested runtime on the same seeded inputs.

    ``source``: a MobileCLIP name (``weights`` or ``allow_random``), an open_clip checkpoint, or an encoder
    artifact. Missing exports are written (and verified) into ``export_dir``, the source's folder with
    ``export_here``, else the cache. ``model`` skips building (it must be what ``source`` names).
    """
    import torch

    from modelport.clip.model import build_clip

    say = progress or (lambda _msg: None)
    if threads:
        torch.set_num_threads(threads)
    src = resolve_source(source, weights, arch)
    if model is None:
        say(f"building {src.name}")
        model = build_clip(src.name, src.weights, allow_random=allow_random)
    elif model.name != src.name:
        raise ModelportError(f"the model given is {model.name}, the source names {src.name}")
    if export_dir is None:
        key = model.image_spec.source.sha256 or state_digest(model)
        export_dir = (src.folder or Path.cwd()) if export_here else cache_root() / "exports" / f"clip-{key[:16]}"
    export_dir = Path(export_dir)
    format_ids = [get_format(f).id for f in formats] if formats else [f.id for f in EXPORTABLE]
    cands = _prepare_candidates(src, model, format_ids, export_dir, device, say)
    for which in ENCODERS:
        for cand in cands[which]:
            if cand.format == "pytorch" or cand.path is not None and cand.status in ("ok", "parity-failed"):
                say(f"loading {which} {cand.id}")
                _open(cand, model, which, device, threads)
            cand.size_mb = cand.size_mb or size_mb(cand.path)
        live = [c for c in cands[which] if c.runner is not None]
        reference = next(c.runner for c in live if c.id == "pytorch")
        rows = _inputs(model, which, PARITY_ROWS, seed=4321)
        for cand in live:
            check_parity(cand, reference, rows)
    semantic = _semantic(cands, model)
    gflop = {w: encoder_gflops(model, w) for w in ENCODERS}

    records = []
    for b in batches:
        for which in ENCODERS:
            say(f"timing the {which} encoder at batch {b}")
            live = [c for c in cands[which] if c.runner is not None]
            lat = time_interleaved(live, _inputs(model, which, b, seed=b), seconds, rounds)
            records += [candidate_row(cand, b, lat.get(cand.id), gflop[which], encoder=which)
                        for cand in cands[which]]
    for which in ENCODERS:
        for cand in cands[which]:
            if cand.runner is not None:
                cand.runner.close()
    say("measuring the machine's fp32 matrix-product peak")
    model_info = {"name": model.name, "task": "embed", "source": asdict(model.image_spec.source),
                  "untrained": model.image_spec.is_random, "gflop_per_image": gflop["image"],
                  "gflop_per_item": gflop}
    settings = {"batches": list(batches), "device": device, "threads": threads or torch.get_num_threads(),
                "seconds_per_batch": seconds, "rounds": rounds, "parity_rows": PARITY_ROWS, "formats": format_ids,
                "encoders": list(ENCODERS), "half": False, "int8": False, "calib": None,
                "export_dir": str(export_dir)}
    return {**header("clip", model_info, settings), "rows": records, "semantic": semantic}
