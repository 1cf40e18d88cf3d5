"""Every code block of README.md and docs/*.md that is meant to run, run exactly as written.

Each page is one test: its blocks run in order, as a reader follows them, in a fresh folder
with the project's virtualenv first on PATH (as after ``make``; nothing is activated),
``REDIS_URL`` pointing at the test Redis (flushed when the page starts) and free ports for the
SMTP sink, the dashboard and the exporter. How a block takes part (written to a file, left
running, skipped with a reason) is said above it; see tests/docblocks.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from redis import Redis

from chumon.devredis import free_port
from tests.docblocks import Block, blocks, console_steps, missing_lines
from tests.support import ROOT, wait_until

pytestmark = pytest.mark.e2e

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = [page for page in PAGES if any(b.runs for b in blocks(page))]
BIN = Path(sys.executable).parent


class Background:
    """A block left running (a worker, ``make up``) until the page ends."""

    def __init__(self, block: Block, cwd: Path, env: dict[str, str]) -> None:
        self.block = block
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            ["bash", "-c", block.text],
            cwd=cwd,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def ready(self) -> None:
        for text in self.block.values("wait-for"):
            wait_until(
                lambda t=text: t in self.output or self.proc.poll() is not None,
                timeout=120,
                message=f"{self.block} to print {text!r}",
            )
            assert self.proc.poll() is None, f"{self.block} ended early:\n{self.output[-3000:]}"

    def stop(self) -> str:
        for sig, grace in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        output = self.output
        self.log.close()
        return output


class Page:
    """One page's blocks, run in order in one folder."""

    def __init__(self, folder: Path, redis_url: str) -> None:
        self.folder = folder
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHUMON_") and k != "PYTHONPATH"}
        self.env = {
            **env,
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "REDIS_URL": redis_url,
            "CHUMON_SMTP__PORT": str(free_port()),
            "CHUMON_DASHBOARD__PORT": str(free_port()),
            "CHUMON_METRICS_PORT": str(free_port()),
        }
        self.background: list[Background] = []

    def run(self, block: Block) -> None:
        cwd = ROOT if block.has("in-checkout") else self.folder
        if block.has("file"):
            (self.folder / block.values("file")[0]).write_text(block.text)
        elif block.has("background"):
            self.background.append(Background(block, cwd, self.env))
            self.background[-1].ready()
        elif block.language == "console":
            for command, expected in console_steps(block.text):
                output = self.shell(block, command, cwd)
                missing = missing_lines(expected, output)
                assert not missing, f"{block}: `{command}` did not print {missing}; it printed:\n{output}"
        elif block.language == "python":
            script = self.folder / f"docs_block_{block.line}.py"
            script.write_text(block.text)
            self.check(block, self.execute(block, [sys.executable, script.name], cwd))
        else:
            self.check(block, self.shell(block, block.text, cwd))

    def shell(self, block: Block, command: str, cwd: Path) -> str:
        return self.execute(block, ["bash", "-e", "-o", "pipefail", "-c", command], cwd)

    def execute(self, block: Block, argv: list[str], cwd: Path) -> str:
        done = subprocess.run(
            argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=240, check=False
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{block} exited {done.returncode}:\n{output}{self.context()}"
        assert "Traceback" not in output, f"{block} printed a traceback:\n{output}"
        return output

    def check(self, block: Block, output: str) -> None:
        for text in block.values("expect"):
            assert text in output, f"{block} did not print {text!r}; it printed:\n{output}"

    def context(self) -> str:
        return "".join(f"\n--- {b.block} (running) ---\n{b.output[-3000:]}" for b in self.background)

    def stop(self) -> None:
        outputs = [(b.block, b.stop()) for b in reversed(self.background)]
        for block, output in outputs:
            assert "Traceback" not in output, f"{block} printed a traceback:\n{output}"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.name)
def test_every_block_runs_as_written(path: Path, redis: Redis, redis_url: str, tmp_path: Path) -> None:
    page = Page(tmp_path, redis_url)
    try:
        for block in blocks(path):
            if block.runs or block.has("file"):
                page.run(block)
    finally:
        page.stop()


def test_every_runnable_looking_block_is_run_or_says_why_not() -> None:
    """A shell or Python block nobody runs must say why (``docs-test: skip REASON``)."""
    for page in PAGES:
        for block in blocks(page):
            if block.language not in {"python", "sh", "console", "bash", "shell", "py"}:
                continue
            assert block.language in {"python", "sh", "console"}, f"{block}: use python, sh or console"
            assert block.runs or block.has("file") or block.values("skip"), block
