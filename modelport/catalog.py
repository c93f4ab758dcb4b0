"""What `modelport models` lists, as data: every zoo model's family, task, output size, input and parameter
count. Reading it imports nothing heavy (no torch, no Ultralytics, no open_clip), so the listing answers at
once; ``tests/test_catalog.py`` builds every model on the meta device and checks these rows against it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CatalogRow:
    name: str
    family: str  # the architecture line (osnet, resnet, yolo11...)
    task: str
    feature_dim: int  # embedding size, or 4 + classes per anchor for detectors
    input: tuple[int, int, int]
    params: int | None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["input"] = list(self.input)
        return data


REID_INPUT = (3, 256, 128)
YOLO_INPUT = (3, 640, 640)
ZOO: tuple[CatalogRow, ...] = (
    CatalogRow("densenet121", "densenet", "embed", 1024, REID_INPUT, 6_953_856),
    CatalogRow("mobilenetv2_x1_0", "mobilenet", "embed", 1280, REID_INPUT, 2_224_960),
    CatalogRow("osnet_x0_25", "osnet", "embed", 512, REID_INPUT, 201_864),
    CatalogRow("osnet_x0_5", "osnet", "embed", 512, REID_INPUT, 630_034),
    CatalogRow("osnet_x0_75", "osnet", "embed", 512, REID_INPUT, 1_285_754),
    CatalogRow("osnet_x1_0", "osnet", "embed", 512, REID_INPUT, 2_169_508),
    CatalogRow("resnet50", "resnet", "embed", 2048, REID_INPUT, 23_508_032),
    CatalogRow("yolo11l", "yolo11", "detect", 84, YOLO_INPUT, 25_372_160),
    CatalogRow("yolo11m", "yolo11", "detect", 84, YOLO_INPUT, 20_114_688),
    CatalogRow("yolo11n", "yolo11", "detect", 84, YOLO_INPUT, 2_624_080),
    CatalogRow("yolo11s", "yolo11", "detect", 84, YOLO_INPUT, 9_458_752),
    CatalogRow("yolo11x", "yolo11", "detect", 84, YOLO_INPUT, 56_966_176),
)


MOBILECLIP_CONFIGS = "MobileCLIP*.json"  # open_clip's config files of its MobileCLIPs


def model_rows() -> list[dict]:
    """The zoo's rows, then the MobileCLIPs open_clip knows (read from its config files, not built)."""
    return [r.to_dict() for r in ZOO] + clip_rows()


def _clip_config_dir() -> Path | None:
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return folder if folder.is_dir() else None


def clip_rows() -> list[dict]:
    """One row per MobileCLIP open_clip knows, from the JSON configs open_clip itself reads (building the
    nine models took ~20 s): name, task, embedding dim, image and text inputs; no parameter count."""
    folder = _clip_config_dir()
    if folder is None:
        if importlib.util.find_spec("open_clip") is not None:
            log.warning("open_clip is installed but has no model_configs folder: MobileCLIPs are not listed")
        return []
    rows = []
    for path in sorted(folder.glob(MOBILECLIP_CONFIGS)):
        cfg = json.loads(path.read_text())
        vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        size = vision.get("image_size", 224)
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        rows.append({"name": path.stem, "family": "clip", "task": "embed+embed_text", "feature_dim": cfg["embed_dim"],
                     "input": [3, height, width], "text_input": [text.get("context_length", 77)], "params": None})
    return rows
