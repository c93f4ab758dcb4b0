"""The ``yolo`` family: Ultralytics detectors (``yolo11n.pt``, a trained ``best.pt``, a zoo name), exported raw or
with NMS inside the graph and verified against Ultralytics' own predict (``modelport.detect``)."""

from __future__ import annotations

from pathlib import Path

from modelport.families.base import BenchRequest, ExportRequest, ExportRow


def is_detector_source(arg: str) -> bool:
    """A YOLO11 zoo name, a model YAML, an Ultralytics checkpoint (read statically), a missing ``yolo11*.pt``
    (so the error says where to put it), or a detector artifact."""
    from modelport.zoo.yolo import SIZES

    name = Path(arg).name.lower()
    if name in {f"yolo11{s}" for s in SIZES} or name.endswith((".yaml", ".yml")):
        return True
    return is_detector(arg)


def is_detector(path: str | Path) -> bool:
    """Whether ``path`` names a detector: an Ultralytics detection checkpoint, a missing ``yolo11*.pt`` or a
    missing ``.pt`` whose export found beside it is a detector, or a detector artifact."""
    from modelport.detect.discover import candidates, task_of
    from modelport.detect.model import is_zoo_name
    from modelport.detect.safe_load import is_ultralytics_checkpoint
    from modelport.errors import UnsupportedFormatError
    from modelport.formats import format_of_path

    path = Path(path)
    try:
        fmt = format_of_path(path)
    except UnsupportedFormatError:
        return False
    if fmt.is_weights:
        if path.is_file():
            return path.suffix == ".pt" and is_ultralytics_checkpoint(path)
        if is_zoo_name(path):
            return True
        found = candidates(path) if path.suffix == ".pt" else []
        return bool(found) and task_of(found[0]) == "detect"
    return path.exists() and task_of(path) == "detect"


def claims(source: str | None, request: ExportRequest | BenchRequest) -> bool:
    return source is not None and is_detector_source(source)


def export(source: str | None, request: ExportRequest) -> list[ExportRow]:
    from modelport.detect.export import export_detector
    from modelport.detect.graph import FLAVORS, LAYOUTS, NmsConfig
    from modelport.detect.model import CONF, IMGSZ, IOU, DetectorSource
    from modelport.errors import ConfigError
    from modelport.zoo.yolo import SIZES

    assert source is not None
    if request.nms_flavor not in FLAVORS:
        raise ConfigError(f"--nms-flavor must be one of {', '.join(FLAVORS)}, not {request.nms_flavor!r}")
    if request.nms_layout not in LAYOUTS:
        raise ConfigError(f"--nms-layout must be one of {', '.join(LAYOUTS)}, not {request.nms_layout!r}")
    if request.normalize_boxes and not request.nms:
        raise ConfigError("--normalize-boxes applies to the end-to-end track (--nms)")
    if request.nms_layout != "efficientnms" and not request.nms:
        raise ConfigError("--nms-layout applies to the end-to-end track (--nms)")
    iou = IOU if request.iou is None else request.iou
    conf = CONF if request.conf is None else request.conf
    nms = NmsConfig(flavor=request.nms_flavor, topk=request.topk, iou=iou, conf=conf,
                    normalize=request.normalize_boxes, layout=request.nms_layout) if request.nms else None
    if nms is not None and (problem := nms.problem()) is not None:
        raise ConfigError(problem)
    # A bare zoo name stands for its Ultralytics file (``yolo11n`` -> ``yolo11n.pt``).
    named = f"{source}.pt" if source in {f"yolo11{z}" for z in SIZES} and not Path(source).exists() else source
    det = DetectorSource.of(named)
    if request.topk is not None:
        det = DetectorSource.of(det.pt_file, det.name, det.max_batch, request.topk, det.labels)
    images = image_files(request.images) if request.images else None
    results = export_detector(det, request.formats, nms=nms, out=request.out, imgsz=request.imgsz or IMGSZ,
                              verify=request.verify, images=images, verify_conf=request.conf,
                              opset=request.opset or 17, device=request.device, allow_random=request.allow_random,
                              dynamic_hw=request.dynamic_shape, force=request.force, allow_empty=request.allow_empty,
                              uint8_input=request.uint8_input)
    rows = []
    for r in results:
        check = r.check
        found = (f"{check.detections} reference boxes, min IoU {check.min_iou:.3f}, {check.ties} NMS ties"
                 if check is not None else "")
        rows.append(ExportRow("yolo", r.model, r.format, r.path, r.seconds, r.ok, part=r.track, error=r.error,
                              note=r.note, checked="boxes vs Ultralytics predict" if check is not None else "",
                              found=found, detail=r))
    return rows


def image_files(folder: Path) -> list[Path]:
    from modelport.errors import WeightsNotFoundError

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp")) \
        if folder.is_dir() else []
    if not files:
        raise WeightsNotFoundError(f"{folder}: no images (.jpg, .png, .bmp, .webp) found")
    return files


def benchmark(source: str | None, request: BenchRequest) -> dict:
    """Ultralytics' own pipeline and every exported track, image in to boxes out (``modelport.detect.bench``)."""
    from modelport.detect.bench import TRACKS, run_detect_benchmark
    from modelport.detect.model import CONF, IMGSZ

    assert source is not None
    # Formats choose the exported tracks timed beside Ultralytics' own pipeline (default: every track).
    tracks = [t[0] for t in TRACKS if t[1] in request.formats] if request.formats else None
    return run_detect_benchmark(source, batches=request.batches, imgsz=request.imgsz or IMGSZ,
                                conf=CONF if request.conf is None else request.conf, seconds=request.seconds,
                                rounds=request.rounds, tracks=tracks)


def open_runner(path: str | Path, *, format: str | None = None, device: str = "cpu", allow_random: bool = False,
                verbose: bool = True):
    """A DetectRunner: the checkpoint's best export in the detectors' own priority order (``yolo11n.nms.onnx``
    first), else Ultralytics' model in PyTorch."""
    from modelport.detect.discover import open_detector

    return open_detector(path, format=format, device=device, allow_random=allow_random, verbose=verbose)


def verify_paths(reference: Path, others: list[Path], *, conf: float, count: int):
    """Each artifact's boxes against Ultralytics' predict with ``reference``, the ``.pt``; a DetectReport."""
    from modelport.detect.verify import DetectReport, verify_artifacts

    return DetectReport(str(reference), verify_artifacts(reference, others, conf=conf, count=count))


def read_spec(path: Path):
    """The spec of an Ultralytics checkpoint, read through the allow-list (``modelport.detect.safe_load``)."""
    from modelport.detect.model import load_detector

    return load_detector(path).spec
