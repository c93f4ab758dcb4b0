"""The files README.md and docs/*.md name, made in each document's scratch folder before its first block.

Seeded, BatchNorm-calibrated checkpoints in the layouts users have (docs/testing.md): zoo ReID models as BoxMOT
ships them and as torchreid's trainer saves them, Ultralytics detectors saved by Ultralytics, open_clip's
``.safetensors`` release layout (made without a download, as tests/test_clip.py does); and images standing in for
the reader's photos, frames and crops. Each checkpoint is built once per test session and copied into every
document that names it: several documents name the same ones, and building them is most of a fixture's time.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from conftest import MARKET1501_CLASSES, calibrated_model, save_plain, save_trainer, untrained_yolo

CLIP_NAME = "MobileCLIP2-S0"
PLATE_LABELS = ("licence_plate", "car", "truck")
_BUILT = Path(tempfile.mkdtemp(prefix="modelport-docs-fixtures-"))
atexit.register(shutil.rmtree, _BUILT, ignore_errors=True)


@functools.cache
def _built(name: str) -> Path:
    """The checkpoint ``name`` built once for the session (in a private folder), by its recipe in RECIPES."""
    path = _BUILT / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        RECIPES[name](path)
    return path


def _place(name: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(_built(name), dest)


def _clip_safetensors(path: Path) -> None:
    """A BatchNorm-calibrated random MobileCLIP2-S0 in open_clip's release layout (its state dict)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from modelport.clip.samples import scene_images
    from modelport.preprocess import prepare
    from modelport.spec import Preprocess
    from modelport.zoo.calibrate import calibrate_batchnorm

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    clip = open_clip.create_model(CLIP_NAME, pretrained=None).eval()
    pre = Preprocess(height=256, width=256, mean=(0.0,) * 3, std=(1.0,) * 3)
    calibrate_batchnorm(clip.visual, [torch.from_numpy(prepare(scene_images(8, 256, 256, seed=3), pre))])
    # safetensors refuses tensors that share memory (tied weights): every tensor is saved as its own copy.
    save_file({k: v.detach().clone().contiguous() for k, v in clip.state_dict().items()}, str(path))


def _yolo(name: str, seed: int, labels: tuple[str, ...] | None = None) -> Callable[[Path], object]:
    from modelport.detect.untrained import save_untrained

    return lambda path: save_untrained(path, name, seed=seed, **({"labels": labels} if labels else {}))


RECIPES: dict[str, Callable[[Path], object]] = {
    # BoxMOT's layout (a plain state dict with MSMT17's classifier) and torchreid's trainer layout
    "osnet_x0_25_msmt17.pt": lambda p: save_plain(calibrated_model("osnet_x0_25"), p, 512),
    "osnet_x1_0_market1501.pth.tar": lambda p: save_trainer(calibrated_model("osnet_x1_0"), p, 512,
                                                            MARKET1501_CLASSES),
    "yolo11n.pt": lambda p: untrained_yolo(p, 640),
    "yolo11n_320.pt": lambda p: untrained_yolo(p, 320),  # calibrated at the size docs/triton.md exports
    "yolo11s.pt": _yolo("yolo11s", seed=1),
    "plates.pt": _yolo("yolo11n", seed=2, labels=PLATE_LABELS),
    "open_clip_model.safetensors": _clip_safetensors,
}


def _write_images(folder: Path, images: list[np.ndarray], stem: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):  # BGR, as modelport's samples are
        assert cv2.imwrite(str(folder / f"{stem}_{i:02d}.jpg"), image)


def _crops(folder: Path, count: int) -> None:
    from modelport.samples import person_tracks

    _write_images(folder / "crops", person_tracks((count + 1) // 2, 2, 256, 128, seed=7)[:count], "crop")


def street_photos(folder: Path) -> None:
    """``street.jpg`` and ``frames/``: street scenes standing in for the reader's camera frames."""
    from modelport.detect.samples import street_scenes

    _write_images(folder / "frames", street_scenes(3, seed=5), "frame")
    assert cv2.imwrite(str(folder / "street.jpg"), street_scenes(1, seed=9)[0])


def clip_files(folder: Path) -> None:
    """``open_clip_model.safetensors`` and photos for search: ``photos/``, ``a.jpg``, ``b.jpg``, ``photo.jpg``."""
    from modelport.clip.samples import write_scenes

    _place("open_clip_model.safetensors", folder / "open_clip_model.safetensors")
    write_scenes(folder / "photos", 12, seed=21)
    for name, path in zip(("a.jpg", "b.jpg", "photo.jpg"), write_scenes(folder / ".scenes", 3, seed=22)):
        path.rename(folder / name)


FACTORY_YAML = """\
factory: mypkg.models:build
args: {channels: 8, embed_dim: 16}
inputs:
  - {name: target, shape: [1, 3, 64, 96], dtype: float32, range: [0, 1]}
  - {name: source, shape: [1, 16], dtype: float32, range: [-1, 1]}
outputs: [swapped]
dynamic_axes:
  target: {0: batch, 2: height, 3: width}
  source: {0: batch}
  swapped: {0: batch, 2: height, 3: width}
"""


def factory_model(folder: Path) -> None:
    """The reader's own model for README's factory lines: ``mypkg/models.py`` (tests/factory_pkg's image-to-image
    model), its seeded ``best.pth`` (a plain state dict) and ``export.yaml``."""
    import torch

    package = folder / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(Path(__file__).parent / "factory_pkg" / "models.py", package / "models.py")
    torch.manual_seed(3)
    from factory_pkg.models import build

    torch.save(build().state_dict(), folder / "best.pth")
    (folder / "export.yaml").write_text(FACTORY_YAML)


def readme(folder: Path) -> None:
    _place("osnet_x0_25_msmt17.pt", folder / "osnet_x0_25_msmt17.pt")
    _place("osnet_x1_0_market1501.pth.tar", folder / "osnet_x1_0_market1501.pth.tar")
    _place("yolo11n.pt", folder / "yolo11n.pt")
    street_photos(folder)
    clip_files(folder)
    factory_model(folder)


def detect_doc(folder: Path) -> None:
    """yolo11n.pt and yolo11s.pt (COCO classes), a custom 3-class best.pt (also where Ultralytics' training puts
    it), frames."""
    for name in ("yolo11n.pt", "yolo11s.pt"):
        _place(name, folder / name)
    for dest in (folder / "best.pt", folder / "runs" / "detect" / "train" / "weights" / "best.pt"):
        _place("plates.pt", dest)
    street_photos(folder)


def clip_doc(folder: Path) -> None:
    clip_files(folder)


def triton_doc(folder: Path) -> None:
    """osnet_x0_25_msmt17.pt, yolo11n.pt, MobileCLIP2-S0.safetensors, person.jpg, street.jpg, photos/, crops/."""
    from modelport.clip.samples import scene_images
    from modelport.detect.samples import street_scenes
    from modelport.samples import person_crops

    _place("osnet_x0_25_msmt17.pt", folder / "osnet_x0_25_msmt17.pt")
    _place("yolo11n_320.pt", folder / "yolo11n.pt")
    _place("open_clip_model.safetensors", folder / f"{CLIP_NAME}.safetensors")
    assert cv2.imwrite(str(folder / "person.jpg"), person_crops(1, 256, 128, seed=3)[0])
    assert cv2.imwrite(str(folder / "street.jpg"), street_scenes(1, seed=4)[0])
    _write_images(folder / "photos", scene_images(6, 240, 320, seed=11), "photo")
    _crops(folder, 8)


def int8_doc(folder: Path) -> None:
    """osnet_x0_25_msmt17.pt and crops/ (32 person crops, two views per person)."""
    _place("osnet_x0_25_msmt17.pt", folder / "osnet_x0_25_msmt17.pt")
    _crops(folder, 32)


def reid_doc(folder: Path) -> None:
    _place("osnet_x0_25_msmt17.pt", folder / "osnet_x0_25_msmt17.pt")


def ui_doc(folder: Path) -> None:
    _place("osnet_x0_25_msmt17.pt", folder / ".home" / "models" / "osnet_x0_25_msmt17.pt")


FIXTURES: dict[str, Callable[[Path], None]] = {
    "README.md": readme, "docs/detect.md": detect_doc, "docs/clip.md": clip_doc, "docs/triton.md": triton_doc,
    "docs/int8.md": int8_doc, "docs/reid.md": reid_doc, "docs/ui.md": ui_doc,
}
