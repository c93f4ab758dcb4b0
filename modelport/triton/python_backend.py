"""What the Python-backend ``model.py`` modelport writes does, kept free of Triton's own module so it can be
read and tested here: open a repository version from the ``args`` Triton passes, warm it up, and run the
requests of one batch together."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import CorruptFileError, ModelportError
from modelport.triton.config import PARAM_THREADS, _pb2, config_dtype, config_spec
from modelport.triton.layout import open_version, outputs_by_config

log = logging.getLogger("modelport.triton")
TEMPLATE = Path(__file__).with_name("python_model.py")


def model_py() -> str:
    """The ``model.py`` text every Python-backend version folder gets (this package's python_model.py)."""
    return TEMPLATE.read_text()


def parse_config(text: str):
    """The model config JSON Triton hands a Python model -> a ``ModelConfig`` message."""
    from google.protobuf import json_format

    try:
        return json_format.Parse(text, _pb2().ModelConfig(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise CorruptFileError(f"the model config Triton passed is not a ModelConfig ({exc})") from None


def _quiet_dlpack_capsules() -> None:
    """Triton's Python backend marks a DLPack capsule it consumed ``used_dlpack``; NumPy's capsule destructor
    only knows ``used_dltensor`` and reports an unraisable ValueError for every output. The tensor was taken
    and is freed by its owner, so that one report is dropped; every other goes to the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "_modelport_dlpack", False):
        return

    def hook(report) -> None:
        if isinstance(report.exc_value, ValueError) and "PyCapsule_GetPointer" in str(report.exc_value):
            return
        previous(report)

    hook._modelport_dlpack = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


class TritonArgsModel:
    """One model instance: modelport's runner for one version, opened from Triton's ``initialize`` args."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.config = parse_config(args["model_config"])
        kind = str(args.get("model_instance_kind", "CPU")).upper()
        device = f"cuda:{int(args.get('model_instance_device_id') or 0)}" if kind == "GPU" else "cpu"
        params = self.config.parameters
        threads = int(params[PARAM_THREADS].string_value) if PARAM_THREADS in params else None
        model_dir, version = Path(args["model_repository"]), int(args["model_version"])
        if len(self.config.input) != 1:
            raise ModelportError(f"model {self.config.name!r}: modelport's Python model takes one input, the "
                                 f"config has {len(self.config.input)}")
        self.runner = open_version(model_dir, version, self.config, device, threads)
        spec = config_spec(self.config)
        have = [t.name for t in self.runner.spec.outputs]
        if spec is not None and [t.name for t in spec.outputs] != have:
            raise CorruptFileError(f"{model_dir}/{version}: the artifact's outputs {have} are not the config "
                                   f"spec's {[t.name for t in spec.outputs]}",
                                   hint="rebuild the model with `modelport triton build --backend python`")
        self.input_name = self.config.input[0].name
        self.batched = self.config.max_batch_size > 0
        self.dtypes = {o.name: config_dtype(o.data_type) for o in self.config.output}
        _quiet_dlpack_capsules()
        self.warm_up()
        log.info("model %s version %s ready on %s (%s)", self.config.name, version, device, self.runner.format)

    def warm_up(self) -> None:
        """One request shaped by the config before Triton reports the model ready (first runs allocate)."""
        from modelport.triton.repo import request_for

        self.infer(request_for(self.config, self.runner.spec))

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = outputs_by_config(self.config, self.runner, self.runner(batch))
        return {name: np.ascontiguousarray(value, dtype=self.dtypes[name]) for name, value in outputs.items()}

    def run(self, arrays: list[np.ndarray]) -> list[dict[str, np.ndarray] | Exception]:
        """Outputs for each request of one execution: batched requests run as one batch and are split back;
        a failure fails the requests it concerns, each with the error."""
        if not arrays:
            return []
        if self.batched and len(arrays) > 1:
            try:
                outputs = self.infer(np.concatenate(arrays))
            except (ValueError, ModelportError):  # one bad request must not fail the others: run them alone
                return [self._one(a) for a in arrays]
            bounds = np.cumsum([len(a) for a in arrays])[:-1]
            parts = {name: np.split(value, bounds) for name, value in outputs.items()}
            return [{name: np.ascontiguousarray(p[i]) for name, p in parts.items()} for i in range(len(arrays))]
        return [self._one(a) for a in arrays]

    def _one(self, array: np.ndarray) -> dict[str, np.ndarray] | Exception:
        try:
            return self.infer(array)
        except Exception as exc:  # noqa: BLE001 - the request gets the error; the instance keeps serving
            log.warning("model %s: request failed: %s", self.config.name, exc)
            return exc

    def close(self) -> None:
        self.runner.close()
