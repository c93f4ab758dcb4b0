"""Write models into a Triton model repository: from weights (exported and verified first), from existing
exports, or from a YAML file listing several models."""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from modelport.atomic import atomic_dir, atomic_write_bytes, atomic_write_text, refuse_existing
from modelport.errors import CorruptFileError, ExportError, ModelportError, VerificationError, WeightsNotFoundError
from modelport.formats import Format, Runner, format_of_path, get_format
from modelport.naming import weights_stem
from modelport.spec import ModelSpec
from modelport.triton.config import (
    CONFIG_FILE,
    LABELS_FILE,
    PYTHON_MODEL_FILE,
    SPEC_FILE,
    TRITON_FORMATS,
    ConfigOptions,
    config_problems,
    config_text,
    default_format,
    format_of_config,
    make_config,
    read_config,
    read_signature,
    triton_backend,
)
from modelport.triton.golden import weights_reference, write_golden
from modelport.triton.layout import check_name, versions

DEFAULT_FORMAT = "onnx"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model to put into a repository."""

    source: str  # weights file, an export, or a zoo name (with allow_random)
    name: str | None = None  # default: the source's file stem
    format: str | None = None  # default: an export's own format; for weights the backend's own, else onnx
    version: int | None = None  # default: one past the newest version present
    batch: int | None = None  # export with a fixed batch (then max_batch_size is 0)
    arch: str | None = None
    allow_random: bool = False
    options: ConfigOptions = field(default_factory=ConfigOptions)


@dataclass(frozen=True, slots=True)
class BuiltVersion:
    name: str
    version: int
    format: str
    path: Path  # the version folder
    config: Path
    backup: Path | None  # where a replaced config.pbtxt was saved
    golden: str = "artifact"  # whose outputs golden/ holds: "pytorch" (the source model) or "artifact" (its own)


_ENTRY_KEYS = {f.name for f in fields(ModelEntry)} - {"options"}
_OPTION_KEYS = {f.name for f in fields(ConfigOptions)}


def read_models_yaml(path: str | Path, defaults: ConfigOptions | None = None) -> list[ModelEntry]:
    """``models: [{source: ..., name: ..., format: ..., max_batch_size: ...}, ...]``; sources are relative
    to the YAML file. Unknown keys are errors, so a typo never silently falls back to a default."""
    from modelport.yaml_file import read_yaml

    path = Path(path)
    data = read_yaml(path, "models file", missing=WeightsNotFoundError)
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list) or not models:
        raise CorruptFileError(f"{path}: expected a non-empty list under 'models:'",
                               hint="models:\n  - source: osnet_x0_25_msmt17.pt\n    name: osnet")
    entries = []
    for index, item in enumerate(models):
        where = f"{path}: models[{index}]"
        if not isinstance(item, dict) or "source" not in item:
            raise CorruptFileError(f"{where}: each model needs a 'source'")
        unknown = set(item) - _ENTRY_KEYS - _OPTION_KEYS
        if unknown:
            raise CorruptFileError(f"{where}: unknown keys {sorted(unknown)}",
                                   hint=f"known: {', '.join(sorted(_ENTRY_KEYS | _OPTION_KEYS))}")
        opts = {k: tuple(v) if isinstance(v, list) else v for k, v in item.items() if k in _OPTION_KEYS}
        source = str(item["source"])
        if (path.parent / source).exists():
            source = str(path.parent / source)
        try:
            options = replace(defaults or ConfigOptions(), **opts)
            entry = ModelEntry(**{k: v for k, v in item.items() if k in _ENTRY_KEYS}, options=options)
        except (TypeError, ValueError, ModelportError) as exc:
            raise CorruptFileError(f"{where}: {exc}") from None
        entries.append(replace(entry, source=source))
    return entries


def default_name(source: str) -> str:
    path = Path(source)
    try:
        fmt = format_of_path(path)
    except ModelportError:
        return path.name
    if fmt.is_weights:
        return weights_stem(path)
    lower = path.name.lower()
    suffix = max((s for s in fmt.suffixes if lower.endswith(s)), key=len)
    return path.name[: -len(suffix)]


def _artifact(entry: ModelEntry, tmp: Path, device: str) -> tuple[Path, Format, ModelSpec, Runner | None]:
    """The verified artifact to copy (the source itself, or a fresh export of it into ``tmp``) and the PyTorch
    model its golden outputs come from (None: the artifact's own, when its weights are not here)."""
    from modelport.export import export_all
    from modelport.formats.pytorch import PyTorchRunner
    from modelport.zoo import build, list_models

    path = Path(entry.source)
    zoo_name = not path.exists() and entry.source in list_models()
    if not path.exists() and not zoo_name:
        raise WeightsNotFoundError(f"{path}: model source not found",
                                   hint="give weights, an export, or a zoo name with --allow-random")
    if zoo_name and not entry.allow_random:
        raise ModelportError(f"{entry.source} is a zoo name, not a file: an untrained model needs --allow-random")
    fmt = None if zoo_name else format_of_path(path)
    if fmt is not None and not fmt.is_weights:
        if entry.format and get_format(entry.format).id != fmt.id:
            raise ModelportError(f"{path} is a {fmt.name} export; it cannot be written as {entry.format}",
                                 hint="give the weights file to export another format")
        if entry.batch is not None:
            raise ModelportError(f"{path}: --batch applies to exports made from weights, not to an existing export")
        if fmt.id not in TRITON_FORMATS:
            raise ModelportError(f"{path}: Triton cannot serve {fmt.name} artifacts")
        triton_backend(entry.options.backend, fmt.id)  # a backend that cannot load it says what to give
        spec = fmt.read_spec(path)
        return path, fmt, spec, weights_reference(spec, device, entry.arch)
    target = get_format(entry.format or default_format(entry.options.backend) or DEFAULT_FORMAT)
    if target.id not in TRITON_FORMATS:
        raise ModelportError(f"Triton cannot serve {target.name} models",
                             hint=f"choose from: {', '.join(TRITON_FORMATS)}")
    triton_backend(entry.options.backend, target.id)  # before the export, which can take minutes
    weights = None if zoo_name else path
    arch = entry.source if zoo_name else entry.arch
    built = build(weights, arch=arch, allow_random=entry.allow_random)  # one module: export and golden outputs
    (result,) = export_all(weights, [target.id], arch=arch, out=tmp, batch=entry.batch, device=device,
                           allow_random=entry.allow_random, built=built)
    if not result.ok:
        kind = VerificationError if result.check is not None else ExportError
        raise kind(f"{entry.source}: {target.name} export failed: {result.error}")
    return result.path, target, target.read_spec(result.path), PyTorchRunner(built.module, built.spec, weights, device)


def _check_backend(entry: ModelEntry) -> None:
    """Refuse a ``--backend`` that cannot load the entry's format before anything is exported or written."""
    path = Path(entry.source)
    fmt = format_of_path(path) if path.exists() else None
    if fmt is None or fmt.is_weights:
        fmt = get_format(entry.format or default_format(entry.options.backend) or DEFAULT_FORMAT)
    if fmt.id in TRITON_FORMATS:
        triton_backend(entry.options.backend, fmt.id)


def _place(artifact: Path, fmt: Format, dest: Path, backend: str = "native") -> None:
    """Copy an artifact into a (staged, empty) version folder under the file names Triton looks for; a
    Python-backend model also gets modelport's ``model.py`` beside it."""
    if backend == "python":
        from modelport.triton.python_backend import model_py

        (dest / PYTHON_MODEL_FILE).write_text(model_py())
    for name, content in fmt.triton_files(artifact, SPEC_FILE).items():  # dest is staged: atomic as a whole
        if isinstance(content, bytes):
            (dest / name).write_bytes(content)
        else:
            shutil.copy2(content, dest / name)


def _backup(path: Path) -> Path:
    """Copy ``path`` to ``<name>.<UTC time>.bak``; a second one in the same second is ``-2``, never over the first."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    data = path.read_bytes()
    for n in itertools.count(1):
        backup = path.with_name(f"{path.name}.{stamp}{'' if n == 1 else f'-{n}'}.bak")
        if not backup.exists():
            return atomic_write_bytes(backup, data)


def _replace_kept(path: Path, text: str) -> Path | None:
    """Write ``text`` to ``path`` atomically; a previous file that differs is backed up first (returned)."""
    backup = _backup(path) if path.is_file() and path.read_text() != text else None
    atomic_write_text(path, text, force=True)
    return backup


def build_model(entry: ModelEntry, repo: str | Path, *, force: bool = False, device: str = "cpu") -> BuiltVersion:
    """Add one version of one model to ``repo``; its config is rebuilt from the artifact.

    Nothing is overwritten silently: an existing version folder needs ``force``, and a replaced
    config.pbtxt (or labels.txt) that differs is kept as ``config.pbtxt.<UTC time>.bak``. The version
    folder and each file appear whole (staged beside them, then renamed).
    """
    repo = Path(repo)
    name = check_name(entry.name or default_name(entry.source))
    model_dir = repo / name
    present = versions(model_dir)
    version = entry.version if entry.version is not None else (present[-1] + 1 if present else 1)
    if version < 1:
        raise ModelportError(f"model versions are positive integers, got {version}")
    vdir = model_dir / str(version)
    hint = "omit --version to add the next version, or pass --force to replace it"
    refuse_existing(vdir, force, hint)  # before the export, which can take minutes
    old = read_config(model_dir / CONFIG_FILE) if (model_dir / CONFIG_FILE).exists() else None
    with tempfile.TemporaryDirectory(prefix="modelport-triton-") as tmp:
        artifact, fmt, spec, reference = _artifact(entry, Path(tmp), device)
        try:
            backend = triton_backend(entry.options.backend, fmt.id)
            if old is not None and (format_of_config(old) != fmt.id or old.backend != backend):
                raise ExportError(f"{model_dir}: model {name!r} is served as {format_of_config(old)} by the "
                                  f"{old.backend} backend; one model has one backend, so a {fmt.id} version for the "
                                  f"{backend} backend cannot join it",
                                  hint="pass --name to add it as another model")
            # The version folder appears whole under its number, or not at all.
            with atomic_dir(vdir, force=force, hint=hint) as staging:
                _place(artifact, fmt, staging, entry.options.backend)
                model_path = staging / TRITON_FORMATS[fmt.id][2]
                config = make_config(name, fmt.id, read_signature(fmt.id, model_path, spec), spec, entry.options)
                _check_siblings(config, model_dir, fmt.id, [v for v in present if v != version])
                text = config_text(config)
                golden = _write_golden(staging, artifact, fmt, reference, device)
        finally:
            if reference is not None:
                reference.close()
    # config.pbtxt and labels.txt are rebuilt for every version; one that differs is kept as a .bak.
    if spec.labels:
        _replace_kept(model_dir / LABELS_FILE, "\n".join(spec.labels) + "\n")
    config_file = model_dir / CONFIG_FILE
    backup = _replace_kept(config_file, text)
    return BuiltVersion(name, version, fmt.id, vdir, config_file, backup, golden)


def _write_golden(staging: Path, artifact: Path, fmt: Format, reference: Runner | None, device: str) -> str:
    """``golden/`` in the staged version folder: seeded inputs and the reference's outputs for them; returns
    whose outputs they are."""
    runner = fmt.load(artifact, device)
    try:
        return write_golden(staging, runner, reference).reference
    finally:
        runner.close()


def _check_siblings(config, model_dir: Path, fmt_id: str, others: list[int]) -> None:
    """Other versions of the model must fit the new config, or Triton would fail to load them."""
    for v in others:
        path = model_dir / str(v) / TRITON_FORMATS[fmt_id][2]
        spec = None
        if fmt_id == "tensorrt":
            from modelport.triton.config import read_plan_spec

            spec = read_plan_spec(path)
        problems = config_problems(config, read_signature(fmt_id, path, spec), where=f"version {v}")
        if problems:
            raise ExportError(f"{model_dir}: the new version does not fit existing versions: {'; '.join(problems)}",
                              hint="pass --name to add it as another model")


def build_repository(entries: list[ModelEntry], repo: str | Path, *, force: bool = False,
                     device: str = "cpu") -> list[BuiltVersion]:
    """Build every entry, all or nothing.

    Every source is checked before anything is written, so a typo in the last entry costs no exports. The
    entries are then built into a staging copy of the model folders they touch (hard links, beside the
    repository), and only when all of them have passed are those folders swapped in, one rename each: a
    failure leaves the repository as it was.
    """
    from modelport.zoo import list_models

    names = set()
    for entry in entries:
        names.add(check_name(entry.name or default_name(entry.source)))
        if not Path(entry.source).exists() and entry.source not in list_models():
            raise WeightsNotFoundError(f"{entry.source}: model source not found",
                                       hint="give weights, an export, or a zoo name with --allow-random")
        _check_backend(entry)
    repo = Path(repo)
    created = not repo.exists()
    repo.mkdir(parents=True, exist_ok=True)
    # Beside the repository (one file system, so renames), hidden: never taken for a model or a repository.
    staging = repo.resolve().parent / f".{repo.resolve().name}.{secrets.token_hex(4)}.staging"
    try:
        staging.mkdir()
        for name in names:
            if (repo / name).exists():
                shutil.copytree(repo / name, staging / name, symlinks=True, copy_function=_link_or_copy)
        try:
            built = [build_model(e, staging, force=force, device=device) for e in entries]
        except ModelportError as exc:  # name the repository the user gave, not the staging copy
            exc.message = exc.message.replace(str(staging), str(repo))
            exc.args = (exc.message,)
            raise
        _swap_in(staging, repo, sorted(names))
    except BaseException:
        if created and not any(repo.iterdir()):
            repo.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [_moved(b, staging, repo) for b in built]


def _link_or_copy(src: str, dst: str) -> None:
    # The staging copy shares the files it does not change: every write in a build replaces a file by rename.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _swap_in(staging: Path, repo: Path, names: list[str]) -> None:
    """Put each staged model folder in place of the repository's; undo the swaps made if one fails."""
    done: list[tuple[Path, Path | None]] = []
    try:
        for name in names:
            target = repo / name
            old = staging / f".{name}.old" if target.exists() else None
            if old is not None:
                os.rename(target, old)
            try:
                os.rename(staging / name, target)
            except BaseException:
                if old is not None:
                    os.rename(old, target)
                raise
            done.append((target, old))
    except BaseException:
        for target, old in reversed(done):
            shutil.rmtree(target)
            if old is not None:
                os.rename(old, target)
        raise


def _moved(built: BuiltVersion, staging: Path, repo: Path) -> BuiltVersion:
    def where(path: Path) -> Path:
        return repo / path.relative_to(staging)

    return replace(built, path=where(built.path), config=where(built.config),
                   backup=None if built.backup is None else where(built.backup))
