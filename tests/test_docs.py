"""The documentation is tested: every shell and Python block of README.md and docs/*.md runs, in order.

Sybil parses the Markdown (fenced ``bash``/``python`` blocks and its own ``<!-- skip: next "reason" -->``
directive). Each block is one test; the blocks of a document share one scratch folder, which holds the
files the document names (seeded checkpoints in the real layouts, docs/testing.md) before its first block
runs. Shell blocks run with ``bash -euo pipefail`` and this environment's ``modelport`` first on PATH; a
block may leave a server running in the background (``modelport serve ... &``): every process a document
started is stopped when its last block has run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import unittest
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from docs_fixtures import FIXTURES  # what each document's blocks expect in its scratch folder
from sybil import Document, Example, Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parents[1]
# The documents whose blocks run here. Every README.md and docs/*.md must be listed (the last tests).
DOCUMENTS = [
    "docs/benchmark-schema.md",
    "docs/security.md",
    "docs/testing.md",
    "docs/reid.md",
    "docs/ui.md",
    "docs/detect.md",
    "docs/triton.md",
    "docs/clip.md",
    "docs/factory.md",
    "README.md",
    "docs/int8.md",
    "docs/scale.md",
]
# Documents not yet runnable as written (issue 33 item 6); each moves to DOCUMENTS once it passes.
PENDING: list[str] = []
BLOCK_TIMEOUT_S = 600
SKIP_DIRECTIVE = re.compile(r'<!--\s*skip:\s*next\s+"([^"]+)"\s*-->')


@dataclass
class Scratch:
    """A document's scratch folder and the process groups its shell blocks started."""

    folder: Path
    groups: list[int] = field(default_factory=list)
    failed: bool = False

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # The benchmark cache and anything written to $HOME stay in the scratch folder.
        env["MODELPORT_CACHE"] = str(self.folder / ".cache" / "modelport")
        env["HOME"] = str(self.folder / ".home")
        return env

    def stop(self) -> None:
        """Stop what the document's blocks left running (servers started with ``&``), then reap it."""
        for group in self.groups:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    break
                if sig == signal.SIGTERM and _wait_group(group, 15.0):
                    break


def _wait_group(group: int, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def run_shell(example: Example) -> str | None:
    """Run a shell block with ``bash -euo pipefail`` in the document's scratch folder; the output on failure."""
    scratch: Scratch = example.namespace["__scratch__"]
    log = scratch.folder / ".block.log"
    with log.open("w") as out:
        # A session of its own: background jobs of the block outlive bash (as in a user's terminal) and are
        # stopped with their group at the end of the document. Output goes to a file, not a pipe, so a
        # server left running does not hold the block open.
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", example.parsed], cwd=scratch.folder,
                                env=scratch.env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        scratch.groups.append(proc.pid)
        try:
            rc = proc.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    output = log.read_text(errors="replace")
    if rc == 0:
        return None
    what = f"timed out after {BLOCK_TIMEOUT_S} s" if rc is None else f"exit code {rc}"
    return f"shell block at line {example.line} failed ({what}):\n{example.parsed}\n--- output ---\n{output[-8000:]}"


SYBIL = Sybil(parsers=[SkipParser(), PythonCodeBlockParser(), CodeBlockParser("bash", run_shell),
                       CodeBlockParser("sh", run_shell)])


@dataclass
class Block:
    """One code block of a document and the skip directives that precede it."""

    document: str
    examples: list[Example]

    @property
    def line(self) -> int:
        return self.examples[-1].line


def _blocks(document: Document, name: str) -> Iterator[Block]:
    pending: list[Example] = []
    for example in document.examples():
        pending.append(example)
        if not isinstance(example.parsed, tuple):  # a skip directive parses to (action, reason)
            yield Block(name, pending)
            pending = []


PARSED = {name: SYBIL.parse(ROOT / name) for name in DOCUMENTS}
BLOCKS = [block for name, doc in PARSED.items() for block in _blocks(doc, name)]


class OpenDocuments:
    """The document whose blocks are running, with its scratch folder; one at a time, in the blocks' order.

    Not a parametrized fixture: pytest (9.x) tears such a fixture down between parameters of different index,
    which would give every block a fresh folder and stop the servers an earlier block started.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.open: dict[str, Scratch] = {}

    def get(self, name: str) -> Document:
        if name not in self.open:
            self.close()  # the previous document's blocks are done: stop what they left running
            scratch = Scratch(self.tmp_path_factory.mktemp(Path(name).stem))
            make: Callable[[Path], None] | None = FIXTURES.get(name)
            if make is not None:
                make(scratch.folder)
            PARSED[name].namespace["__scratch__"] = scratch
            self.open[name] = scratch
        return PARSED[name]

    def close(self) -> None:
        while self.open:
            scratch = self.open.popitem()[1]
            scratch.stop()
            if not scratch.failed:  # a document's exports take GBs: keep its folder only to look into a failure
                shutil.rmtree(scratch.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenDocuments]:
    """Each document's scratch folder, made and filled with the files its blocks name before its first block."""
    opened = OpenDocuments(tmp_path_factory)
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.document}:{b.line}" for b in BLOCKS])
def test_block_runs_as_written(documents: OpenDocuments, block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    document = documents.get(block.document)
    scratch: Scratch = document.namespace["__scratch__"]
    # Python blocks run in this process: in the scratch folder, with the shell blocks' environment.
    monkeypatch.chdir(scratch.folder)
    for key, value in scratch.env().items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    try:
        for example in block.examples:
            example.evaluate()
    except unittest.SkipTest as skip:  # Sybil's skip directive: reported here, with the directive's reason
        pytest.skip(str(skip))
    except BaseException:
        scratch.failed = True
        raise


def test_every_readme_and_docs_page_is_covered() -> None:
    pages = {"README.md"} | {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert sorted(pages - set(DOCUMENTS) - set(PENDING)) == []
    assert not set(DOCUMENTS) & set(PENDING)


def test_every_skipped_block_says_why_where_a_reader_sees_it() -> None:
    # Sybil's directive is an HTML comment, invisible on a rendered page: the reason must also be visible text
    # between the directive and the block.
    for name in DOCUMENTS:
        text = (ROOT / name).read_text()
        for match in SKIP_DIRECTIVE.finditer(text):
            before_block = text[match.end():text.index("```", match.end())]
            assert f"Not run in CI: {match.group(1)}" in before_block, f"{name}: {match.group(0)}"
