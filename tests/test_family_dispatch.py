"""The CLI finds a source's family through the registry (``modelport.families``): no command line is rewritten,
and no module outside ``families/`` sniffs a family by its own predicates or name prefixes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

import modelport
from modelport.cli import app
from modelport.errors import ConfigError

PACKAGE = Path(modelport.__file__).parent
SNIFFERS = {"is_detector", "is_clip_source", "CLIP_PREFIX", "route_detection"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _names(tree: ast.AST) -> set[str]:
    """Every identifier a module defines, reads, imports or reaches as an attribute."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.alias):
            found.update({node.name.rsplit(".", 1)[-1], node.asname or ""})
    return found


def test_family_predicates_are_named_only_under_families():
    families = PACKAGE / "families"
    offenders = {str(path.relative_to(PACKAGE)): sorted(SNIFFERS & _names(ast.parse(path.read_text())))
                 for path in _modules() if families not in path.parents}
    assert {path: names for path, names in offenders.items() if names} == {}


def _private_copies(tree: ast.AST) -> set[str]:
    """Functions a module defines that answer a family question itself (``_is_detector``, ``is_clip_source``)."""
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any(word in node.name.lower() for word in ("is_detector", "is_clip"))}


# The clip model code's own check that a name is an open_clip MobileCLIP architecture (what build_clip accepts),
# not a guess at which family claims a source.
MODEL_CODE_CHECKS = {"clip/model.py": {"is_clip_model"}}


def test_no_module_outside_families_keeps_its_own_family_predicate():
    assert _private_copies(ast.parse("def _is_detector(path):\n    return True\n")) == {"_is_detector"}  # can fail
    families = PACKAGE / "families"
    offenders = {}
    for path in _modules():
        if families not in path.parents:
            rel = str(path.relative_to(PACKAGE))
            offenders[rel] = sorted(_private_copies(ast.parse(path.read_text())) - MODEL_CODE_CHECKS.get(rel, set()))
    assert {path: names for path, names in offenders.items() if names} == {}


def _is_argv(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "argv" and isinstance(node.value, ast.Name) \
        and node.value.id == "sys"


def _argv_as_is(node: ast.AST) -> bool:
    """``sys.argv`` or ``sys.argv[1:]``: the command line as typed."""
    return _is_argv(node) or isinstance(node, ast.Subscript) and _is_argv(node.value)


def _rewrites_argv(tree: ast.AST) -> bool:
    """Whether a module assigns or mutates ``sys.argv``, or hands a command (``app(args=...)``) anything but the
    command line as typed (``route(sys.argv[1:])`` picking another command by family)."""
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        if any(_argv_as_is(t) for t in targets):
            return True
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and _is_argv(node.func.value) \
                and node.func.attr in {"insert", "append", "extend", "pop", "remove", "clear", "__setitem__"}:
            return True
        for keyword in node.keywords:
            if keyword.arg == "args" and any(_is_argv(n) for n in ast.walk(keyword.value)) \
                    and not _argv_as_is(keyword.value):
                return True
    return False


def test_the_command_line_is_never_rewritten():
    for rewriting in ("sys.argv = ['modelport', 'detect']", "sys.argv[1:] = ['detect']", "sys.argv.insert(1, 'x')",
                      "app(args=route(sys.argv[1:]), standalone_mode=False)"):  # the check can fail
        assert _rewrites_argv(ast.parse(f"import sys\n{rewriting}")), rewriting
    assert not _rewrites_argv(ast.parse("import sys\napp(args=sys.argv[1:], standalone_mode=False)"))
    assert [str(p.relative_to(PACKAGE)) for p in _modules() if _rewrites_argv(ast.parse(p.read_text()))] == []


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_each_command_shows_the_detector_options_in_their_own_panel():
    for command, flags in {"export": ("--nms", "--model", "--models"), "verify": ("--conf", "--count", "--images"),
                           "bench": ("--imgsz", "--tracks", "--max-batch"), "load": ("--image",)}.items():
        text = _help(command)
        assert "Detectors (Ultralytics YOLO11)" in text, command
        assert all(flag in text for flag in flags), (command, flags)


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def yolo_pt(tmp_path_factory) -> Path:
    pytest.importorskip("ultralytics")
    import warnings

    from modelport.detect.untrained import save_untrained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_untrained(tmp_path_factory.mktemp("dispatch") / "yolo11n.pt", seed=0, imgsz=320)


def test_a_yolo_checkpoint_goes_to_the_detector_commands(yolo_pt, tmp_path):
    from modelport.families import family_for

    assert family_for(str(yolo_pt)).name == "yolo"
    bench = _invoke("bench", yolo_pt, "--half")  # refused by the detector command, before anything is timed
    assert isinstance(bench.exception, ConfigError) and "--half: not an option for a yolo model" in \
        bench.exception.message
    verify = _invoke("verify", yolo_pt, "--tol", "embeddings:max_abs=1")
    assert isinstance(verify.exception, ConfigError) and "--tol" in verify.exception.message
    # No export beside it yet: load opens Ultralytics' model in PyTorch and answers with boxes, not embeddings.
    loaded = _invoke("load", yolo_pt)
    assert loaded.exit_code == 0, (loaded.output, loaded.exception)
    assert "track=" in loaded.output and "detections=" in loaded.output and "embedding=" not in loaded.output


def test_a_clip_source_goes_to_the_clip_commands_and_refuses_detector_options():
    pytest.importorskip("open_clip")
    from modelport.families import BenchRequest, family_for

    assert family_for("MobileCLIP-S0").name == "clip"
    assert family_for("weights.pt", BenchRequest(arch="MobileCLIP-S0")).name == "clip"
    refused = _invoke("bench", "MobileCLIP-S0", "--allow-random", "--imgsz", "320")
    assert isinstance(refused.exception, ConfigError)
    assert "--imgsz (yolo): not an option for a clip model" in refused.exception.message
    clip_only = _invoke("bench", "MobileCLIP-S0", "--allow-random", "--int8")  # the clip command's own refusal
    assert "--int8 not supported" in clip_only.exception.message


def test_a_zoo_weights_file_goes_to_the_shared_commands_and_refuses_detector_options(exported_dir):
    from modelport.families import family_for

    weights = exported_dir / "osnet_x0_25_msmt17.pt"
    assert family_for(str(weights)).name == "reid"
    for args, flag in ((("verify", weights, "--count", "3"), "--count (yolo)"),
                       (("load", weights, "--image", weights), "--image (yolo)"),
                       (("bench", weights, "--conf", "0.3"), "--conf (yolo)"),
                       (("export", weights, "--model", f"{weights}:x:4"), "--model (yolo)"),
                       (("export", "--model", f"{weights}:x:4", "--half"), "--half/--int8 (reid)")):
        result = _invoke(*args)
        assert isinstance(result.exception, ConfigError), (args, result.output, result.exception)
        assert flag in result.exception.message, (args, result.exception.message)
    verified = _invoke("verify", weights, exported_dir / "osnet_x0_25_msmt17.onnx")
    assert verified.exit_code == 0 and "verify vs" in verified.output, (verified.output, verified.exception)
    loaded = _invoke("load", exported_dir / "osnet_x0_25_msmt17.onnx")
    assert loaded.exit_code == 0 and "embedding=512-d" in loaded.output, (loaded.output, loaded.exception)
