"""The public Python API: one ``export`` for every family, with typed keyword arguments.

``modelport.export("osnet_x0_25_msmt17.pt", "onnx")``, ``modelport.export("yolo11n.pt", nms=True)``,
``modelport.export("MobileCLIP-S0", weights=...)`` and ``modelport.export(factory="mypkg.models:build",
config="export.yaml", weights="best.pth")`` all go through ``modelport.families``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from modelport.errors import ExportError, VerificationError

if TYPE_CHECKING:
    import numpy as np

    from modelport.detect.verify import DetectReport
    from modelport.families import ExportRequest
    from modelport.formats.base import Runner
    from modelport.int8.settings import Int8Settings
    from modelport.verify import Tolerance, VerifyReport

log = logging.getLogger(__name__)


def format_names(formats: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``"onnx,openvino"`` or an iterable of names -> a tuple of names; None stays None (every usable format)."""
    if formats is None:
        return None
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    return tuple(n.strip() for n in names if n.strip())


def export_rows(source: str | Path | None, request: "ExportRequest", family: str | None = None) -> list:
    """Export ``source`` with the family that claims it (or ``family``); one ``ExportRow`` per artifact,
    failures included."""
    from modelport.families import family_for

    text = str(source) if source is not None else None
    chosen = family_for(text, request, family)
    log.info("exporting %s as a %s model", text or request.factory or request.config, chosen.name)
    return chosen.export(text, request)


def export(source: str | Path | None = None, formats: str | Iterable[str] | None = None, *,
           family: str | None = None, out: str | Path | None = None, opset: int | None = None,
           device: str = "cpu", verify: bool = True, force: bool = False, allow_random: bool = False,
           arch: str | None = None, batch: int | None = None, simplify: bool = False, precision: str = "fp32",
           calib: str | Path | None = None, int8: Int8Settings | None = None, uint8_input: bool = False,
           nms: bool = False,
           nms_flavor: str = "portable", nms_layout: str = "efficientnms", topk: int | None = None,
           iou: float | None = None,
           conf: float | None = None, normalize_boxes: bool = False, imgsz: int | None = None,
           dynamic_shape: bool = False, images: str | Path | None = None, allow_empty: bool = False,
           weights: str | Path | None = None, factory: str | None = None, config: str | Path | None = None,
           trt_builder: str | None = None) -> list[Path]:
    """Export any family's model to ``formats`` (default: every format usable here); the verified paths.

    Raises VerificationError / ExportError naming each failed artifact; the successful ones stay written.
    Options of one family (``nms`` for detectors, ``factory``/``config`` for your own models, ``precision``
    for ReID embedders...) are refused by the others with a ConfigError. ``int8`` (``modelport.int8.Int8Settings``)
    chooses the calibration method and the accuracy search of ``precision="int8"``.
    """
    from modelport.families import ExportRequest

    def path(p: str | Path | None) -> Path | None:
        return Path(p) if p is not None else None

    request = ExportRequest(
        formats=format_names(formats), out=path(out), opset=opset, device=device, verify=verify, force=force,
        allow_random=allow_random, arch=arch, batch=batch, simplify=simplify, precision=precision, calib=path(calib),
        int8=int8, uint8_input=uint8_input, nms=nms, nms_flavor=nms_flavor, nms_layout=nms_layout, topk=topk,
        iou=iou, conf=conf,
        normalize_boxes=normalize_boxes, imgsz=imgsz, dynamic_shape=dynamic_shape, images=path(images),
        allow_empty=allow_empty, weights=path(weights), factory=factory, config=path(config), trt_builder=trt_builder)
    rows = export_rows(source, request, family)
    failed = [r for r in rows if not r.ok]
    if failed:
        written = ", ".join(str(r.path) for r in rows if r.ok) or "none"
        detail = "; ".join(f"{r.format}{' ' + r.part if r.part else ''}: {r.error}" for r in failed)
        kind = VerificationError if all(r.error and "failed:" in r.error for r in failed) else ExportError
        raise kind(f"export of {source or factory or config} failed for {detail} (written: {written})",
                   hint="no artifact was left for a failed format")
    return [r.path for r in rows if r.path is not None]


def benchmark(source: str | Path | None = None, *, family: str | None = None,
              formats: str | Iterable[str] | None = None, batches: Iterable[int] | None = None, device: str = "cpu",
              threads: int | None = None, seconds: float = 3.0, rounds: int = 5, allow_random: bool = False,
              arch: str | None = None, precision: str = "fp32", calib: str | Path | None = None,
              imgsz: int | None = None, conf: float | None = None, weights: str | Path | None = None,
              factory: str | None = None, config: str | Path | None = None,
              size: tuple[int, int] | None = None) -> dict:
    """Time every runtime of any family's model side by side on the same inputs; the benchmark record.

    ReID embedders also time their fp16 or int8 variants with ``precision``; detectors are timed image in,
    boxes out (``imgsz``, ``conf``); a factory model (``factory``/``config``/``weights``) on its declared
    inputs, an image-to-image one at ``size`` (width, height; default 1280x720).
    """
    from modelport.families import BenchRequest, family_for

    request = BenchRequest(
        formats=format_names(formats), batches=tuple(batches) if batches is not None else None, device=device,
        threads=threads, seconds=seconds, rounds=rounds, allow_random=allow_random, arch=arch, precision=precision,
        calib=Path(calib) if calib is not None else None, imgsz=imgsz, conf=conf,
        weights=Path(weights) if weights is not None else None, factory=factory,
        config=Path(config) if config is not None else None, size=size)
    text = str(source) if source is not None else None
    chosen = family_for(text, request, family)
    log.info("benchmarking %s as a %s model", text or factory or config, chosen.name)
    return chosen.benchmark(text, request)


def load(path: str | Path, format: str | None = None, device: str = "cpu", *, arch: str | None = None,
         allow_random: bool = False, prefer: str = "priority", batch: int | None = None, verbose: bool = True,
         trust_checkpoint: bool = False) -> Runner:
    """A Runner for an artifact, a weights file (its best usable export, see ``discover.load``) or a served
    model (``http://HOST:PORT/MODEL``, ``grpc://...``; comma-separated: several servers used together).

    Detectors (an Ultralytics ``.pt``, a detector artifact or endpoint) get a DetectRunner with ``.detect()``,
    found in their own priority order (``prefer`` does not apply). ``trust_checkpoint`` unpickles a detector
    checkpoint in full (it can run code): only for files you made; otherwise only its allow-listed model classes
    are read.
    """
    from modelport.formats.remote import is_endpoint

    if trust_checkpoint:
        from modelport.trust import trusted_checkpoints

        with trusted_checkpoints():
            return load(path, format, device, arch=arch, allow_random=allow_random, prefer=prefer, batch=batch,
                        verbose=verbose)
    if is_endpoint(path):
        from modelport.formats.remote import load as load_remote

        runner = load_remote(str(path), device)
    else:
        if Path(path).suffix == ".pt":
            opener = _family_hook(Path(path), "open_runner")
            if opener is not None:  # a family with its own export names (yolo11n.nms.onnx) and priority order
                return opener(path, format=format, device=device, allow_random=allow_random, verbose=verbose)
        from modelport.discover import load as load_local

        runner = load_local(path, format, device, arch=arch, allow_random=allow_random, prefer=prefer, batch=batch,
                            verbose=verbose)
    if runner.spec.task == "detect":  # detectors answer with boxes: modelport.detect's runner
        from modelport.detect.discover import as_detector

        return as_detector(runner, device)
    return runner


def verify(runners: Sequence[Runner | str | Path], reference: Runner | str | Path | None = None, *,
           batch: np.ndarray | None = None, count: int = 8, seed: int = 0,
           tolerance: Tolerance | Mapping[str, Tolerance] | None = None, device: str = "cpu",
           arch: str | None = None, conf: float = 0.25) -> VerifyReport | DetectReport:
    """Compare artifacts with a reference on seeded inputs, the way their family judges them; ``.passed`` says
    whether every one matched.

    Detectors (an Ultralytics ``.pt`` among the paths) are compared box by box with Ultralytics' predict on
    ``count`` synthetic scenes (raw tracks at a threshold ``conf`` or lower where the reference finds boxes);
    MobileCLIP encoder artifacts with open_clip's PyTorch encoder; anything else output by output with
    ``reference`` (default: a weights file among the paths, else the first), at ``tolerance`` (default: fp32's).
    """
    from modelport.verify import FP32, verify as verify_outputs

    tol = FP32 if tolerance is None else tolerance
    items = [r for r in [*runners, reference] if r is not None]
    if all(not isinstance(r, (str, Path)) for r in items):
        return verify_outputs(runners, reference, batch=batch, count=count, seed=seed, tolerance=tol)
    paths = [Path(r) for r in items if isinstance(r, (str, Path))]
    for path in (p for p in paths if p.suffix == ".pt"):  # a family that judges its own way (boxes)
        own = _family_hook(path, "verify_paths")
        if own is not None:
            return own(path, [p for p in paths if p != path], conf=conf, count=count)
    from modelport.clip.verify import verify_runners
    from modelport.discover import open_artifact

    clip = verify_runners(paths, device) if len(paths) == len(items) else None
    if clip is not None:
        return verify_outputs(clip[1], clip[0], batch=batch, count=count, seed=seed, tolerance=tol)

    def opened(r: Runner | str | Path, **options: Any) -> Runner:
        return open_artifact(r, device, **options) if isinstance(r, (str, Path)) else r

    if reference is None:
        from modelport.formats import format_of_path

        weights = [r for r in runners if isinstance(r, (str, Path)) and format_of_path(Path(r)).is_weights]
        reference = weights[0] if weights else runners[0]
        runners = [r for r in runners if r is not reference]
    return verify_outputs([opened(r) for r in runners], opened(reference, arch=arch), batch=batch, count=count,
                          seed=seed, tolerance=tol)


def _family_hook(path: Path, name: str):
    from modelport.families import family_for

    return family_for(str(path)).hook(name)
