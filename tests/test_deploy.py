"""deploy/compose.yaml (docs/scale.md) cannot rot silently: it parses, every modelport command in it parses with
this modelport's CLI, and the services, images and extras it names agree with each other and with pyproject."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def modelport_commands(compose: dict) -> dict[str, list[str]]:
    return {name: s["command"] for name, s in compose["services"].items()
            if isinstance(s.get("command"), list) and s["command"][0] == "modelport"}


def parse_cli(args: list[str]) -> tuple[object, dict]:
    """The modelport subcommand ``args`` names and its parsed parameters; typer's usage error if they do not
    parse (typer 0.28 carries its own click, so groups are told by their subcommands, not by click's class)."""
    from modelport.cli import app

    command, rest = typer.main.get_command(app), list(args)
    while hasattr(command, "commands"):
        command = command.commands[rest.pop(0)]
    with command.make_context("modelport", rest) as ctx:  # parses (names, types, choices), invokes nothing
        return command, dict(ctx.params)


def test_every_modelport_command_in_the_compose_file_parses_with_this_cli(compose):
    commands = modelport_commands(compose)
    assert set(commands) >= {"extract", "ray-driver"}
    for name, command in commands.items():
        _, params = parse_cli(command[1:])
        assert params["db"] and params["model"], name
    assert parse_cli(commands["ray-driver"][1:])[1]["engine"] == "ray"


def test_a_flag_this_cli_lacks_is_caught():
    with pytest.raises(typer.TyperException, match="No such option: --workers"):
        parse_cli(["reid", "extract", "--db", "x.db", "--model", "m.onnx", "--workers", "4"])


def test_the_commands_name_services_of_the_file(compose):
    services = compose["services"]
    for name, command in modelport_commands(compose).items():
        _, params = parse_cli(command[1:])
        assert urlsplit(params["db"]).hostname in services, name
        triton = services["triton-1"]["command"]
        repo = next(a.split("=", 1)[1] for a in triton if a.startswith("--model-repository="))
        for endpoint in params["model"].split(","):
            url = urlsplit(endpoint)
            assert url.hostname in services and url.port == 8000, endpoint
            assert any(v.endswith(f":{repo}:ro") for v in services[url.hostname]["volumes"]), endpoint
        if params["engine"] == "ray":
            host, port = urlsplit(params["address"]).hostname, urlsplit(params["address"]).port
            assert host in services and f"--ray-client-server-port={port}" in services[host]["command"]
    worker = services["ray-worker"]["command"]
    assert next(a for a in worker if a.startswith("--address=")).split("=")[1].split(":")[0] in services


def test_images_match_the_stack_modelport_pins(compose):
    services = compose["services"]
    assert re.fullmatch(r"pgvector/pgvector:pg1[4-9]", services["postgres"]["image"])
    for name in ("triton-1", "triton-2"):
        assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", services[name]["image"])
    # pyproject's extras, read as text (tomllib is not in Python 3.10, which modelport supports)
    pyproject = (ROOT / "pyproject.toml").read_text()
    extras = set(re.findall(r"^([a-z]+) = \[", pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0],
                            re.M))
    (pin,) = re.findall(r'^ray = \["ray\[data\]==(\d+\.\d+)\.\*"\]', pyproject, re.M)
    # Ray Client and the cluster must run one Ray version: the image's is the ray extra's.
    for name in ("ray-head", "ray-worker", "ray-driver"):
        base = services[name]["build"]["args"]["BASE"]
        assert re.fullmatch(rf"rayproject/ray:{re.escape(pin)}\.\d+-py3\d+-cpu", base), base
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for extra in re.findall(r'modelport\[([a-z,]+)\]', dockerfile)[0].split(","):
        assert extra in extras, extra
