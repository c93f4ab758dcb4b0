"""Export Ultralytics detectors: raw and end-to-end tracks, staged, verified against Ultralytics' predict,
then moved into place with ``labels.txt`` beside them."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence, cast

from modelport.detect.graph import FLAVORS, NmsConfig, add_nms
from modelport.detect.model import (
    CONF,
    IMGSZ,
    IOU,
    DetectorSource,
    LoadedDetector,
    e2e_spec,
    e2e_track,
    is_zoo_name,
    load_detector,
)
from modelport.detect.nms import NmsSettings
from modelport.detect.pixels import pixels_in, tag as pixels_tag
from modelport.detect.runner import DetectRunner, UltralyticsReference, load_runtime
from modelport.detect.samples import street_scenes
from modelport.detect.verify import (
    DetectionCheck,
    DetTolerance,
    compare_detections,
    detect_both,
    detected_sizes,
    verification_conf,
)
from modelport.errors import ExportError, ModelportError
from modelport.export import publish_verified
from modelport.formats import FORMATS, ExportOptions, Format, get_format
from modelport.preprocess import ImageLike
from modelport.spec import SPEC_KEY, ModelSpec

RAW_FORMATS = ("onnx", "openvino", "torchscript", "tensorrt")
E2E_FORMATS = {"portable": ("onnx", "openvino"), "tensorrt": ("onnx", "tensorrt")}
TAGS = {"portable": "nms", "tensorrt": "trtnms"}  # yolo11n.nms.onnx, yolo11n.trtnms.onnx / .engine
ULTRALYTICS_TAG = "ultranms"  # the ultralytics output layout: yolo11n.ultranms.onnx, yolo11n_ultranms_openvino_model/
LABELS = "labels.txt"
VERIFY_IMAGES = 8


@dataclass(slots=True)
class DetectExportResult:
    model: str
    format: str
    track: str  # raw | e2e-portable | e2e-tensorrt
    path: Path | None
    seconds: float
    check: DetectionCheck | None = None
    error: str | None = None
    note: str = ""  # e.g. why an artifact could only be checked structurally

    @property
    def ok(self) -> bool:
        return self.error is None and (self.check is None or self.check.passed)


def artifact_path(fmt: Format, out_dir: Path, name: str, flavor: str | None, pixels: bool = False,
                  layout: str = "efficientnms") -> Path:
    """``yolo11n.onnx``, ``yolo11n.nms.onnx``, ``yolo11n.ultranms.onnx`` (ultralytics layout); pixels-in:
    ``yolo11n.uint8in.onnx``, ``yolo11n.nms.uint8in.onnx``, ``yolo11n_nms_uint8in_openvino_model/``."""
    tag = (ULTRALYTICS_TAG if layout == "ultralytics" else TAGS[flavor]) if flavor else ""
    return fmt.artifact_path(out_dir, name, pixels_tag(tag, "_" if fmt.is_dir else ".") if pixels else tag)


def write_labels(directory: Path, labels: Sequence[str]) -> Path:
    """``labels.txt`` (one class name per line, in class order); an existing different file is an error."""
    path = directory / LABELS
    text = "".join(f"{name}\n" for name in labels)
    if path.exists() and path.read_text() != text:
        raise ExportError(f"{path}: exists with other class names; refusing to overwrite it",
                          hint="export models with different classes into different folders (--out DIR)")
    path.write_text(text)
    return path


def _write_e2e_onnx(det: LoadedDetector, spec: ModelSpec, config: NmsConfig, dest: Path, opset: int) -> Path:
    import onnx

    from modelport.formats.onnx import write_onnx

    with tempfile.TemporaryDirectory() as tmp:
        raw = write_onnx(det.module, det.spec, Path(tmp) / "raw.onnx", opset=opset)
        model = onnx.load(str(raw))
    raw_out = det.spec.outputs[0]
    pre = det.spec.preprocess
    # Anchors are a name, and the input size unknown, when the height and width are dynamic.
    add_nms(model, config, raw_out.name, int(raw_out.shape[1]), raw_out.shape[2],
            None if pre.stride else (pre.height, pre.width))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, spec.to_json()
    model.producer_name = "modelport"
    onnx.checker.check_model(model)
    if config.flavor == "portable":
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.save(model, str(dest))
    return dest


def _write_e2e(det: LoadedDetector, fmt: Format, spec: ModelSpec, config: NmsConfig, dest: Path,
               options: ExportOptions) -> Path:
    if fmt.id not in E2E_FORMATS[config.flavor]:
        raise ExportError(f"no end-to-end {config.flavor} track for {fmt.name}",
                          hint=f"formats with NMS inside: {', '.join(E2E_FORMATS[config.flavor])}")
    with tempfile.TemporaryDirectory() as tmp:
        return fmt.from_onnx(_write_e2e_onnx(det, spec, config, Path(tmp) / "e2e.onnx", options.opset), spec, dest,
                             options)


def export_one(det: LoadedDetector, fmt: Format, out_dir: Path, *, nms: NmsConfig | None, options: ExportOptions,
               reference: UltralyticsReference | None, images: Sequence[ImageLike], verify_conf: float,
               allow_empty: bool = False) -> DetectExportResult:
    """One artifact through the one pipeline (``modelport.export.publish_verified``) with the detector's hooks:
    the raw or end-to-end writer, Ultralytics' predict as the reference, and ``labels.txt`` beside it."""
    start = time.perf_counter()
    flavor = nms.flavor if nms else None
    track = e2e_track(flavor, nms.layout) if nms else "raw"
    dest = artifact_path(fmt, out_dir, det.source.name, flavor, det.spec.preprocess.in_graph,
                         nms.layout if nms else "efficientnms")
    result = DetectExportResult(det.source.name, fmt.id, track, None, 0.0)
    # The TensorRT-flavour ONNX only runs inside TensorRT; everything else needs its runtime to be verified.
    runnable = not (flavor == "tensorrt" and fmt.id == "onnx")
    try:
        if runnable or fmt.id != "onnx":
            fmt.require(options.device)
    except ModelportError as exc:
        result.error, result.seconds = exc.message, time.perf_counter() - start
        return result
    spec = det.spec if nms is None else e2e_spec(det.spec, flavor=nms.flavor, topk=nms.topk, iou=nms.iou,
                                                 conf=nms.conf, normalized=nms.normalize, layout=nms.layout)

    def write(staged: Path) -> None:
        try:
            if nms is None:
                fmt.export(det.module, spec, staged, options)
            else:
                _write_e2e(det, fmt, spec, nms, staged, options)
        except ModelportError:
            raise
        except Exception as exc:  # onnx.checker / converters raise their own types
            raise ExportError(f"{type(exc).__name__}: {exc}") from exc

    def judge(staged: Path) -> DetectionCheck:
        # End-to-end graphs are judged at their own thresholds, raw tracks at ``verify_conf``.
        settings = NmsSettings(nms.conf, nms.iou, nms.topk) if nms else NmsSettings(verify_conf, IOU, det.source.topk)
        runner = DetectRunner(load_runtime(fmt, staged, options.device), settings)
        try:
            assert reference is not None
            reference.settings = settings
            theirs, ours = detect_both(reference, runner, images)
            tol = DetTolerance(nms_iou=settings.iou, conf=settings.conf, max_det=settings.topk,
                               allow_empty=allow_empty)
            return compare_detections(theirs, ours, label=str(dest), format=fmt.id, track=track, tol=tol,
                                      sizes=detected_sizes(runner, images))
        except Exception as exc:  # a runtime failure is a verification failure
            return DetectionCheck(str(dest), fmt.id, track, error=f"{type(exc).__name__}: {exc}")
        finally:
            runner.close()

    def labels_inside(staged: Path) -> None:
        if fmt.is_dir:
            write_labels(staged, spec.labels)

    check, error = publish_verified(fmt, dest, options, write, judge if reference is not None and runnable else None,
                                    source=det.source.pt_file, before_publish=labels_inside)
    result.check, result.error = cast("DetectionCheck | None", check), error
    if error is None:
        result.path = dest
        if not fmt.is_dir:
            write_labels(out_dir, spec.labels)
        if not runnable:
            result.note = "graph checked (onnx.checker); runs only in TensorRT: build an engine to verify it"
    result.seconds = time.perf_counter() - start
    return result


def parse_detect_formats(formats: str | Iterable[str] | None, nms: NmsConfig | None,
                         device: str = "cpu") -> list[Format]:
    allowed = E2E_FORMATS[nms.flavor] if nms else RAW_FORMATS
    if formats is None:
        chosen = [get_format(f) for f in allowed]
        # By default: whatever can be written here (TensorRT engines need TensorRT and a GPU).
        return [f for f in chosen if f.id == "onnx" or f.unavailable_reason(device) is None]
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = [get_format(n.strip()) for n in names if n.strip()]
    for fmt in chosen:
        if fmt.id not in allowed:
            track = f"--nms --nms-flavor {nms.flavor}" if nms else "the raw track"
            raise ExportError(f"{fmt.name} is not a format of {track}", hint=f"choose from: {', '.join(allowed)}")
    return chosen


def export_detector(source: DetectorSource | str | Path, formats: str | Iterable[str] | None = None, *,
                    nms: NmsConfig | None = None, out: str | Path | None = None, imgsz: int = IMGSZ,
                    verify: bool = True, images: Sequence[ImageLike] | None = None, verify_conf: float | None = None,
                    opset: int = 17, device: str = "cpu", allow_random: bool = False,
                    dynamic_hw: bool = False, force: bool = False, allow_empty: bool = False,
                    uint8_input: bool = False) -> list[DetectExportResult]:
    """Export one Ultralytics detector to ``formats`` (default: every format of the track usable here).

    ``nms`` None writes the raw track ([B, 4+C, anchors]); an NmsConfig writes the end-to-end track.
    Each artifact is verified against Ultralytics' ``predict`` on ``images`` (default: seeded synthetic
    street scenes) at ``verify_conf`` (raw track; default the NMS default 0.25) or the graph's own thresholds.
    ``allow_random``: a missing ``yolo11<size>.pt`` is built from Ultralytics' YAML with seeded random weights
    (with a warning; the artifacts' spec says ``source: random``). ``dynamic_hw``: inputs of any height and
    width up to imgsz, letterboxed to the smallest stride-32 rectangle as Ultralytics' own predict does
    (ONNX, OpenVINO and TensorRT; TorchScript traces keep a fixed size); verified batched and image by image.
    ``uint8_input``: the graph takes letterboxed (B, H, W, 3) uint8 RGB pixels and casts, scales and transposes
    them itself (``modelport.detect.pixels``); files are tagged ``yolo11n.uint8in.onnx``, verified the same way.
    """
    if nms is not None and nms.flavor not in FLAVORS:
        raise ExportError(f"unknown NMS flavour {nms.flavor!r}", hint=f"choose from: {', '.join(FLAVORS)}")
    if nms is not None and (problem := nms.problem()) is not None:
        raise ExportError(problem)
    if not isinstance(source, DetectorSource):
        source = DetectorSource.of(source)
    if allow_random and not source.pt_file.is_file() and is_zoo_name(source.pt_file):
        from modelport.detect.untrained import untrained_checkpoint

        out = out if out is not None else source.pt_file.parent
        with untrained_checkpoint(source.pt_file, imgsz=imgsz) as random_pt:  # lives until the exports are verified
            return export_detector(replace(source, pt_file=random_pt), formats, nms=nms, out=out, imgsz=imgsz,
                                   verify=verify, images=images, verify_conf=verify_conf, opset=opset, device=device,
                                   dynamic_hw=dynamic_hw, force=force, allow_empty=allow_empty,
                                   uint8_input=uint8_input)
    if nms is not None:
        nms = replace(nms, topk=source.topk if nms.topk is None else nms.topk)
    chosen = parse_detect_formats(formats, nms, device)
    if dynamic_hw and formats is None:
        chosen = [f for f in chosen if f.dynamic_hw]
    if dynamic_hw and any(not f.dynamic_hw for f in chosen):
        fixed = [f for f in chosen if not f.dynamic_hw]
        able = ", ".join(f.id for f in FORMATS if f.dynamic_hw and not f.is_weights)
        raise ExportError(f"{', '.join(f.name for f in fixed)} keeps the input size it was traced at; dynamic "
                          f"height and width are for {able}",
                          hint=f"drop {', '.join(f.id for f in fixed)} from --formats")
    det = load_detector(source, imgsz, dynamic_hw)
    if uint8_input:
        det = pixels_in(det)
    out_dir = Path(out) if out is not None else source.pt_file.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(not f.is_dir for f in chosen):
        write_labels_check(out_dir, det.labels)
    conf = verify_conf if verify_conf is not None else CONF
    reference = UltralyticsReference(source.pt_file, imgsz, labels=det.labels) if verify else None
    images = list(images) if images is not None else street_scenes(VERIFY_IMAGES, seed=1234)
    if reference is not None and chosen and nms is None:
        conf = verification_conf(reference, images, conf)  # raw tracks: a threshold at which boxes exist
    options = ExportOptions(opset=opset, device=device, force=force)
    return [export_one(det, fmt, out_dir, nms=nms, options=options, reference=reference, images=images,
                       verify_conf=conf, allow_empty=allow_empty) for fmt in chosen]


def write_labels_check(directory: Path, labels: Sequence[str]) -> None:
    """Fail before exporting when ``labels.txt`` in ``directory`` holds other class names."""
    path = directory / LABELS
    if path.exists() and path.read_text() != "".join(f"{n}\n" for n in labels):
        raise ExportError(f"{path}: exists with other class names; refusing to overwrite it",
                          hint="export models with different classes into different folders (--out DIR)")


def export_models(sources: Sequence[DetectorSource], formats: str | Iterable[str] | None = None, *,
                  out: str | Path | None = None, **kwargs) -> list[DetectExportResult]:
    """Export several models in one run; with ``out`` each goes to ``out/<name>/`` (its own labels.txt)."""
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ExportError(f"model names must be unique in one run, got {names}")
    results = []
    for src in sources:
        target = Path(out) / src.name if out is not None else None
        results.extend(export_detector(src, formats, out=target, **kwargs))
    return results
