"""The files README.md, docs/detect.md and docs/clip.md name, made for the docs tests (tests/test_docs.py).

Seeded, BatchNorm-calibrated checkpoints in the layouts users have (docs/testing.md): zoo ReID models as BoxMOT
ships them and as torchreid's trainer saves them, Ultralytics detectors saved by Ultralytics, an open_clip
MobileCLIP checkpoint as ``open_clip_model.safetensors``; and a few images standing in for the reader's photos.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from conftest import MARKET1501_CLASSES, calibrated_model, save_plain, save_trainer, untrained_yolo

CLIP_NAME = "MobileCLIP2-S0"
PLATE_LABELS = ("licence_plate", "car", "truck")


def reid_weights(folder: Path) -> None:
    """README's ReID checkpoints: OSNet x0_25 in BoxMOT's layout, OSNet x1_0 in torchreid's trainer layout."""
    save_plain(calibrated_model("osnet_x0_25"), folder / "osnet_x0_25_msmt17.pt", 512)
    save_trainer(calibrated_model("osnet_x1_0"), folder / "osnet_x1_0_market1501.pth.tar", 512, MARKET1501_CLASSES)


def street_photos(folder: Path) -> None:
    """``street.jpg`` and ``frames/``: street scenes standing in for the reader's camera frames."""
    from PIL import Image

    from modelport.detect.samples import street_scenes

    frames = folder / "frames"
    frames.mkdir()
    for i, scene in enumerate(street_scenes(3, seed=5)):
        Image.fromarray(scene[..., ::-1]).save(frames / f"frame_{i:03d}.jpg", quality=90)
    Image.fromarray(street_scenes(1, seed=9)[0][..., ::-1]).save(folder / "street.jpg", quality=90)


def detectors(folder: Path) -> None:
    """docs/detect.md's checkpoints: yolo11n.pt and yolo11s.pt (COCO classes), a custom 3-class best.pt twice."""
    from modelport.detect.untrained import save_untrained

    untrained_yolo(folder / "yolo11n.pt", 640)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_untrained(folder / "yolo11s.pt", "yolo11s", seed=1)
        for path in (folder / "best.pt", folder / "runs" / "detect" / "train" / "weights" / "best.pt"):
            save_untrained(path, "yolo11n", seed=2, labels=PLATE_LABELS)
    street_photos(folder)


def clip_checkpoint(folder: Path) -> None:
    """``open_clip_model.safetensors`` for MobileCLIP2-S0 (train-time weights, calibrated BatchNorm), built offline
    as tests/test_clip.py builds it, and photos for search: ``photos/``, ``a.jpg``, ``b.jpg``, ``photo.jpg``."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from modelport.clip.samples import scene_images, write_scenes
    from modelport.preprocess import prepare
    from modelport.spec import Preprocess
    from modelport.zoo.calibrate import calibrate_batchnorm

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    clip = open_clip.create_model(CLIP_NAME, pretrained=None).eval()
    pre = Preprocess(height=256, width=256, mean=(0.0,) * 3, std=(1.0,) * 3)
    calibrate_batchnorm(clip.visual, [torch.from_numpy(prepare(scene_images(8, 256, 256, seed=3), pre))])
    # safetensors refuses tensors that share memory (tied weights): every tensor is saved as its own copy.
    save_file({k: v.detach().clone().contiguous() for k, v in clip.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    write_scenes(folder / "photos", 12, seed=21)
    for name, path in zip(("a.jpg", "b.jpg", "photo.jpg"), write_scenes(folder / ".scenes", 3, seed=22)):
        path.rename(folder / name)


def detect_doc(folder: Path) -> None:
    detectors(folder)


def clip_doc(folder: Path) -> None:
    clip_checkpoint(folder)


def readme(folder: Path) -> None:
    reid_weights(folder)
    untrained_yolo(folder / "yolo11n.pt", 640)
    street_photos(folder)
    clip_checkpoint(folder)
    factory_model(folder)


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
    import shutil

    import torch

    package = folder / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(Path(__file__).parent / "factory_pkg" / "models.py", package / "models.py")
    torch.manual_seed(3)
    from factory_pkg.models import build

    torch.save(build().state_dict(), folder / "best.pth")
    (folder / "export.yaml").write_text(FACTORY_YAML)
