"""The models a server holds: every model of a Triton repository, the versions its version policy names,
one modelport runner per instance, a dynamic batcher per version, and request checks against the config."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelport.errors import ModelportError
from modelport.formats import Runner
from modelport.serve.batcher import DynamicBatcher
from modelport.serve.protocol import InputSpec, ProtocolError, check_inputs, datatype_of
from modelport.triton.config import CONFIG_FILE, config_problems, format_of_config, read_config
from modelport.triton.layout import model_dirs, open_version, outputs_by_config, served_versions, versions
from modelport.triton.repo import version_signature

log = logging.getLogger("modelport.serve")


@dataclass(slots=True)
class ServedVersion:
    version: int
    runners: list[Runner]
    batcher: DynamicBatcher

    @property
    def spec(self):
        return self.runners[0].spec


@dataclass(slots=True)
class ServedModel:
    name: str
    config: object | None  # a ModelConfig; None when config.pbtxt is unreadable
    versions: dict[int, ServedVersion] = field(default_factory=dict)
    error: str | None = None  # why the model is not ready

    @property
    def ready(self) -> bool:
        return self.error is None and bool(self.versions)

    @property
    def platform(self) -> str:
        return (self.config.platform or self.config.backend) if self.config is not None else ""

    def version(self, version: str | None) -> ServedVersion:
        if not self.ready:
            raise ProtocolError(f"model {self.name!r} is not ready: {self.error or 'no versions loaded'}", 503)
        if version in (None, ""):
            return self.versions[max(self.versions)]
        if not version.isdigit() or int(version) not in self.versions:
            raise ProtocolError(f"model {self.name!r} has no loaded version {version!r}; "
                                f"loaded: {sorted(self.versions)}", 404)
        return self.versions[int(version)]

    def tensor_metadata(self, tensors) -> list[dict]:
        batch = [-1] if self.config.max_batch_size > 0 else []
        return [{"name": t.name, "datatype": config_dtype_name(t.data_type), "shape": [*batch, *t.dims]}
                for t in tensors]

    @property
    def input_specs(self) -> dict[str, InputSpec]:
        """What requests must declare, from the config: checked before any tensor is allocated."""
        return {t.name: InputSpec(t.name, config_dtype_name(t.data_type), tuple(t.dims), self.config.max_batch_size)
                for t in self.config.input}

    def check_input(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The one input array, after checking name, datatype and shape against the config."""
        check_inputs(self.name, self.input_specs, {n: (datatype_of(a) or str(a.dtype), a.shape)
                                                   for n, a in inputs.items()})
        (array,) = inputs.values()  # every servable model has one input (see load_model)
        return array

    async def infer(self, array: np.ndarray, version: str | None = None) -> tuple[int, dict[str, np.ndarray]]:
        served = self.version(version)
        return served.version, await served.batcher.submit(array)


def config_dtype_name(data_type: int) -> str:
    from tritonclient.grpc import model_config_pb2

    name = model_config_pb2.DataType.Name(data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def _infer_fn(config, runner: Runner):
    def infer(batch: np.ndarray) -> dict[str, np.ndarray]:
        return outputs_by_config(config, runner, runner(batch))

    return infer


def queue_size(config, default: int | None) -> int | None:
    """The config's ``default_queue_policy.max_queue_size`` when set, else the server's default."""
    policy = config.dynamic_batching.default_queue_policy
    return policy.max_queue_size or default


def load_model(model_dir: Path, device: str = "cpu", threads: int | None = None,
               max_queue: int | None = None) -> ServedModel:
    """Load the versions a model's policy names; a broken model is reported, never fatal for the server.

    ``max_queue`` bounds each version's queue unless the config's queue policy does (None: the batcher's
    default, a few full batches)."""
    try:
        config = read_config(model_dir / CONFIG_FILE)
        format_of_config(config)
    except ModelportError as exc:
        return ServedModel(model_dir.name, None, error=exc.message)
    model = ServedModel(model_dir.name, config)
    if len(config.input) != 1:
        model.error = f"modelport serves single-input models; {model_dir.name} has {len(config.input)} inputs"
        return model
    chosen = served_versions(config, versions(model_dir))
    if not chosen:
        model.error = "no version folder matches the version policy"
        return model
    count = sum(g.count or 1 for g in config.instance_group) or 1
    batching = config.dynamic_batching
    for v in chosen:
        try:
            runners = [open_version(model_dir, v, config, device, threads) for _ in range(count)]
            problems = config_problems(config, version_signature(model_dir, v, config))
        except ModelportError as exc:
            model.error = f"version {v}: {exc.message}"
            return model
        if problems:
            model.error = f"version {v}: {'; '.join(problems)}"
            return model
        batcher = DynamicBatcher(
            [_infer_fn(config, r) for r in runners], max_batch=config.max_batch_size,
            preferred=tuple(batching.preferred_batch_size), delay_s=batching.max_queue_delay_microseconds / 1e6,
            enabled=config.HasField("dynamic_batching"), max_queue=queue_size(config, max_queue),
            name=model.name)
        model.versions[v] = ServedVersion(v, runners, batcher)
    return model


class ModelRepository:
    """Every model of a repository as the server holds it."""

    def __init__(self, root: str | Path, device: str = "cpu", threads: int | None = None,
                 max_queue: int | None = None) -> None:
        self.root = Path(root)
        self.device = device
        self.threads = threads
        self.max_queue = max_queue
        self.models: dict[str, ServedModel] = {}

    def open(self, *, strict: bool = False) -> None:
        """Open every model's runners; ``strict`` (Triton's exit-on-error) raises on the first model that cannot
        be served, after closing what was opened, instead of marking it not ready."""
        for model_dir in model_dirs(self.root):
            model = load_model(model_dir, self.device, self.threads, self.max_queue)
            self.models[model.name] = model
            if model.error and strict:
                self._close_runners()
                raise ModelportError(f"{model_dir}: cannot be served: {model.error}",
                                     hint="fix or remove the model, or pass --keep-going to serve the others")
            if model.error:
                log.warning("model %s is not ready: %s", model.name, model.error)

    async def load(self) -> None:
        """Open the models (unless ``open`` already did) and start their batchers."""
        if not self.models:
            self.open()
        for model in self.models.values():
            for served in model.versions.values():
                await served.batcher.start()

    async def close(self) -> None:
        for model in self.models.values():
            for served in model.versions.values():
                await served.batcher.stop()
        self._close_runners()

    def _close_runners(self) -> None:
        for model in self.models.values():
            for served in model.versions.values():
                for runner in served.runners:
                    runner.close()

    def get(self, name: str) -> ServedModel:
        if name not in self.models:
            raise ProtocolError(f"unknown model {name!r}; this server has: {', '.join(sorted(self.models)) or 'none'}",
                                404)
        return self.models[name]

    @property
    def ready(self) -> bool:
        return all(m.ready for m in self.models.values())
