"""The docs name only what exists: every file path they cite, every metric they name.

A path is a backticked token that contains a ``/`` or ends in ``.py``, ``.lua`` or ``.md``.
One with a folder must exist from the repository's root (or, for a folder that is not the
repository's, inside the installed package of that name: ``rq/job.py``); a bare name (``step.lua``, ``e2e/``)
must be the name of some file or folder in the repository. A metric is any ``chumon_...``
word: it must be a metric that a worker, the events process or the exporter serves.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from prometheus_client import CollectorRegistry
from redis import Redis

from chumon.exporter import registry as exporter_registry
from orders.metrics import ConsumerMetrics, SagaMetrics
from workers import RuntimeSettings
from workers.metrics import RuntimeMetrics

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*/?)`")
METRIC = re.compile(r"\bchumon_[a-z0-9_]*[a-z0-9]\b")
SUFFIXES = ("", "_total", "_count", "_sum", "_bucket", "_created")
SKIP = {".venv", ".git", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def cited_paths() -> set[tuple[str, str]]:
    found = set()
    for doc in DOCS:
        for token in PATH.findall(doc.read_text()):
            if "/" in token or token.endswith((".py", ".lua", ".md")):
                found.add((doc.name, token))
    return found


def made_by_docs() -> set[str]:
    """Files and folders the docs have the reader create (``<!-- docs-test: file myapp.py -->``
    above a block, ``mkdir outbox`` in one): they exist once the reader follows the text."""
    made = set()
    for doc in DOCS:
        text = doc.read_text()
        made |= set(re.findall(r"<!-- docs-test: file ([^\s]+)", text))
        made |= set(re.findall(r"\bmkdir (?:-p )?([A-Za-z0-9_.-]+)", text))
    return made


def repo_names() -> set[str]:
    names = set()
    for path in ROOT.rglob("*"):
        if not SKIP.intersection(path.relative_to(ROOT).parts):
            names.add(path.name)
    return names


def made_by_commands() -> set[str]:
    """Folders the project's own commands write and git ignores (``bench/results/``, which each
    benchmark run writes): they exist once the command the docs describe has run."""
    lines = (ROOT / ".gitignore").read_text().splitlines()
    return {line.strip("/") for line in lines if line.endswith("/") and "*" not in line and "/" in line[:-1]}


def exists(token: str, names: set[str]) -> bool:
    bare = token.rstrip("/")
    if bare in made_by_docs() or bare in made_by_commands():
        return True
    if "/" in bare:
        return (ROOT / bare).exists() or in_dependency(bare)
    return bare in names


def in_dependency(path: str) -> bool:
    """A path inside an installed package the docs quote (``rq/job.py``)."""
    top = path.split("/")[0]
    if (ROOT / top).exists():
        return False  # a folder of this repository: the path must be here
    spec = importlib.util.find_spec(top) if top.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(folder).parent / path).exists() for folder in spec.submodule_search_locations)


def test_every_path_the_docs_cite_exists() -> None:
    names = repo_names()
    cited = cited_paths()
    assert len(cited) > 50, "the pattern finds the docs' paths"
    missing = sorted(f"{doc}: {token}" for doc, token in cited if not exists(token, names))
    assert missing == [], missing


def served_metrics(redis: Redis, settings: RuntimeSettings) -> set[str]:
    registry = CollectorRegistry()
    RuntimeMetrics(registry)
    SagaMetrics(registry)
    ConsumerMetrics(registry)
    families = [*registry.collect(), *exporter_registry(redis, settings).collect()]
    return {family.name + suffix for family in families for suffix in SUFFIXES}


def test_every_metric_the_docs_name_is_served(redis: Redis, settings: RuntimeSettings) -> None:
    served = served_metrics(redis, settings)
    named = {(doc.name, m) for doc in DOCS for m in METRIC.findall(doc.read_text())}
    assert len(named) > 10, "the pattern finds the docs' metrics"
    missing = sorted(f"{doc}: {metric}" for doc, metric in named if metric not in served)
    assert missing == [], missing


def test_a_metric_the_exporter_does_not_serve_is_caught(redis: Redis, settings: RuntimeSettings) -> None:
    served = served_metrics(redis, settings)
    assert "chumon_dead_letter_alert" in served
    assert "chumon_dlq_alert" not in served  # the name jobs/maintenance.py used to cite


SOURCE_PATH = re.compile(
    r"(?<![\w/.])((?:orders|workers|jobs|chumon|producer|tests|docs|bench)/[A-Za-z0-9_./-]*\.(?:py|lua|md))"
)


def test_every_path_a_docstring_or_comment_cites_exists() -> None:
    """Code cites files too (orders/events.py once cited a commit.lua that is transition.lua)."""
    missing = []
    for folder in ("orders", "workers", "jobs", "chumon", "producer", "bench"):
        for source in sorted((ROOT / folder).rglob("*.py")):
            for token in SOURCE_PATH.findall(source.read_text()):
                if not (ROOT / token).exists():
                    missing.append(f"{source.relative_to(ROOT)}: {token}")
    assert missing == [], missing
