"""ModelSpec: what a model takes and returns, how to preprocess for it, and where it came from.

The spec travels inside every artifact, so nothing downstream of export needs the Python class.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from modelport.errors import CorruptFileError

SPEC_KEY = "modelport"  # metadata key / extra-file stem used in every artifact
SCHEMA_VERSION = 1

Dim = int | str  # a symbolic name ("batch") marks a dynamic dimension


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def batch(self) -> int | None:
        """The fixed batch size, or None when the batch dimension is dynamic."""
        first = self.shape[0]
        return first if isinstance(first, int) else None


@dataclass(frozen=True, slots=True)
class Preprocess:
    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"
    resize: str = "resize"  # plain bilinear resize to (height, width)
    scale: float = 1.0 / 255.0  # applied before mean/std
    # True: the model takes (N, H, W, 3) uint8 RGB and does the cast, scale, mean/std and layout change
    # itself (``modelport export --uint8-input``), so preprocessing on the host only resizes.
    in_graph: bool = False
    # Letterboxing detectors with a dynamic height and width: a batch of same-sized images is padded only to
    # the next multiple of ``stride`` inside (height, width), as Ultralytics' rectangular inference does.
    # 0: always the full (height, width).
    stride: int = 0


@dataclass(frozen=True, slots=True)
class Source:
    """Provenance: ``kind`` is ``weights`` (a checkpoint file) or ``random`` (untrained)."""

    kind: str
    file: str | None = None
    sha256: str | None = None

    def made_from(self, digest: str | None) -> bool | None:
        """The one freshness rule: whether an artifact with this provenance was made from the weights whose
        sha256 is ``digest``; None when either side does not say (a weights file gone, an untrained export)."""
        if digest is None or self.sha256 is None:
            return None
        return self.sha256 == digest


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocess: Preprocess
    source: Source
    labels: tuple[str, ...] = ()
    precision: str = "fp32"
    modelport_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_batch(self) -> int | None:
        """Fixed batch size of the first input, None when dynamic."""
        return self.inputs[0].batch

    @property
    def is_random(self) -> bool:
        return self.source.kind == "random"

    def with_batch(self, batch: int | None) -> "ModelSpec":
        """The same spec with a fixed batch size (or a dynamic one when ``batch`` is None)."""
        dim: Dim = "batch" if batch is None else int(batch)

        def rebatch(t: TensorSpec) -> TensorSpec:
            return replace(t, shape=(dim, *t.shape[1:]))

        return replace(self, inputs=tuple(map(rebatch, self.inputs)), outputs=tuple(map(rebatch, self.outputs)))

    def to_json(self) -> str:
        data = asdict(self)
        data["schema"] = SCHEMA_VERSION
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, origin: str = "<metadata>") -> "ModelSpec":
        try:
            data = json.loads(text)
            data.pop("schema", None)
            return cls(
                name=data["name"],
                task=data["task"],
                inputs=tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in data["inputs"]),
                outputs=tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in data["outputs"]),
                preprocess=Preprocess(
                    **{k: tuple(v) if isinstance(v, list) else v for k, v in data["preprocess"].items()}
                ),
                source=Source(**data["source"]),
                labels=tuple(data.get("labels", ())),
                precision=data.get("precision", "fp32"),
                modelport_version=data.get("modelport_version", ""),
                extra=data.get("extra", {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptFileError(
                f"{origin}: embedded modelport metadata is unreadable ({exc})",
                hint="re-export the model with `modelport export`",
            ) from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
