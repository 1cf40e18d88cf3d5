"""``chumon diagram``: generated from the saga and the reaction table; the docs embed what it prints."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from chumon import cli, diagram
from orders import saga
from orders.reactors import Reactions
from orders.saga import COMPENSATION_NAMES, STEPS
from workers.joblog import set_sink

DOC = Path(__file__).resolve().parents[2] / "docs" / "orders.md"


def test_the_docs_embed_what_the_code_generates_now() -> None:
    doc = DOC.read_text()
    assert doc.count("<!-- diagram style=") == 4
    assert diagram.embed(doc) == doc, "the diagrams drifted: run chumon diagram --embed docs/orders.md"


def test_a_change_to_the_saga_changes_the_diagram(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = DOC.read_text()
    monkeypatch.setattr(saga, "_next_step", lambda step: None)  # a saga that confirms after reserving
    assert diagram.embed(doc) != doc


def test_a_change_to_the_reaction_table_changes_the_diagram(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = DOC.read_text()
    table = Reactions.table

    def without_refunds(self: Reactions) -> dict:  # type: ignore[type-arg]
        rows = table(self)
        rows["payments"] = [row for row in rows["payments"] if row[0].__name__ != "ShipmentCancelled"]
        return rows

    monkeypatch.setattr(Reactions, "table", without_refunds)
    assert diagram.embed(doc) != doc


def test_every_step_compensation_and_reaction_is_drawn() -> None:
    orchestrated = diagram.text("orchestrated")
    for step in STEPS:
        assert f"{step.value} says no:" in orchestrated and f"{step.value} gives no answer:" in orchestrated
    happy = orchestrated.split("\n\n")[0]
    assert happy.index("ReserveInventory") < happy.index("ChargePayment") < happy.index("ArrangeShipping")
    assert "SendConfirmationEmail [notifications] + CommitInventory [inventory]" in happy
    undo = orchestrated.split("\n\n")[1].split("arrange_shipping gives no answer:")[1]
    assert undo.index("CancelShipment") < undo.index("RefundPayment") < undo.index("ReleaseInventory")
    choreographed = diagram.text("choreographed")
    rows = diagram.reaction_rows()
    assert len(rows) == sum(len(r) for r in diagram._Described().table().values())
    for event, condition, service, sends in rows:
        head = event + (f" ({condition})" if condition else "")
        assert any(line.startswith(f"  {head} ") and line.endswith(f"{service}: {sends}")
                   for line in choreographed.splitlines()), (event, condition, service, sends)  # fmt: skip
    assert len(COMPENSATION_NAMES) == len(STEPS)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """cli.main configures the process's logging: put it back, so later tests are unaffected."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    logging.getLogger("chumon.jobs").setLevel(logging.NOTSET)
    set_sink(None)


@pytest.mark.usefixtures("restored_logging")
def test_mermaid_output_declares_each_node_once(capsys: pytest.CaptureFixture[str]) -> None:
    for style in diagram.STYLES:
        assert cli.main(["diagram", "--style", style, "--format", "mermaid"]) == 0
        out = capsys.readouterr().out
        for block in out.split("```mermaid")[1:]:
            declared = [
                line.split("[")[0].split("(")[0].strip() for line in block.splitlines() if "[" in line
            ]
            assert len(declared) == len(set(declared))
            assert "flowchart TD" in block
