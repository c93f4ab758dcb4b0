"""Export of ``factory`` models through the one pipeline (``modelport.export.export_one``: stage, verify
against the PyTorch module on seeded inputs of the declared shapes, move into place)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from modelport.errors import ConfigError
from modelport.families.base import BenchRequest, ExportRequest, ExportRow
from modelport.families.factory_config import FactoryConfig, check_factory, read_config


def claims(source: str | None, request: ExportRequest | BenchRequest) -> bool:
    return request.factory is not None or request.config is not None


def resolve_config(request: ExportRequest | BenchRequest) -> FactoryConfig:
    """The export YAML with the command line's --factory and --weights laid over it."""
    if request.config is None:
        raise ConfigError("--factory needs --config export.yaml: the inputs (names, shapes, dtypes) are declared there",
                          hint="see docs/factory.md for an example config")
    config = read_config(request.config)
    if request.factory is not None:
        check_factory(request.factory)
    return config.with_overrides(factory=request.factory, weights=request.weights)


def export(source: str | None, request: ExportRequest) -> list[ExportRow]:
    from modelport.export import ReferenceCache, export_one, parse_formats, variant_spec
    from modelport.families.base import rows_of
    from modelport.families.factory import build_factory
    from modelport.formats import ExportOptions
    from modelport.naming import weights_stem

    if source is not None:
        raise ConfigError(f"{source}: a factory model takes no positional source",
                          hint="give the checkpoint with --weights and the model with --factory/--config")
    config = resolve_config(request)
    if request.calib is not None and request.precision != "int8":
        raise ConfigError("--calib is only used with --int8")
    if request.int8 is not None and request.precision != "int8":
        raise ConfigError("INT8 settings are only used with precision int8 (--int8)")
    built = build_factory(config, allow_random=request.allow_random)
    # --half / --int8 on the command line win over the YAML's precision.
    asked = request.precision if request.precision != "fp32" else None
    chosen = parse_formats(request.formats or config.formats, request.device)
    rows: list[ExportRow] = []
    if not request.formats:  # the YAML travels between machines: what this one cannot build is reported, not fatal
        for fmt in list(chosen):
            unavailable = fmt.unavailable_reason(request.device)
            note = (f"unavailable here, not exported ({unavailable}); listed in {config.origin}" if unavailable
                    else f"holds {', '.join(fmt.precisions)}: not made in {asked}"
                    if asked and asked not in fmt.precisions else None)
            if note:
                chosen.remove(fmt)
                rows.append(ExportRow("factory", built.spec.name, fmt.id, None, 0.0, True, note=note))
    calibration = None
    if asked == "int8" and chosen:
        spec, calibration = variant_spec(built.spec, "int8", request.calib, int8=request.int8)
        built = type(built)(built.module, spec, built.entry)
    weights = Path(config.weights) if config.weights else None
    out_dir = request.out or config.output_dir or (weights.parent if weights else Path.cwd())
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = weights_stem(weights) if weights else built.spec.name
    options = ExportOptions(opset=request.opset or config.opset, device=request.device, force=request.force,
                            workspace_gib=config.tensorrt.workspace_gib,
                            trt_builder=request.trt_builder or config.tensorrt.builder, calib=request.calib,
                            calibration=calibration)
    references = ReferenceCache()  # formats of one precision share PyTorch's outputs
    for fmt in chosen:
        precision = asked or config.precision_for(fmt.id)
        if precision not in fmt.precisions:
            rows.append(ExportRow("factory", built.spec.name, fmt.id, None, 0.0, False,
                                  error=f"{fmt.name} holds {', '.join(fmt.precisions)}, not {precision}"))
            continue
        one = type(built)(built.module, replace(built.spec, precision=precision), built.entry)
        tag = "" if precision == "fp32" else precision
        result = export_one(one, fmt, fmt.artifact_path(out_dir, stem, tag), options, verify=request.verify,
                            source=weights, references=references,
                            tolerance=calibration.settings.tolerance if calibration and precision == "int8" else None)
        rows += rows_of([result], "factory", built.spec.name)
    return rows


def built_for_bench(request: BenchRequest):
    """The factory model, its example inputs at the size it is timed at: an image-to-image model at 1280x720
    unless ``request.size`` (width, height)."""
    from modelport.families.factory import BENCH_SIZE, bench_spec, build_factory

    built = build_factory(resolve_config(request))
    height, width = (request.size[1], request.size[0]) if request.size else BENCH_SIZE
    return type(built)(built.module, bench_spec(built.spec, (height, width)), built.entry)


def benchmark(source: str | None, request: BenchRequest) -> dict:
    """Every runtime on the model's declared inputs (``built_for_bench``)."""
    from modelport.bench import run_benchmark
    from modelport.families.factory import BENCH_BATCHES

    built = built_for_bench(request)
    return run_benchmark(built.spec.source.file or "", formats=request.formats, batches=request.batches,
                         default_batches=BENCH_BATCHES, device=request.device, threads=request.threads,
                         seconds=request.seconds, rounds=request.rounds, built=built, family="factory",
                         half=request.precision == "fp16", int8=request.precision == "int8", calib=request.calib)
