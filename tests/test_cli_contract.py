"""The CLI's error contract, for every command of the typer app (walked, so a command added later is covered):
a usage error prints the usage and one ``error:`` line (exit 2); a bad file gets one typed ``error:`` line naming
it and a ``hint:`` line (exit 2); a missing optional package names the extra that installs it (exit 2); no
traceback, ever.

Every case runs ``modelport.cli.main()`` in a process of its own (forked from an interpreter that has imported
the CLI once: tests/cli_forker.py), once on this install and once with the optional packages made unimportable,
as on the default install (README command 1). `.ci/run` runs this file again in a
virtual environment of the default install itself, where the extras are really absent."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import queue
import subprocess
import sys
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main
from PIL import Image

from modelport.cli import EXTRA_OF, app

# The optional packages by import name; click too, which newer typer no longer installs.
BLOCKED = (*sorted(EXTRA_OF), "click")
REALLY_MISSING = {name for name in EXTRA_OF if importlib.util.find_spec(name) is None}
LANE = os.environ.get("MODELPORT_DEFAULT_INSTALL") == "1"  # .ci/run's lane: README command 1's install, nothing else
# This install as it is, and (but in the lane, where this install is the default one) the optional packages blocked.
INSTALLS = ("installed",) if LANE else ("installed", "default")
NOT_FILES = {("search", "query"): "a text query"}  # positional arguments that do not name a file


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]  # {tmp}, {missing}, {folder} and {text} are filled in per run
    kind: str  # usage | file | extra | version
    says: str  # in the one error line (usage, file), or the extra named in the hint (extra)
    install: str = "installed"
    extra: str = ""  # the extra the command needs, where a bad file may meet its absence first

    @property
    def id(self) -> str:
        return f"{self.install}:{' '.join(self.argv)}"


def _tree(command, path: tuple[str, ...] = ()):
    """(path, command, is_group) for every group and command below ``command``, in the app's order."""
    for name, sub in command.commands.items():
        group = hasattr(sub, "commands")
        yield (*path, name), sub, group
        if group:
            yield from _tree(sub, (*path, name))


def _hints(command) -> dict[str, object]:
    return typing.get_type_hints(inspect.unwrap(command.callback))


FILLS = {"--model": "MobileCLIP2-S0"}  # a required option whose value must be valid for a case to reach the file


def _fill(command, hints: dict[str, object]) -> list[str]:
    """Values for the command's required options, so that a case reaches what it tests."""
    argv: list[str] = []
    for param in command.params:
        if param.param_type_name == "option" and param.required:
            value = "{tmp}/" + param.name if hints.get(param.name) is Path else FILLS.get(param.opts[0], "x")
            argv += [param.opts[0], value]
    return argv


NUMBERS = (int, float, typing.Optional[int], typing.Optional[float])
# The extra each command needs where a bad file may meet its absence first (the default install).
COMMAND_EXTRA = {("serve",): "serve", ("ui",): "serve", ("triton", "build"): "serve", ("triton", "validate"): "serve",
                 ("search", "index"): "clip"}


def _cases() -> list[Case]:
    root = typer.main.get_command(app)
    cases = [Case((), "usage", "Missing command."), Case(("exprot", "x.pt"), "usage", "No such command 'exprot'"),
             Case(("--version",), "version", "modelport ")]
    for path, command, group in _tree(root):
        if group:
            cases += [Case(path, "usage", "Missing command."),
                      Case((*path, "exprot"), "usage", "No such command 'exprot'")]
            continue
        hints = _hints(command)
        options = [p for p in command.params if p.param_type_name == "option"]
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        cases.append(Case((*path, "--no-such-option"), "usage", "No such option: --no-such-option"))
        numeric = next((p.opts[0] for p in options if hints.get(p.name) in NUMBERS), None)
        if numeric:
            cases.append(Case((*path, numeric, "abc"), "usage", f"Invalid value for '{numeric}'"))
        if any("--device" in p.opts for p in options):
            cases.append(Case((*path, "--device", "gpu"), "usage", "'gpu' is not a device: give cpu, cuda or cuda:N"))
        if any(p.required for p in command.params):
            cases.append(Case(path, "usage", "Missing "))
        if arguments and path not in NOT_FILES:
            for bad in ("{missing}", "{folder}", "{text}"):
                files = tuple(bad for _ in arguments)
                cases.append(Case((*path, *files, *_fill(command, hints)), "file", bad,
                                  extra=COMMAND_EXTRA.get(path, "")))
    cases += [Case(argv, "extra", extra) for argv, extra in EXTRA_CASES]
    return [Case(c.argv, c.kind, c.says, install, c.extra) for install in INSTALLS for c in cases
            if _applies(c, install)]


def _applies(case: Case, install: str) -> bool:
    """Every case runs on the default install. With the optional packages present the parser is the same
    (every command module is imported at start either way) and so is the file checking of a command that uses
    none: here only the bare and mistyped commands run, and the bad files of the commands that need an extra.
    A missing extra runs where the extra really is missing."""
    if case.kind == "extra":
        return install == "default" or case.says in _extras_missing_here()
    if install == "default" or LANE or case.kind == "version":
        return True
    if case.kind == "usage":
        return not case.argv or (len(case.argv) <= 2 and "exprot" in case.argv)
    return bool(case.extra)


# Commands that need an optional package before anything else can go wrong.
EXTRA_CASES = [
    (("serve", "{repo}"), "serve"),
    (("ui", "--root", "{tmp}"), "serve"),
    (("triton", "build", "osnet_x0_25", "--allow-random", "--repo", "{tmp}/repo"), "serve"),
    (("bench", "http://127.0.0.1:9/v2/models/m"), "serve"),
    (("export", "yolo11n.pt", "--allow-random", "--format", "onnx", "--out", "{tmp}/out"), "yolo"),
    (("detect", "export", "yolo11n.pt", "--allow-random", "--out", "{tmp}/out"), "yolo"),
    (("export", "MobileCLIP2-S0", "--allow-random", "--format", "onnx", "--out", "{tmp}/out"), "clip"),
    (("search", "index", "{images}", "--model", "MobileCLIP2-S0"), "clip"),
    (("export", "osnet_x0_25", "--allow-random", "--format", "tensorrt", "--out", "{tmp}/out"), "tensorrt"),
    (("reid", "extract", "--db", "{tmp}/d.db", "--model", "osnet_x0_25", "--engine", "ray"), "ray"),
]


def _extras_missing_here() -> set[str]:
    return {EXTRA_OF[name] for name in REALLY_MISSING}


CASES = _cases()
FORKER = Path(__file__).with_name("cli_forker.py")


class Forkers:
    """Interpreters that have imported the CLI, per install (tests/cli_forker.py), handed out one per thread."""

    def __init__(self, root: Path, count: int) -> None:
        self.idle: dict[str, queue.SimpleQueue] = {}
        self.procs: list[subprocess.Popen] = []
        site = root / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(
            f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None  # as if not installed\n")
        for install in INSTALLS:
            env = dict(os.environ, COLUMNS="200")
            if install == "default":
                env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
            self.idle[install] = queue.SimpleQueue()
            for _ in range(count):
                proc = subprocess.Popen([sys.executable, str(FORKER)], env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
                self.procs.append(proc)
                self.idle[install].put(proc)

    def run(self, install: str, request: dict) -> int:
        proc = self.idle[install].get()
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())["rc"]
        finally:
            self.idle[install].put(proc)

    def close(self) -> None:
        for proc in self.procs:
            proc.stdin.close()
            proc.wait(timeout=60)


def _run(case: Case, root: Path, forkers: Forkers) -> subprocess.CompletedProcess:
    work = root / str(abs(hash(case.id)))
    (work / "tmp").mkdir(parents=True)
    (work / "osnet_x0_25_msmt17").mkdir()
    (work / "osnet_x0_25_text.pt").write_text("<html>404 Not Found</html>\n")
    (work / "repo" / "m").mkdir(parents=True)  # a model repository, as far as its layout goes
    (work / "repo" / "m" / "config.pbtxt").write_text('name: "m"\nplatform: "onnxruntime_onnx"\n')
    (work / "images").mkdir()
    Image.new("RGB", (8, 8)).save(work / "images" / "a.png")
    names = {"tmp": str(work / "tmp"), "repo": str(work / "repo"), "images": str(work / "images"),
             "missing": "osnet_x0_25_missing.pt", "folder": "osnet_x0_25_msmt17", "text": "osnet_x0_25_text.pt"}
    env = dict(os.environ, COLUMNS="200", MODELPORT_LOG_DIR=str(work / "logs"))
    argv = [a.format(**names) for a in case.argv]
    out, err = work / "stdout.txt", work / "stderr.txt"
    rc = forkers.run(case.install, {"argv": argv, "cwd": str(work), "env": env, "out": str(out), "err": str(err),
                                    "timeout": int(os.environ.get("CLI_CASE_TIMEOUT", "300"))})
    return subprocess.CompletedProcess(argv, rc, out.read_text(errors="replace"), err.read_text(errors="replace"))


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every selected case of this module, run a few at a time (each is a short command)."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]
    root = tmp_path_factory.mktemp("cli-contract")
    workers = max(2, os.cpu_count() or 2)
    forkers = Forkers(root, workers)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = pool.map(lambda case: _run(case, root, forkers), selected)
            return {case.id: result for case, result in zip(selected, done)}
    finally:
        forkers.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_command_keeps_the_error_contract(case: Case, results):
    result = results[case.id]
    shown = f"rc={result.returncode}\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr + result.stdout and "internal error" not in result.stderr, shown
    if case.kind == "version":
        assert result.returncode == 0 and result.stdout.startswith(case.says), shown
        return
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    hints = [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("hint:")]
    assert result.returncode == 2 and len(errors) == 1, shown
    if case.kind == "usage":
        assert result.stderr.startswith("Usage: modelport") and case.says in errors[0], shown
    elif case.kind == "extra":
        assert hints == [f"hint: pip install 'modelport[{case.says}]'"], shown
    else:  # a bad file: named, with a hint; on the default install a command may first miss its extra
        name = case.says.strip("{}")
        file = {"missing": "osnet_x0_25_missing.pt", "folder": "osnet_x0_25_msmt17", "text": "osnet_x0_25_text.pt"}
        lacks_extra = case.install == "default" or case.extra in _extras_missing_here()
        extra_first = lacks_extra and case.extra and hints == [
            f"hint: pip install 'modelport[{case.extra}]'"]
        assert (file[name] in errors[0] or extra_first) and len(hints) == 1, shown


if LANE:
    def test_the_lane_runs_on_the_default_install():
        """Otherwise the lane would quietly be a full install again, with the extras' messages untested."""
        assert REALLY_MISSING == set(EXTRA_OF), f"installed, yet not default: {set(EXTRA_OF) - REALLY_MISSING}"


def test_the_cases_cover_every_command():
    """A walk that found nothing would pass everything: the app's commands are all here, each with its cases."""
    root = typer.main.get_command(app)
    leaves = {path for path, _, group in _tree(root) if not group}
    assert {("export",), ("verify",), ("triton", "build"), ("reid", "compare")} <= leaves and len(leaves) > 20
    covered = {case.argv[:len(path)] for case in CASES for path in leaves if case.argv[:len(path)] == path}
    assert covered == leaves
    assert {c.kind for c in CASES if c.install == INSTALLS[-1]} == {"usage", "file", "extra", "version"}
