"""OpenVINO export (IR converted from ONNX, spec in metadata.json beside the xml) and its runner."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from modelport.errors import CorruptFileError, ExportError
from modelport.formats.base import ExportOptions, Runner
from modelport.spec import ModelSpec

METADATA = "metadata.json"


def _xml_in(directory: Path) -> Path:
    xmls = sorted(directory.glob("*.xml"))
    if len(xmls) != 1:
        raise CorruptFileError(f"{directory}: expected one OpenVINO .xml file, found {len(xmls)}")
    return xmls[0]


def export(module, spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
    import openvino as ov

    from modelport.formats.onnx import write_onnx

    dest.mkdir(parents=True, exist_ok=True)
    stem = dest.name.removesuffix("_openvino_model")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = write_onnx(module, spec, Path(tmp) / "model.onnx", opset=options.opset)
        try:
            model = ov.convert_model(str(onnx_path))
        except Exception as exc:
            raise ExportError(f"{dest}: OpenVINO conversion failed: {exc}") from exc
    # fp32 artifacts keep fp32 weights; save_model would otherwise compress them to fp16.
    ov.save_model(model, str(dest / f"{stem}.xml"), compress_to_fp16=spec.precision == "fp16")
    (dest / METADATA).write_text(spec.to_json())
    return dest


def read_spec(path: Path) -> ModelSpec:
    meta = Path(path) / METADATA
    if not meta.is_file():
        raise CorruptFileError(f"{path}: no {METADATA} in this OpenVINO model folder",
                               hint="export it with `modelport export`")
    return ModelSpec.from_json(meta.read_text(), origin=str(meta))


class OpenVinoRunner(Runner):
    format_id = "openvino"

    def __init__(self, path: Path, device: str = "cpu", hint: str = "LATENCY") -> None:
        import openvino as ov

        spec = read_spec(path)
        super().__init__(spec, path, "cpu")
        core = ov.Core()
        config = {"PERFORMANCE_HINT": hint}
        if spec.precision == "fp32":
            # Some CPUs default to bf16 inference; an fp32 artifact must compute in fp32.
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            self.compiled = core.compile_model(core.read_model(str(_xml_in(Path(path)))), "CPU", config)
        except CorruptFileError:
            raise
        except Exception as exc:
            raise CorruptFileError(f"{path}: OpenVINO cannot load it ({exc})") from None
        self._request = self.compiled.create_infer_request()
        self._outputs = [(o, o.get_any_name()) for o in self.compiled.outputs]

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        result = self._request.infer({0: batch})
        return {name: np.array(result[port]) for port, name in self._outputs}


def load(path: Path, device: str = "cpu") -> OpenVinoRunner:
    return OpenVinoRunner(path, device)
