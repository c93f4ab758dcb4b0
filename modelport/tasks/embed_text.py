"""The ``embed_text`` task: text in (tokenised by the tokenizer the spec names), one embedding per row out."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Sequence

import numpy as np

from modelport.errors import MissingRuntimeError, ModelportError
from modelport.spec import ModelSpec

_COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple")
_THINGS = ("car", "dog", "cat", "bicycle", "house", "tree", "boat", "person", "bird", "flower", "bowl of fruit")
_PLACES = ("on a highway", "in a park", "at night", "on the beach", "in the snow", "in a kitchen", "", "near a river")


@lru_cache(maxsize=8)
def _tokenizer(library: str, model: str, context_length: int):
    if library != "open_clip":
        raise ModelportError(f"unknown tokenizer library {library!r} in the model spec", hint="re-export the model")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the vocabulary ships with open_clip; nothing is fetched
    try:
        import open_clip
    except ImportError:
        raise MissingRuntimeError("open_clip is not installed", hint="pip install 'modelport[clip]'") from None
    return open_clip.get_tokenizer(model, context_length=context_length)


def tokenizer_for(spec: ModelSpec):
    """The tokenizer a text-encoder spec names (open_clip's, built offline from its bundled vocabulary)."""
    info = spec.extra.get("tokenizer")
    if spec.task != "embed_text" or not info:
        raise ModelportError(f"{spec.name}: this artifact is not a text encoder (task {spec.task!r})",
                             hint="use the *_text export of the CLIP model for text")
    return _tokenizer(info["library"], info["model"], int(info["context_length"]))


def tokenize(texts: Sequence[str] | str, spec: ModelSpec) -> np.ndarray:
    """(N, context_length) int64 token ids for ``texts``."""
    if isinstance(texts, str):
        texts = [texts]
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("embed_text takes strings")
    return tokenizer_for(spec)(list(texts)).numpy().astype(np.int64)


def example_captions(count: int, seed: int = 0) -> list[str]:
    """Seeded captions of varied length, so traced graphs and checks see different end-of-text positions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        words = f"a photo of a {rng.choice(_COLOURS)} {rng.choice(_THINGS)} {rng.choice(_PLACES)}".strip()
        if rng.random() < 0.3:
            words += ", taken on a sunny day with a wide angle lens"
        out.append(words)
    return out


def example(spec: ModelSpec, rows: int, seed: int = 0) -> np.ndarray:
    return tokenize(example_captions(rows, seed), spec)


def prepare(spec: ModelSpec, texts: Sequence[str] | str) -> np.ndarray:
    return tokenize(texts, spec)
