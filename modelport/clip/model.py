"""MobileCLIP through open_clip: build (checkpoint or seeded random weights), re-parameterise, and wrap the
image and text encoders as exportable modules with their specs."""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from modelport.errors import (
    MissingRuntimeError,
    RandomWeightsNotAllowedError,
    UnknownArchitectureError,
    WeightsMismatchError,
)
from modelport.spec import ModelSpec, Preprocess, Source, TensorSpec, sha256_file
from modelport.version import __version__

IMAGE_MAX_BATCH = 128
TEXT_MAX_BATCH = 64
RANDOM_SEED = 0  # random builds are seeded so that indexing and querying agree on the same "model"


def _open_clip():
    # No model file is ever fetched: weights come from a local file or are random.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import open_clip
    except ImportError:
        raise MissingRuntimeError("open_clip is not installed", hint="pip install 'modelport[clip]'") from None
    return open_clip


@contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def clip_models() -> list[str]:
    """The MobileCLIP architectures this open_clip knows (MobileCLIP-S1/S2/B, MobileCLIP2-S0/S2/S3/S4/B/L-14)."""
    return sorted(m for m in _open_clip().list_models() if m.startswith("MobileCLIP"))


def is_clip_model(name: str) -> bool:
    return name.startswith("MobileCLIP") and name in clip_models()


@dataclass(frozen=True, slots=True)
class ClipNorm:
    """The image normalisation a model was trained with, from open_clip's *pretrained* config."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tag: str  # the pretrained tag the values come from
    interpolation: str
    resize_mode: str


def clip_norm(name: str) -> ClipNorm:
    """Mean/std of the released weights: a model built without a pretrained tag reports the OpenAI values,
    which are wrong for MobileCLIP-S1/S2/B and MobileCLIP2-S0/S2/B (trained without normalisation)."""
    oc = _open_clip()
    tags = oc.list_pretrained_tags_by_model(name)
    if not tags:
        raise UnknownArchitectureError(f"open_clip has no pretrained config for {name!r}",
                                       hint=f"choose one of: {', '.join(clip_models())}")
    cfg = oc.get_pretrained_cfg(name, tags[0])
    mean = tuple(float(v) for v in cfg.get("mean", oc.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", oc.OPENAI_DATASET_STD))
    return ClipNorm(mean, std, tags[0], cfg.get("interpolation", "bicubic"), cfg.get("resize_mode", "shortest"))


def has_reparameterizable_blocks(model: nn.Module) -> bool:
    """True when ``model`` contains MobileOne / FastViT blocks, merged or not."""
    return any(hasattr(m, "reparameterize") for m in model.modules())


def has_train_time_branches(model: nn.Module) -> bool:
    """True while some MobileOne / FastViT block has not been merged (its ``reparam_conv`` is still None)."""
    return any(hasattr(m, "reparameterize") and getattr(m, "reparam_conv", None) is None for m in model.modules())


def reparameterize(model: nn.Module) -> nn.Module:
    """Merge MobileOne / FastViT train-time branches (timm's ``reparameterize_model``) in place.

    Idempotent: timm's blocks fail when merged twice, so a merged model is returned as it is.
    """
    from timm.utils.model import reparameterize_model

    if not has_train_time_branches(model):
        return model.eval()
    return reparameterize_model(model.eval(), inplace=True)


class ImageEncoder(nn.Module):
    """images in [0, 1] -> L2-normalised embeddings; the model's mean/std is folded in."""

    def __init__(self, clip: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.visual = clip.visual
        # Mean 0 / std 1 (most MobileCLIPs) adds no ops to the graph.
        self.normalise = any(m != 0.0 for m in mean) or any(s != 1.0 for s in std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            images = (images - self.mean) / self.std
        return F.normalize(self.visual(images), dim=-1)


class TextEncoder(nn.Module):
    """text tokens -> L2-normalised embeddings: open_clip's ``encode_text(normalize=True)`` of a MobileCLIP
    (a CustomTextCLIP), holding only the text tower so the artifact carries no image weights."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.text = clip.text

    def _encode(self, text_tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(text_tokens), dim=-1)

    def forward(self, text_tokens: torch.Tensor) -> torch.Tensor:
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            return self._encode(text_tokens)
        # Attention's inference fast path is a fused op ONNX cannot express; trace the plain ops instead.
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            return self._encode(text_tokens)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)


@dataclass(frozen=True)
class ClipModel:
    """A built MobileCLIP: the open_clip model, its two encoders and their specs."""

    name: str
    clip: nn.Module
    image: ImageEncoder
    text: TextEncoder
    image_spec: ModelSpec
    text_spec: ModelSpec
    norm: ClipNorm


def _specs(name: str, clip: nn.Module, norm: ClipNorm, source: Source) -> tuple[ModelSpec, ModelSpec]:
    size = clip.visual.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    dim = int(clip.text.output_dim)  # every MobileCLIP is a CustomTextCLIP: both towers project to this
    context = int(clip.context_length)
    common = {"clip_model": name, "pretrained_tag": norm.tag, "reparameterized": True}
    # Only /255 happens outside the graph; the trained mean/std is inside it (recorded for reference).
    pre = Preprocess(height=height, width=width, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                     resize="center_crop" if norm.resize_mode == "shortest" else "resize")
    image = ModelSpec(
        name=name, task="embed",
        inputs=(TensorSpec("images", "float32", ("batch", 3, height, width)),),
        outputs=(TensorSpec("image_embeddings", "float32", ("batch", dim)),),
        preprocess=pre, source=source, modelport_version=__version__,
        extra={**common, "encoder": "image", "folded_mean": list(norm.mean), "folded_std": list(norm.std),
               "interpolation": norm.interpolation, "max_batch": IMAGE_MAX_BATCH, "trt_max_batch": IMAGE_MAX_BATCH},
    )
    text = ModelSpec(
        name=name, task="embed_text",
        inputs=(TensorSpec("text_tokens", "int64", ("batch", context)),),
        outputs=(TensorSpec("text_embeddings", "float32", ("batch", dim)),),
        preprocess=pre, source=source, modelport_version=__version__,
        extra={**common, "encoder": "text", "max_batch": TEXT_MAX_BATCH, "trt_max_batch": TEXT_MAX_BATCH,
               "tokenizer": {"library": "open_clip", "model": name, "context_length": context}},
    )
    return image, text


def _load_weights(clip: nn.Module, path: Path, name: str) -> Source:
    from modelport.zoo.checkpoints import RANDOM_MARKER, load_into, read_checkpoint

    extras: dict = {}
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        from modelport.errors import CorruptFileError, WeightsNotFoundError

        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: weights file not found")
        try:
            state = load_file(str(path))
        except Exception as exc:
            raise CorruptFileError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        state, extras = read_checkpoint(path)
    try:
        load_into(clip, state, origin=path, arch=name, ignored_prefixes=())
    except WeightsMismatchError as exc:
        raise WeightsMismatchError(exc.message, hint=f"is {path.name} an open_clip checkpoint of {name}?") from None
    kind = "random" if extras.get(RANDOM_MARKER) == "random" else "weights"
    return Source(kind=kind, file=str(path.resolve()), sha256=sha256_file(path))


def build_clip(name: str, weights: str | Path | None = None, *, allow_random: bool = False,
               prepare: Callable[[nn.Module], object] | None = None) -> ClipModel:
    """Build ``name`` from an open_clip checkpoint (or seeded random weights when allowed), re-parameterised.

    ``prepare(clip)`` runs before re-parameterisation (tests use it to calibrate BatchNorm of random models).
    """
    if not is_clip_model(name):
        raise UnknownArchitectureError(f"unknown CLIP model {name!r}",
                                       hint=f"choose one of: {', '.join(clip_models())}")
    oc = _open_clip()
    norm = clip_norm(name)
    if weights is None and not allow_random:
        raise RandomWeightsNotAllowedError(
            f"no weights given for {name}",
            hint=f"downloads are not possible here: pass the open_clip checkpoint of {name} with --weights "
                 "(e.g. open_clip_model.safetensors from "
                 f"{oc.get_pretrained_cfg(name, norm.tag).get('hf_hub', 'the hub')}), "
                 "or --allow-random for an untrained model")
    torch.manual_seed(RANDOM_SEED)
    with _quiet_root_logger():
        # open_clip logs "No pretrained weights loaded" for every offline build; ours says so itself.
        clip = oc.create_model(name, pretrained=None).eval()
    if weights is None:
        from modelport.zoo import RandomWeightsWarning

        warnings.warn(f"{name} is running with RANDOM, UNTRAINED weights (seed {RANDOM_SEED}): its embeddings "
                      "mean nothing for search", RandomWeightsWarning, stacklevel=2)
        source = Source(kind="random")
    else:
        source = _load_weights(clip, Path(weights), name)
    if prepare is not None:
        prepare(clip)
    reparameterize(clip)
    image_spec, text_spec = _specs(name, clip, norm, source)
    return ClipModel(name, clip, ImageEncoder(clip, norm.mean, norm.std).eval(), TextEncoder(clip).eval(),
                     image_spec, text_spec, norm)
