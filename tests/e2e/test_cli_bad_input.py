"""Every subcommand, given bad input as a new user would, answers in a line or two and an exit
code from the table (workers.cli.Exit), never with a Python traceback or a silent success.

The commands are found by walking chumon's argparse tree, so a command added later is tried
too. Each runs in a child process forked from one that imported chumon once (tests/clirunner.py:
the same ``main(argv)`` ``python -m chumon`` runs), and a sample as real ``python -m chumon``
processes, as a user runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from redis import Redis

from chumon.cli import build_parser
from tests.support import ROOT
from workers.cli import Exit

pytestmark = pytest.mark.e2e

# commands that run until stopped: tried only with input they must refuse before starting
# (and the labs, which run for a while on a Redis of their own)
LONG_RUNNING = {"worker", "events", "consumers", "scheduler", "metrics", "dashboard", "tail", "lab"}
# a value that passes for each argument, so that one bad value at a time is what is tried
GOOD = {
    "customer_email": "ada@example.com",
    "customer_name": "Ada",
    "items": "TEA:1",
    "ship_to": "12 Analytical Lane",
    "sku": "TEA",
    "quantity": "1",
}
NAMES = ["nosuch", "../é" * 80]  # unknown; and no name at all (a path, non-ASCII, too long)
NUMBERS = ["x", "-1", "0", "nan", "1e400"]
CODES = {int(code) for code in Exit}
NO_REDIS = {"diagram", "lab"}  # need no Redis, or start a private one: REDIS_URL is not theirs to refuse


@dataclass
class Command:
    path: list[str]
    parser: argparse.ArgumentParser

    @property
    def long_running(self) -> bool:
        consumers_dlq = self.path[0] in ("events", "consumers") and len(self.path) > 1
        return self.path[0] in LONG_RUNNING and not consumers_dlq

    def required(self) -> list[str]:
        """The least the command accepts: every required option and positional."""
        argv: list[str] = []
        for action in self.parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            value = GOOD.get(action.dest, "nosuch")
            if not action.option_strings and action.nargs not in ("?", "*"):
                argv.append(value)
            elif action.required and action.option_strings:
                argv += [action.option_strings[0], value]
        return argv

    def with_option(self, action: argparse.Action, value: str) -> list[str]:
        base = self.required()
        if action.option_strings:
            flag = action.option_strings[0]
            if flag in base:  # replace the good value of a required option
                at = base.index(flag)
                return [*base[:at], flag, value, *base[at + 2 :]]
            return [*base, flag, value]
        positionals = [a for a in self.parser._actions if not a.option_strings and a.nargs not in ("?", "*")]
        if action in positionals:
            base[positionals.index(action)] = value
            return base
        return [*base, value]


def commands(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[Command]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if path:
        yield Command(path, parser)
    for action in subparsers:
        for name, child in action.choices.items():
            yield from commands(child, [*path, name])


Case = tuple[str, list[str], dict[str, str], set[int]]
ANY_ERROR = CODES - {0}


def cases() -> Iterator[Case]:
    """(what is tried, argv, extra environment, the exit codes that answer it properly)."""
    for command in commands(build_parser(), []):
        path = command.path
        has_sub = any(
            isinstance(a, argparse._SubParsersAction) and a.required for a in command.parser._actions
        )
        if has_sub:
            yield f"{path} without a subcommand", path, {}, {Exit.USAGE}
            continue
        yield f"{path} with an unknown flag", [*path, *command.required(), "--no-such-flag"], {}, {Exit.USAGE}
        for action in command.parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if action.nargs == 0:  # a switch: nothing to get wrong
                continue
            if action.choices:
                values, expected = ["nope"], {Exit.USAGE}
            elif action.type not in (None, str) and command.long_running:
                values, expected = [v for v in NUMBERS if v != "0"], ANY_ERROR  # 0 may mean "off"
            elif action.type not in (None, str):
                values, expected = NUMBERS, CODES  # 0 may be fine (no stock); never a traceback
            elif command.long_running:
                continue  # a name a long-running command accepts would start it
            else:
                values, expected = NAMES, CODES
            for value in values:
                argv = [*path, *command.with_option(action, value)]
                refuse = (
                    {Exit.USAGE}
                    if value in ("x", "-1", "nan") and action.type not in (None, str)
                    else expected
                )
                yield f"{path} {action.dest}={value[:20]!r}", argv, {}, refuse
        if path[0] in NO_REDIS:
            continue
        if not command.long_running:
            base = [*path, *command.required()]
            yield f"{path} with Redis unreachable", base, {"REDIS_URL": "redis://127.0.0.1:1/0"}, ANY_ERROR
        yield (
            f"{path} with a bad REDIS_URL",
            [*path, *command.required()],
            {"REDIS_URL": "not-a-url"},
            {Exit.USAGE},
        )
        yield (
            f"{path} with a bad setting",
            [*path, *command.required()],
            {"CHUMON_WORKER_TTL": "soon"},
            {Exit.USAGE},
        )


class Runner:
    """A tests/clirunner.py process: imports chumon once, forks a child per command line."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.clirunner"],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def __call__(self, argv: list[str], env: dict[str, str]) -> tuple[int | None, str, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "timeout": 60}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return answer["code"], answer["stdout"], answer["stderr"]

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()


def as_process(argv: list[str], env: dict[str, str]) -> tuple[int | None, str, str]:
    """``python -m chumon`` as a user runs it (import time included)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "chumon", *argv],
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return None, "", ""
    return done.returncode, done.stdout, done.stderr


def judge(case: Case, code: int | None, stdout: str, stderr: str) -> str | None:
    """None if the case was answered properly, else what went wrong."""
    what, argv, _, expected = case
    command = " ".join(argv)
    if code is None:
        return f"{what}: still running after 60 s (chumon {command})"
    output = stdout + stderr
    if "Traceback" in output:
        return f"{what}: a traceback (chumon {command}):\n{output[-1500:]}"
    if code not in expected:
        return f"{what}: exit {code}, not {sorted(expected)} (chumon {command}):\n{output[-600:]}"
    if code and not stderr.strip():
        return f"{what}: exit {code} without a word (chumon {command})"
    return None


@pytest.mark.timeout(900)
def test_every_command_refuses_bad_input_without_a_traceback(redis: Redis, redis_url: str) -> None:
    """Every case in a child forked from a process that imported chumon once (the same
    ``main(argv)`` a real process runs, without its 0.4 s of imports), and every 12th case,
    the first of each command included, also as a real ``python -m chumon`` process."""
    tried = list(cases())
    runners = [Runner() for _ in range(3)]

    def one(item: tuple[int, Case]) -> list[str]:
        i, case = item
        env = {"REDIS_URL": redis_url, **case[2]}
        found = [judge(case, *runners[i % len(runners)](case[1], env))]
        if i % 12 == 0:
            found.append(judge(case, *as_process(case[1], env)))
        return [p for p in found if p]

    try:
        with ThreadPoolExecutor(max_workers=len(runners)) as pool:
            # each runner serves one thread: case i goes to runner i % 3, handled by thread i % 3
            lanes = [
                [(i, c) for i, c in enumerate(tried) if i % len(runners) == n] for n in range(len(runners))
            ]
            results = pool.map(lambda lane: [p for item in lane for p in one(item)], lanes)
            problems = [p for lane in results for p in lane]
    finally:
        for runner in runners:
            runner.close()
    assert len(tried) > 100
    assert problems == [], "\n\n".join(problems)
