"""FAMILIES: the one list of model families. A family says which sources it claims, builds its modules and
specs, and knows its own verification; every family is exported, listed and refused through this table.

Adding a family is one module (``claims`` and ``export``) plus one line here. Implementations are imported
when used, so ``import modelport`` stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from modelport.errors import ConfigError
from modelport.families.base import BenchRequest, ExportRequest, ExportRow


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    summary: str
    impl: str
    options: tuple[str, ...]  # ExportRequest fields only this family uses
    flags: tuple[str, ...]  # the same, as the CLI spells them (for messages)

    def _module(self) -> Any:
        return importlib.import_module(self.impl)

    def claims(self, source: str | None, request: ExportRequest | BenchRequest) -> bool:
        return bool(self._module().claims(source, request))

    def benchmark(self, source: str | None, request: BenchRequest) -> dict:
        """The benchmark record (docs/benchmark-schema.md) of ``source``'s runtimes, side by side."""
        self.refuse_foreign(request)
        return self._module().benchmark(source, request)

    def export(self, source: str | None, request: ExportRequest) -> list[ExportRow]:
        self.refuse_foreign(request)
        return self._module().export(source, request)

    def hook(self, name: str) -> Callable | None:
        """The family's own ``name`` (``open_runner``, ``verify_paths``, ``read_spec``), or None where the shared
        implementation applies."""
        return getattr(self._module(), name, None)

    def refuse_flags(self, flags: Mapping[str, object], owner: str | None = None) -> None:
        """ConfigError naming each of ``flags`` that is given (not None or False) for a model of this family:
        command-line options of the ``owner`` family (None: of the other families)."""
        given = [flag for flag, value in flags.items() if value is not None and value is not False]
        if given and owner != self.name:
            named = ", ".join(f"{flag} ({owner})" if owner else flag for flag in given)
            raise ConfigError(f"{named}: not an option for a {self.name} model",
                              hint=f"{'it applies' if len(given) == 1 else 'they apply'} to "
                                   f"{owner + ' models' if owner else 'other families'} only: leave "
                                   f"{'it' if len(given) == 1 else 'them'} out")

    def refuse_foreign(self, request: ExportRequest | BenchRequest) -> None:
        """ConfigError naming the options of other families that ``request`` sets."""
        given = request.given()
        foreign = {f"{flag} ({fam.name})" for fam in FAMILIES if fam is not self
                   for option, flag in zip(fam.options, fam.flags) if option in given and option not in self.options}
        if foreign:
            raise ConfigError(f"{', '.join(sorted(foreign))}: not an option for a {self.name} model",
                              hint=f"{self.name} models take: {', '.join(self.flags) or 'the common options only'}")


# Order is the claiming order: the most specific families ask first, the torchreid zoo takes what is left.
FAMILIES: tuple[Family, ...] = (
    Family("factory", "any PyTorch model from a module:function factory and an export YAML",
           "modelport.families.factory_export",
           ("factory", "config", "weights", "trt_builder", "size", "precision", "calib", "int8"),
           ("--factory", "--config", "--weights", "--trt-builder", "--size", "--half/--int8", "--calib",
            "--int8-method/--int8-search")),
    Family("yolo", "Ultralytics YOLO11 detectors, raw or with NMS in the graph", "modelport.families.yolo",
           ("nms", "nms_flavor", "nms_layout", "topk", "iou", "conf", "normalize_boxes", "imgsz", "dynamic_shape",
            "images", "allow_empty", "uint8_input"),
           ("--nms", "--nms-flavor", "--nms-layout", "--topk", "--iou", "--conf", "--normalize-boxes", "--imgsz",
            "--dynamic-shape", "--images", "--allow-empty", "--uint8-input")),
    Family("clip", "open_clip MobileCLIP image and text encoders", "modelport.families.clip",
           ("weights",), ("--weights",)),
    Family("reid", "torchreid ReID embedders (OSNet, ResNet50, DenseNet121, MobileNetV2)", "modelport.families.reid",
           ("arch", "batch", "simplify", "precision", "calib", "int8", "uint8_input"),
           ("--arch", "--batch", "--simplify", "--half/--int8", "--calib", "--int8-method/--int8-search",
            "--uint8-input")),
)
BY_NAME = {f.name: f for f in FAMILIES}


def get_family(name: str) -> Family:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown model family {name!r}", hint=f"choose from: {', '.join(BY_NAME)}") from None


def family_for(source: str | None, request: ExportRequest | BenchRequest | None = None,
               family: str | None = None) -> Family:
    """The family named, or the first that claims ``source`` (asked as for an export when ``request`` is None:
    verify, load, info); claiming never unpickles anything unsafe."""
    if family is not None:
        return get_family(family)
    request = ExportRequest() if request is None else request
    for fam in FAMILIES:
        if fam.claims(source, request):
            return fam
    if source is None:
        raise ConfigError("no model given", hint="give a weights file (e.g. osnet_x0_25_msmt17.pt), a zoo name with "
                          "--allow-random (modelport models lists them), or --factory/--config for your own model")
    raise ConfigError(f"{source}: no model family claims it",
                      hint="give a weights file, a zoo name (modelport models), or --factory/--config")


__all__ = ["BY_NAME", "FAMILIES", "BenchRequest", "ExportRequest", "ExportRow", "Family", "family_for", "get_family"]
