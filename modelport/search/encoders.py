"""Open a CLIP model's image and text encoders from an exported artifact (its sibling found by name), from a
served model's URL (its sibling served under the partner name), or from a model name (open_clip in PyTorch)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from modelport.errors import ModelportError, WeightsNotFoundError
from modelport.formats import FORMATS, Runner, format_of_path
from modelport.search.store import IndexModel

PROBE_SEED = 20240601


@dataclass(slots=True)
class Encoders:
    """The two encoders of one CLIP model; an artifact's sibling is opened only when first needed."""

    info: IndexModel
    device: str = "cpu"
    image_path: Path | str | None = None  # an artifact, or a served model's URL
    text_path: Path | str | None = None
    _runners: dict[str, Runner] = field(default_factory=dict)

    def fingerprint(self) -> IndexModel:
        """``info`` with the probe embedding filled in (runs the image encoder once)."""
        if not self.info.probe:
            from modelport.clip.samples import scene_images

            pre = self.image().spec.preprocess
            probe = self.image().embed(scene_images(1, pre.height, pre.width, seed=PROBE_SEED))[0]
            self.info = replace(self.info, probe=tuple(round(float(v), 6) for v in probe))
        return self.info

    def image(self) -> Runner:
        return self._open("image")

    def text(self) -> Runner:
        return self._open("text")

    def _open(self, which: str) -> Runner:
        if which not in self._runners:
            path = self.image_path if which == "image" else self.text_path
            if path is None:
                raise WeightsNotFoundError(f"no {which} encoder was found next to {self.info.ref}",
                                           hint=f"export both encoders with `modelport export {self.info.clip_model}`")
            if isinstance(path, str):
                from modelport.formats.remote import load as load_remote

                self._runners[which] = load_remote(path)
            else:
                self._runners[which] = format_of_path(path).load(path, self.device)
        return self._runners[which]


def sibling(path: Path, want: str, device: str = "cpu") -> Path | None:
    """The ``want`` (``image`` / ``text``) partner of an encoder artifact: same format first, then any other."""
    fmt = format_of_path(path)
    suffix = max((s for s in fmt.suffixes if path.name.lower().endswith(s)), key=len)
    stem = path.name[: -len(suffix)]
    have = "image" if want == "text" else "text"
    if not stem.endswith(f"_{have}"):
        return None
    base = stem[: -len(have)] + want
    for f in (fmt, *[f for f in FORMATS if f is not fmt and not f.is_weights]):
        for s in f.suffixes:
            candidate = path.parent / f"{base}{s}"
            if candidate.exists() and f.unavailable_reason(device) is None:
                return candidate
    return None


def remote_sibling(url: str, want: str) -> str | None:
    """The ``want`` partner of a served encoder: the same servers, the model name's ``_image``/``_text`` swapped."""
    from modelport.formats.remote import parse_endpoints

    have = "image" if want == "text" else "text"
    endpoints = parse_endpoints(url)
    if not all(e.model.endswith(f"_{have}") for e in endpoints):
        return None
    return ",".join(replace(e, model=e.model[: -len(have)] + want).url for e in endpoints)


def _remote_encoders(url: str, device: str) -> Encoders:
    """Encoders served over KServe v2: the given one opened now (its spec says which it is), its partner later."""
    from modelport.formats.remote import load as load_remote

    runner = load_remote(url)
    spec = runner.spec
    which = spec.extra.get("encoder")
    if which not in ("image", "text"):
        runner.close()
        raise ModelportError(f"{url}: not a CLIP encoder (task {spec.task!r})",
                             hint="serve the *_image and *_text exports of `modelport export MobileCLIP...` "
                                  "(`modelport triton build` keeps their names) and give the *_image model's URL")
    other = remote_sibling(url, "text" if which == "image" else "image")
    image, text = (url, other) if which == "image" else (other, url)
    info = IndexModel(image or url, spec.extra["clip_model"], int(spec.outputs[0].shape[-1]), spec.source.sha256)
    encoders = Encoders(info, device, image, text)
    encoders._runners[which] = runner
    return encoders


def open_encoders(model: str, *, weights: str | Path | None = None, allow_random: bool = False,
                  device: str = "cpu") -> Encoders:
    """Encoders for an image/text encoder artifact path, a served encoder's URL (``http://HOST:8000/NAME_image``),
    or a MobileCLIP name (with ``weights``)."""
    from modelport.formats.remote import is_endpoint

    if is_endpoint(model):
        return _remote_encoders(model, device)
    path = Path(model)
    if path.exists():
        fmt = format_of_path(path)
        spec = fmt.read_spec(path)
        which = spec.extra.get("encoder")
        if which not in ("image", "text"):
            raise ModelportError(f"{path}: not a CLIP encoder export (task {spec.task!r})",
                                 hint="give the *_image or *_text artifact written by `modelport export MobileCLIP...`")
        other = sibling(path, "text" if which == "image" else "image", device)
        image, text = (path, other) if which == "image" else (other, path)
        dim = int(spec.outputs[0].shape[-1])
        info = IndexModel(str((image or path).resolve()), spec.extra["clip_model"], dim, spec.source.sha256)
        return Encoders(info, device, image, text)

    from modelport.clip.model import build_clip, is_clip_model
    from modelport.formats.pytorch import PyTorchRunner

    if not is_clip_model(model):
        what = "file not found" if Path(model).suffix or "/" in model else "not a MobileCLIP model name"
        raise WeightsNotFoundError(f"{model}: {what}; expected an encoder artifact or a MobileCLIP model name",
                                   hint="give an exported *_image artifact, or a name such as MobileCLIP2-S0")
    built = build_clip(model, weights, allow_random=allow_random)
    info = IndexModel(model, model, int(built.image_spec.outputs[0].shape[-1]), built.image_spec.source.sha256,
                      str(Path(weights).resolve()) if weights else None)
    encoders = Encoders(info, device)
    encoders._runners = {"image": PyTorchRunner(built.image, built.image_spec, None, device),
                         "text": PyTorchRunner(built.text, built.text_spec, None, device)}
    return encoders


def reopen(info: IndexModel, device: str = "cpu") -> Encoders:
    """The encoders an index was built with, as recorded in it."""
    if Path(info.ref).exists():
        return open_encoders(info.ref, device=device)
    return open_encoders(info.ref, weights=info.weights, allow_random=info.weights is None and info.sha256 is None,
                         device=device)
