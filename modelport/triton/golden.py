"""Golden outputs in a Triton model repository: ``triton build`` writes ``{model}/{version}/golden/`` (seeded
inputs and the reference's outputs for them); ``verify_repository`` re-runs every version with the runtime
installed here, and optionally on a server serving the repository, and says pass or fail per version."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from modelport.errors import CorruptFileError, ModelportError
from modelport.formats import Runner
from modelport.golden import GOLDEN_DIR, GOLDEN_FILES, SELF_CHECK, Golden, check_golden, make_golden, read_golden
from modelport.spec import ModelSpec
from modelport.triton.config import CONFIG_FILE, format_of_config, read_config
from modelport.triton.layout import model_dirs, open_version, served_versions, versions
from modelport.verify import RunnerResult

log = logging.getLogger("modelport.triton")
LOCAL = "local"


def write_golden(folder: Path, runner: Runner, reference: Runner | None = None) -> Golden:
    """Write ``folder/golden/``: seeded inputs for ``runner`` and ``reference``'s outputs on them (the
    artifact's own without a reference). ``folder`` is a staged version folder, so it appears whole."""
    golden = make_golden(runner, reference)
    (folder / GOLDEN_DIR).mkdir(exist_ok=True)
    for name, data in golden.files().items():
        (folder / name).write_bytes(data)
    return golden


def is_golden_dir(path: Path) -> bool:
    """Whether ``path`` is a golden folder as ``write_golden`` leaves it: the three files, no links, nothing else."""
    if path.name != GOLDEN_DIR or path.is_symlink() or not path.is_dir():
        return False
    entries = list(path.iterdir())
    return {p.name for p in entries} <= set(GOLDEN_FILES) and all(p.is_file() and not p.is_symlink() for p in entries)


def weights_reference(spec: ModelSpec, device: str = "cpu", arch: str | None = None) -> Runner | None:
    """The PyTorch model an export was made from, when its weights are still where the spec says and unchanged
    (same sha256); None otherwise, and then the golden outputs are the artifact's own."""
    file = spec.source.file
    if not file or not spec.source.sha256 or not Path(file).is_file():
        return None
    try:
        from modelport.discover import open_artifact
        from modelport.zoo import list_models  # imports torch

        reference = open_artifact(file, device, arch=arch or (spec.name if spec.name in list_models() else None))
    except (ModelportError, ImportError) as exc:  # no PyTorch here, or weights its family cannot rebuild
        log.info("golden outputs of %s are the artifact's own: its weights %s do not open (%s)", spec.name, file,
                 getattr(exc, "message", exc))
        return None
    if not spec.source.made_from(reference.spec.source.sha256):
        reference.close()
        log.info("golden outputs of %s are the artifact's own: %s changed since the export", spec.name, file)
        return None
    return reference


@dataclass(slots=True)
class GoldenCheck:
    """One version of one model re-run on its golden inputs, here (``target`` "local") or on a server (its URL)."""

    model: str
    version: int | None
    target: str
    # "pytorch", or "artifact (self-check)": the artifact's own outputs at build time (no unchanged weights), so a
    # pass says only that this runtime computes what the build's did; None when the golden set could not be read
    reference: str | None
    result: RunnerResult
    self_check: bool = False  # the golden outputs are the artifact's own: a wrong export would pass too

    @property
    def passed(self) -> bool:
        return self.result.passed


def _checked(model: str, version: int | None, target: str, golden: Golden, result: RunnerResult) -> GoldenCheck:
    reference = f"{golden.reference}{SELF_CHECK}" if golden.self_check else golden.reference
    return GoldenCheck(model, version, target, reference, result, golden.self_check)


def _failed(model: str, version: int | None, target: str, problem: str, golden: Golden | None = None) -> GoldenCheck:
    label = model if version is None else f"{model}/{version}"
    result = RunnerResult(label, "-", None, error=problem)
    if golden is None:
        return GoldenCheck(model, version, target, None, result)
    return _checked(model, version, target, golden, result)


def _check_local(model_dir: Path, version: int, config, golden: Golden, device: str) -> GoldenCheck:
    name = model_dir.name
    try:
        runner = open_version(model_dir, version, config, device)
    except (ModelportError, ImportError, RuntimeError, ValueError) as exc:  # the runtime is missing or refuses it
        return _failed(name, version, LOCAL, f"cannot open the artifact here: {getattr(exc, 'message', exc)}", golden)
    try:
        return _checked(name, version, LOCAL, golden, check_golden(runner, golden, f"{name}/{version}"))
    finally:
        runner.close()


def _check_remote(url: str, name: str, version: int, golden: Golden) -> GoldenCheck:
    from modelport.formats.remote import load as load_remote

    endpoint = f"{url}/{name}/versions/{version}"
    try:
        runner = load_remote(endpoint)
    except (ModelportError, ImportError) as exc:
        return _failed(name, version, url, getattr(exc, "message", str(exc)), golden)
    try:
        return _checked(name, version, url, golden, check_golden(runner, golden, endpoint))
    finally:
        runner.close()


def _verify_model(model_dir: Path, device: str, url: str | None, local: bool) -> list[GoldenCheck]:
    name, target = model_dir.name, LOCAL if local else str(url)
    try:
        config = read_config(model_dir / CONFIG_FILE)
        format_of_config(config)
    except ModelportError as exc:
        return [_failed(name, None, target, exc.message)]
    present = versions(model_dir)
    if not present:
        return [_failed(name, None, target, "no version folders")]
    served = served_versions(config, present) if url else []
    if url and not served:
        return [_failed(name, None, str(url), "the config's version policy serves none of the versions present")]
    checks = []
    for version in present:
        if not local and version not in served:
            continue
        try:
            golden = read_golden(model_dir / str(version))
        except ModelportError as exc:
            checks.append(_failed(name, version, target, exc.message))
            continue
        if local:
            checks.append(_check_local(model_dir, version, config, golden, device))
        if version in served:
            checks.append(_check_remote(str(url), name, version, golden))
    return checks


def _server_url(url: str) -> str:
    """``scheme://host:port`` of a KServe server; the model and version are added per model."""
    from modelport.formats.remote import parse_endpoints

    base = url.strip().rstrip("/")
    parse_endpoints(f"{base}/model")  # a malformed URL (or one naming a model) is refused before any work
    return base


def verify_repository(repo: str | Path, device: str = "cpu", *, url: str | None = None,
                      local: bool = True) -> list[GoldenCheck]:
    """Re-run every version of every model of ``repo`` on its golden inputs: with the runtime installed here
    (``local``) and/or through the server at ``url`` (``http://HOST:8000`` or ``grpc://HOST:8001``; the
    versions its config serves). Failures are rows, never skipped: a model without golden outputs fails."""
    if not local and url is None:
        raise ModelportError("nothing to verify: the local check is off and no server URL is given",
                             hint="pass --url http://HOST:8000, or drop --no-local")
    base = _server_url(url) if url is not None else None
    dirs = model_dirs(Path(repo))
    if not dirs:
        raise CorruptFileError(f"{repo}: holds no model folders", hint="build one with `modelport triton build`")
    return [check for model_dir in dirs for check in _verify_model(model_dir, device, base, local)]


def is_repository(path: Path) -> bool:
    """Whether ``path`` looks like a Triton model repository: a folder with a model folder holding config.pbtxt."""
    path = Path(path)
    return path.is_dir() and any((d / CONFIG_FILE).is_file() for d in path.iterdir()
                                 if d.is_dir() and not d.name.startswith("."))


__all__ = ["GoldenCheck", "is_golden_dir", "is_repository", "verify_repository", "weights_reference", "write_golden"]
