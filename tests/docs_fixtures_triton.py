"""The files docs/triton.md and docs/int8.md name, made in their scratch folders before their first block.

Seeded, BatchNorm-calibrated weights in the layouts users have (docs/testing.md, TESTING.md): the ReID zoo's
plain state dict, an Ultralytics checkpoint, and the open_clip ``.safetensors`` release layout (made without a
download, as tests/test_clip.py does); images the blocks send (a person crop, a street scene, a folder of
photos, a folder of crops).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from conftest import calibrated_model, save_plain, untrained_yolo

CLIP_NAME = "MobileCLIP2-S0"
YOLO_PX = 320  # the doc exports yolo11n at --imgsz 320: calibrate its BatchNorm at that size


def _write_images(folder: Path, images: list[np.ndarray], stem: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):  # BGR, as modelport's samples are
        assert cv2.imwrite(str(folder / f"{stem}_{i:02d}.jpg"), image)


def _crops(folder: Path, count: int) -> None:
    from modelport.samples import person_tracks

    _write_images(folder / "crops", person_tracks((count + 1) // 2, 2, 256, 128, seed=7)[:count], "crop")


def _clip_safetensors(path: Path) -> None:
    """A BatchNorm-calibrated random MobileCLIP2-S0 saved as open_clip releases it (open_clip_model.safetensors's
    layout: the model's state dict), built without any download."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from modelport.clip.samples import scene_images
    from modelport.preprocess import prepare
    from modelport.spec import Preprocess
    from modelport.zoo.calibrate import calibrate_batchnorm

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = open_clip.create_model(CLIP_NAME, pretrained=None).eval()
    pre = Preprocess(height=256, width=256, mean=(0.0,) * 3, std=(1.0,) * 3)
    calibrate_batchnorm(clip.visual, [torch.from_numpy(prepare(scene_images(8, 256, 256, seed=3), pre))])
    save_file({k: v.detach().contiguous().clone() for k, v in clip.state_dict().items()}, str(path))


def triton_doc(folder: Path) -> None:
    """osnet_x0_25_msmt17.pt, yolo11n.pt, MobileCLIP2-S0.safetensors, person.jpg, street.jpg, photos/, crops/."""
    from modelport.clip.samples import scene_images
    from modelport.detect.samples import street_scenes
    from modelport.samples import person_crops

    save_plain(calibrated_model("osnet_x0_25"), folder / "osnet_x0_25_msmt17.pt", 512)
    untrained_yolo(folder / "yolo11n.pt", YOLO_PX)
    _clip_safetensors(folder / f"{CLIP_NAME}.safetensors")
    assert cv2.imwrite(str(folder / "person.jpg"), person_crops(1, 256, 128, seed=3)[0])
    assert cv2.imwrite(str(folder / "street.jpg"), street_scenes(1, seed=4)[0])
    _write_images(folder / "photos", scene_images(6, 240, 320, seed=11), "photo")
    _crops(folder, 8)


def int8_doc(folder: Path) -> None:
    """osnet_x0_25_msmt17.pt and crops/ (32 person crops, two views per person)."""
    save_plain(calibrated_model("osnet_x0_25"), folder / "osnet_x0_25_msmt17.pt", 512)
    _crops(folder, 32)
