"""Every fenced ``python`` block in README.md and docs/ runs as written, as a reader pastes it.

Each block runs in a fresh interpreter (this venv's python, in an empty folder) with
``MONGODB_URI`` pointing at one simulator started for the module (``python -m motor_otel.testing``)
or at the server ``MONGODB_URI`` already names. The only blocks left out are those whose first
line is a comment ``# fragment: <what it leaves out>``. The blocks run concurrently: one test per
block reports its file, line and stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FRAGMENT = "# fragment:"
TIMEOUT_S = 60


@dataclass(frozen=True)
class Block:
    """One fenced python block: where it is and what it says."""

    path: Path
    line: int  # of the opening fence, 1-based
    code: str

    @property
    def where(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}"

    @property
    def fragment(self) -> bool:
        return self.code.lstrip().startswith(FRAGMENT)


def blocks_of(path: Path) -> list[Block]:
    """The fenced ```python blocks of a Markdown file (indented ones in lists too)."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    start: int | None = None
    body: list[str] = []
    for number, line in enumerate(lines, 1):
        if start is None:
            if line.strip() == "```python":
                start, body = number, []
        elif line.strip() == "```":
            found.append(Block(path, start, textwrap.dedent("\n".join(body)) + "\n"))
            start = None
        else:
            body.append(line)
    assert start is None, f"{path.name}:{start}: a python block is never closed"
    return found


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


BLOCKS = [block for path in documents() for block in blocks_of(path)]
RUN = [block for block in BLOCKS if not block.fragment]


@pytest.fixture(scope="module")
def server_uri() -> Iterator[str]:
    """``MONGODB_URI`` when set, else a simulator of its own for this module's blocks."""
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    with subprocess.Popen(
        [sys.executable, "-m", "motor_otel.testing"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as server:  # serves until its stdin closes, which leaving the block does
        assert server.stdout is not None
        uri = server.stdout.readline().strip()
        assert uri.startswith("mongodb://"), uri
        yield uri


@pytest.fixture(scope="module")
def outcomes(
    server_uri: str, tmp_path_factory: pytest.TempPathFactory, summary_line: Callable[[str], None]
) -> dict[Block, subprocess.CompletedProcess[str]]:
    """Every runnable block's run, all started at once, each in an empty folder of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["MONGODB_URI"] = server_uri
    began = time.perf_counter()
    running: dict[Block, tuple[subprocess.Popen[str], Path]] = {}
    for block in RUN:
        folder = tmp_path_factory.mktemp("block")
        script = folder / "snippet.py"
        script.write_text(block.code, encoding="utf-8")
        process = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        running[block] = (process, script)
    done: dict[Block, subprocess.CompletedProcess[str]] = {}
    for block, (process, script) in running.items():
        try:
            out, err = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            err += f"\n(killed after {TIMEOUT_S} s)"
        done[block] = subprocess.CompletedProcess([str(script)], process.returncode, out, err)
    summary_line(
        f"README snippets: {len(RUN)} blocks run concurrently in"
        f" {time.perf_counter() - began:.1f} s ({len(BLOCKS) - len(RUN)} fragments skipped)"
    )
    return done


def test_there_are_blocks_to_run() -> None:
    """The extraction finds the README's python blocks (an empty list would pass everything)."""
    assert len(RUN) >= 3, [b.where for b in BLOCKS]


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.where)
def test_block_runs_as_written(
    block: Block, outcomes: dict[Block, subprocess.CompletedProcess[str]]
) -> None:
    """The block exits 0, with no traceback (a thread's too), in a fresh interpreter."""
    done = outcomes[block]
    if done.returncode != 0 or "Traceback" in done.stderr:
        pytest.fail(f"{block.where} exited {done.returncode}:\n{done.stderr}", pytrace=False)


def says_what_it_leaves_out(block: Block) -> bool:
    """A fragment's first line names what it leaves out: ``# fragment: <something>``."""
    first = block.code.lstrip().splitlines()[0]
    return bool(first[len(FRAGMENT) :].strip())


def test_fragments_say_what_they_leave_out() -> None:
    """Every block skipped as a fragment says, after ``# fragment:``, what it leaves out."""
    silent = [b.where for b in BLOCKS if b.fragment and not says_what_it_leaves_out(b)]
    assert silent == []


def test_an_empty_fragment_comment_is_caught(tmp_path: Path) -> None:
    """The extraction sees fragments (indented blocks too) and flags one that says nothing."""
    page = tmp_path / "page.md"
    page.write_text(
        "```python\n# fragment:\nx\n```\n\n- item\n\n  ```python\n  # fragment: setup\n  y\n  ```\n"
    )
    empty, named = blocks_of(page)
    assert (empty.line, named.line) == (1, 8)
    assert empty.fragment and named.fragment
    assert not says_what_it_leaves_out(empty)
    assert says_what_it_leaves_out(named)
    assert named.code == "# fragment: setup\ny\n"
