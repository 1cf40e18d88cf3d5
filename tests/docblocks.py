"""The code blocks of README.md and docs/*.md, as a reader would run them.

A fenced block runs if its language is ``python``, ``sh`` or ``console``; a block without a
language (a picture, a command's synopsis) is only read. An HTML comment right above a fence
says how a block takes part, one ``docs-test:`` directive per comment:

    <!-- docs-test: file myapp.py -->         write the block to that file instead of running it
    <!-- docs-test: background -->            start it and leave it running until the page ends
    <!-- docs-test: wait-for serving default --> (background) go on once its output shows this
    <!-- docs-test: in-checkout -->           run it in the checkout (``make up``), not the page's folder
    <!-- docs-test: expect hello Ada -->       its output must contain this
    <!-- docs-test: skip REASON -->           not run, for the reason given (one is required)

A ``console`` block is commands after ``$ `` with the output they print below them: every
printed line shown must appear, in order, where ``...`` stands for anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

RUN = frozenset({"python", "sh", "console"})
DIRECTIVES = frozenset({"file", "background", "wait-for", "in-checkout", "expect", "skip"})

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<name>[\w-]+)\s*(?P<arg>.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    directives: list[tuple[str, str]] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return self.language in RUN and not self.has("skip")

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.directives)

    def values(self, name: str) -> list[str]:
        return [arg for n, arg in self.directives if n == name]

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line} ({self.language})"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with the directives written above it."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, start = match.group("fence"), i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i])
            i += 1
        i += 1
        language = match.group("info").strip().split(" ")[0].lower()
        found.append(Block(path, start + 1, language, "\n".join(body) + "\n", directives_above(lines, start)))
    for block in found:
        unknown = [n for n, _ in block.directives if n not in DIRECTIVES]
        if unknown:
            raise ValueError(f"{block}: unknown docs-test directive(s) {unknown}")
        if block.has("skip") and not block.values("skip")[0]:
            raise ValueError(f"{block}: docs-test skip needs a reason")
    return found


def directives_above(lines: list[str], fence: int) -> list[tuple[str, str]]:
    found = []
    j = fence - 1
    while j >= 0 and (not lines[j].strip() or _DIRECTIVE.match(lines[j])):
        match = _DIRECTIVE.match(lines[j])
        if match:
            found.append((match.group("name"), match.group("arg")))
        j -= 1
    return found[::-1]


def console_steps(text: str) -> list[tuple[str, list[str]]]:
    """A console block -> [(command, lines it must print)]."""
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps and line.strip():
            steps[-1][1].append(line.rstrip())
        elif line.strip():
            raise ValueError(f"console output before any command: {line!r}")
    return steps


def missing_lines(expected: list[str], output: str) -> list[str]:
    """The expected lines (``...``: anything) not found in ``output``, in order."""
    actual = [line.rstrip() for line in output.splitlines()]
    position, missing = 0, []
    for want in expected:
        pattern = re.compile(".*".join(re.escape(part) for part in want.split("...")))
        for k in range(position, len(actual)):
            if pattern.fullmatch(actual[k]):
                position = k + 1
                break
        else:
            missing.append(want)
    return missing
