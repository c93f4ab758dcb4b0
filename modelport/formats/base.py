"""The Format table entry and the Runner base class every runtime shares."""

from __future__ import annotations

import importlib
import importlib.util
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from modelport.errors import ExportError, MissingRuntimeError, ModelportError, UnsupportedFormatError
from modelport.formats.feeds import Feed, example_batch  # noqa: F401 - example_batch: its home until callers move
from modelport.formats.torch_call import cuda_available
from modelport.preprocess import ImageLike, prepare
from modelport.spec import ModelSpec, TensorSpec

if TYPE_CHECKING:
    from torch import nn

    from modelport.quantize import Calibration

Key = TypeVar("Key")

# Batches a stream keeps started beyond the one being returned. With one, the two ONNX Runtime streams sat
# idle 40-50 ms per 2.4 s ReID extract run: whenever the caller was late back (a commit's fsyncs, 11-15 ms)
# or one stream ran a run behind the other (preempted by the decoder), the work queue was empty. With two,
# those gaps vanished and extract went from 0.844 to 0.858 of model-only (6 paired rounds, osnet_x0_25;
# 0.853 in the 8-round record after it, 0.852 in the one before).
STREAM_AHEAD = 2


@dataclass(frozen=True, slots=True)
class ExportOptions:
    opset: int = 17
    simplify: bool = False
    device: str = "cpu"
    calib: Path | None = None  # folder of crops for INT8 calibration; None: synthetic crops, with a warning
    calib_count: int = 300  # at most this many calibration images
    force: bool = False  # replace a file at the destination that is not a modelport export
    workspace_gib: float = 4.0  # TensorRT builder workspace
    trt_builder: str = "python"  # TensorRT's Python API, or the `trtexec` command when it is on PATH
    # Prepared once by export_all so every format calibrates and verifies on the same rows.
    calibration: "Calibration | None" = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Format:
    """One artifact format. Implementations live in ``impl`` and are imported only when used."""

    id: str
    name: str
    suffix: str
    impl: str
    packages: tuple[str, ...]  # import names the runtime needs
    install: str  # what to pip install when they are missing
    alt_suffixes: tuple[str, ...] = ()
    is_dir: bool = False
    devices: tuple[str, ...] = ("cpu", "cuda")
    needs_cuda: bool = False
    precisions: tuple[str, ...] = ("fp32",)  # the precisions an artifact of this format can be written in
    is_weights: bool = False  # the source checkpoint (PyTorch), not an exported artifact
    # Triton's (platform, backend, model file name) for a native config; None: Triton cannot serve it natively
    triton: tuple[str, str, str] | None = None
    dynamic_hw: bool = True  # an artifact can take any input height and width (a TorchScript trace cannot)

    @property
    def suffixes(self) -> tuple[str, ...]:
        return (self.suffix, *self.alt_suffixes)

    def artifact_path(self, directory: Path, stem: str, tag: str = "") -> Path:
        """Where an export of ``stem`` goes: ``x.onnx``, ``x.int8.onnx``, ``x_openvino_model/``."""
        if self.is_dir:
            middle = f"_{tag}" if tag else ""
            return directory / f"{stem}{middle}{self.suffix}"
        middle = f".{tag}" if tag else ""
        return directory / f"{stem}{middle}{self.suffix}"

    def matches(self, path: Path) -> bool:
        name = path.name.lower()
        return any(name.endswith(s) for s in self.suffixes) and (path.is_dir() == self.is_dir or not path.exists())

    def unavailable_reason(self, device: str = "cpu") -> str | None:
        """Why this format cannot run on ``device`` here, or None when it can."""
        missing = [p for p in self.packages if importlib.util.find_spec(p) is None]
        if missing:
            return f"{', '.join(missing)} not installed (pip install {self.install})"
        kind = device.split(":")[0]
        if kind not in self.devices:
            return f"{self.name} does not run on {device}"
        # Other formats fall back to the CPU with a warning (see torch_call.torch_device); TensorRT cannot.
        if self.needs_cuda and not cuda_available():
            return "no CUDA device available"
        return None

    def require(self, device: str = "cpu", origin: Path | None = None) -> None:
        reason = self.unavailable_reason(device)
        if reason:
            where = f"{origin}: " if origin else ""
            raise MissingRuntimeError(f"{where}{self.name} is unavailable: {reason}",
                                      hint=f"pip install {self.install}")

    def _module(self) -> Any:
        return importlib.import_module(self.impl)

    def export(self, module: "nn.Module", spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
        return self._module().export(module, spec, dest, options)

    def load(self, path: Path, device: str = "cpu", **options: Any) -> "Runner":
        """Open an artifact; ``options`` are runtime settings (e.g. ``threads``) the format understands."""
        self.require(device, Path(path))
        return self._module().load(Path(path), device, **options)

    def from_onnx(self, onnx_path: Path, spec: ModelSpec, dest: Path, options: ExportOptions) -> Path:
        """The artifact made from an ONNX graph modelport wrote or edited (a detector with NMS inside, say)."""
        convert = getattr(self._module(), "from_onnx", None)
        if convert is None:
            raise ExportError(f"{self.name} cannot be made from an ONNX graph",
                              hint="formats converted from ONNX: onnx, openvino, tensorrt")
        return convert(Path(onnx_path), spec, Path(dest), options)

    def read_spec(self, path: Path) -> ModelSpec:
        return self._module().read_spec(Path(path))

    def triton_files(self, artifact: Path, spec_file: str) -> dict[str, Path | bytes]:
        """The files a Triton version folder holds for ``artifact``, by name: a file to copy or bytes to write.
        Where Triton needs the runtime's bare files, modelport's spec goes beside them as ``spec_file``."""
        own = getattr(self._module(), "triton_files", None)
        if own is not None:
            return own(Path(artifact), spec_file)
        if self.triton is None:
            raise UnsupportedFormatError(f"Triton cannot serve the {self.name} format")
        return {self.triton[2]: Path(artifact)}

    def check_replaceable(self, dest: Path, force: bool = False) -> None:
        """ExportError unless ``dest`` is free, an earlier modelport export, or ``force`` is given."""
        if force or not (dest.exists() or dest.is_symlink()):
            return
        try:
            self.read_spec(dest)
        except Exception:  # noqa: BLE001 - anything unreadable as our artifact is the user's file
            raise ExportError(f"{dest}: exists and is not a modelport {self.name} export; not replaced",
                              hint="choose another --out, or pass --force to replace it") from None

    def publish(self, staged: Path, dest: Path, force: bool = False) -> Path:
        """Move a verified artifact into place in one rename, replacing only an earlier modelport export
        (or anything, with ``force``)."""
        from modelport.atomic import publish

        self.check_replaceable(dest, force)
        return publish(staged, dest, force=True)


class Runner:
    """Runs one model. Subclasses implement ``_infer`` for a batch that fits the model.

    The base class validates input, chunks large batches and zero-pads to a fixed batch size,
    slicing the padding off again, so callers never see a model's batch constraints.
    """

    format_id = "base"

    def __init__(self, spec: ModelSpec, path: Path | None, device: str = "cpu", chunk: int | None = None) -> None:
        self.spec = spec
        self.path = path
        self.device = device
        # Dynamic-batch models still run in bounded chunks so a huge batch cannot exhaust memory.
        self.chunk = chunk or 64
        self.settings: dict[str, Any] = {}  # runtime tuning actually applied, for benchmark records

    @property
    def format(self) -> str:
        return self.format_id

    @property
    def max_batch(self) -> int | None:
        return self.spec.max_batch

    @property
    def model_type(self) -> str:
        return "random" if self.format_id == "pytorch" and self.spec.is_random else self.format_id

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _check(self, batch: np.ndarray, want: TensorSpec | None = None) -> np.ndarray:
        want = want or self.spec.inputs[0]
        batch = np.asarray(batch)
        if batch.ndim != len(want.shape):
            raise ValueError(f"{self.describe()}: expected a {len(want.shape)}-d input {want.name} {want.shape}, "
                             f"got {batch.shape}")
        for got, dim in zip(batch.shape[1:], want.shape[1:]):
            if isinstance(dim, int) and got != dim:
                raise ValueError(f"{self.describe()}: expected input shape {want.shape} ({want.name}), "
                                 f"got {batch.shape}")
        if want.dtype == "uint8":  # pixels, preprocessing inside the graph
            if batch.dtype != np.uint8:
                raise ValueError(f"{self.describe()}: expected uint8 (N, H, W, 3) RGB pixels, got {batch.dtype}; "
                                 "this model normalises inside its graph (preprocess.prepare gives its input)")
        elif want.dtype == "int64":  # token ids (CLIP text encoders)
            if not np.issubdtype(batch.dtype, np.integer):
                raise ValueError(f"{self.describe()}: expected int64 input {want.name}, got {batch.dtype}")
            batch = batch.astype(np.int64, copy=False)
        elif batch.dtype != np.float32:
            if not np.issubdtype(batch.dtype, np.floating):
                raise ValueError(f"{self.describe()}: expected float32 input {want.name}, got {batch.dtype}")
            batch = batch.astype(np.float32)
        return np.ascontiguousarray(batch)

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every input by name, checked against the spec; all with the same number of rows."""
        names = [t.name for t in self.spec.inputs]
        if set(feeds) != set(names):
            raise ValueError(f"{self.describe()}: expected inputs {names}, got {sorted(feeds)}")
        checked = {t.name: self._check(feeds[t.name], t) for t in self.spec.inputs}
        rows = {len(v) for v in checked.values()}
        if len(rows) > 1:
            raise ValueError(f"{self.describe()}: inputs differ in batch size: "
                             + ", ".join(f"{k} {len(v)}" for k, v in checked.items()))
        return checked

    def __call__(self, batch: Feed) -> dict[str, np.ndarray]:
        if isinstance(batch, Mapping):
            if len(self.spec.inputs) > 1:
                return self._call_many(self._check_feeds(batch))
            batch = self._check_feeds(batch)[self.spec.inputs[0].name]
        elif len(self.spec.inputs) > 1:
            raise ValueError(f"{self.describe()}: this model takes {len(self.spec.inputs)} inputs "
                             f"({', '.join(t.name for t in self.spec.inputs)}); pass a dict of arrays by name")
        return self._call_many({"": self._check(batch)}, single=True)

    def _call_many(self, feeds: dict[str, np.ndarray], single: bool = False) -> dict[str, np.ndarray]:
        """Chunk and pad every input alike; ``single``: one unnamed input, run through ``_infer``."""
        first = next(iter(feeds.values()))
        n = len(first)
        size = self.max_batch or self.chunk

        def run(part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return self._infer(part[""]) if single else self._infer_many(part)

        if n == 0:
            probe = self._call_many({k: np.zeros((1, *v.shape[1:]), v.dtype) for k, v in feeds.items()}, single)
            return {k: v[:0] for k, v in probe.items()}
        if self.max_batch is None and n <= size:
            return run(feeds)
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, size):
            part = {k: v[start : start + size] for k, v in feeds.items()}
            real = len(next(iter(part.values())))
            if self.max_batch is not None and real < size:
                part = {k: np.concatenate([v, np.zeros((size - real, *v.shape[1:]), v.dtype)]) for k, v in part.items()}
            out = run(part)
            parts.append({k: v[:real] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _infer_many(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A batch of a model with several inputs; formats that can run one override this."""
        raise UnsupportedFormatError(f"{self.describe()}: the {self.format} runner takes models with one input; "
                                     f"this one has {len(self.spec.inputs)}",
                                     hint="use the onnx, openvino or torchscript export of this model")

    def embed(self, items: Sequence[ImageLike] | np.ndarray, *, prepared: bool = False) -> np.ndarray:
        """L2-normalised (N, D) float32 embeddings for crops, images, paths or a preprocessed batch.

        ``prepared``: ``items`` is already the model's input (``preprocess.prepare``'s output).
        """
        self._check_image_encoder()
        batch = np.asarray(items) if prepared else prepare(items, self.spec.preprocess)
        return self._normalised(self(batch), len(batch))

    def stream(self, batches: Iterable[tuple[Key, np.ndarray]]) -> Iterator[tuple[Key, dict[str, np.ndarray]]]:
        """Outputs for a sequence of ``(key, batch)``, in order.

        For callers that feed batch after batch (``reid extract``). A runtime that can overlap batches
        (``_overlaps``) has each batch started as it arrives, ``STREAM_AHEAD`` batches ahead of the one being
        returned, so the runtime has queued work while the caller handles the last outputs; others run
        batch by batch.
        """
        if not self._overlaps:
            for key, batch in batches:
                yield key, self(batch)
            return
        in_flight: deque = deque()
        try:
            for key, batch in batches:
                in_flight.append((key, self._start(self._check(batch))))
                if len(in_flight) > STREAM_AHEAD:
                    key, started = in_flight.popleft()
                    yield key, self._finished(started)
            while in_flight:
                key, started = in_flight.popleft()
                yield key, self._finished(started)
        finally:
            for _, started in in_flight:
                self._abandon(started)

    # Overlapping runtimes set ``_overlaps`` and give the three steps ``stream`` takes each batch through.
    _overlaps = False

    def _start(self, batch: np.ndarray) -> Any:
        """Start a checked batch without waiting; a dict of outputs when it was simply run."""
        return self(batch)

    def _finished(self, started: Any) -> dict[str, np.ndarray]:
        """Wait for a started batch and return its outputs."""
        return started

    def _abandon(self, started: Any) -> None:
        """Stop or wait out a started batch the caller no longer wants (it left the loop early)."""

    def embed_stream(self, batches: Iterable[tuple[Key, np.ndarray]]) -> Iterator[tuple[Key, np.ndarray]]:
        """``embed(batch, prepared=True)`` for a sequence of ``(key, batch)`` through ``stream``, in order."""
        self._check_image_encoder()
        for key, out in self.stream(batches):
            yield key, self._normalised(out, len(out[self.spec.outputs[0].name]))

    def _normalised(self, out: dict[str, np.ndarray], n: int) -> np.ndarray:
        feats = out[self.spec.outputs[0].name]
        feats = feats.reshape(n, int(np.prod(feats.shape[1:]))).astype(np.float32)  # -1 fails when n == 0
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

    def _check_image_encoder(self) -> None:
        if self.spec.task == "embed_text":
            raise ModelportError(f"{self.describe()}: a CLIP text encoder embeds text, not images",
                                 hint="use runner.embed_text([...]), or load the *_image artifact for images")

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised (N, D) float32 embeddings of ``texts``, tokenised as the spec says (text encoders)."""
        from modelport.tasks.embed_text import tokenize

        return self._normalised(self(tokenize(texts, self.spec)), len(texts))

    def describe(self) -> str:
        where = f" {self.path}" if self.path else ""
        return f"{self.format_id}{where}"

    def close(self) -> None:
        """Release runtime resources (sessions, compiled models, their threads) now, on the calling thread."""

    def release_memory(self) -> None:
        """Hand back what the runtime keeps from its largest call while the runner stays open, so several
        large-batch runners fit in memory at once (at batch 128 at 640 an idle session holds 3-4 GB). Each
        runtime does it its documented way; PyTorch frees its activations after every call anyway."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        batch = self.max_batch if self.max_batch is not None else "dynamic"
        return (f"<{type(self).__name__} {self.spec.name} model_type={self.model_type} batch={batch} "
                f"device={self.device}>")
