"""TASKS: what a model's inputs and outputs mean, named by ``spec.task``. A task prepares inputs (crops,
images, text, plain tensors) and decodes outputs the same way for runners, the server and the UI, and gives
the seeded example inputs that tracing, verification and benchmarks use. Implementations are imported
when used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from modelport.errors import ModelportError
from modelport.spec import ModelSpec


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    summary: str
    impl: str  # module with example(spec, rows, seed) and prepare(spec, items)

    def _module(self) -> Any:
        return importlib.import_module(self.impl)

    def example(self, spec: ModelSpec, rows: int, seed: int = 0) -> Any:
        """Seeded, realistic inputs with ``rows`` rows: what exports are traced and verified with."""
        return self._module().example(spec, rows, seed)

    def prepare(self, spec: ModelSpec, items: Any) -> Any:
        """The model's input for ``items`` (crops or images, texts, or arrays by input name)."""
        return self._module().prepare(spec, items)


TASKS: tuple[Task, ...] = (
    Task("embed", "image or crop -> L2-normalised embedding (ReID, CLIP image encoders)", "modelport.tasks.embed"),
    Task("embed_text", "text -> L2-normalised embedding (CLIP text encoders)", "modelport.tasks.embed_text"),
    Task("detect", "image -> boxes, scores, classes (YOLO detectors)", "modelport.tasks.detect"),
    Task("tensors", "plain tensors in and out, by input name (any PyTorch model)", "modelport.tasks.tensors"),
)
BY_NAME = {t.name: t for t in TASKS}


def get_task(name: str) -> Task:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ModelportError(f"unknown task {name!r} in the model spec",
                             hint=f"tasks: {', '.join(BY_NAME)}; re-export the model with this modelport") from None
