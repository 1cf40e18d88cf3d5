"""``chumon diagram``: the saga's flow, compensation and reaction diagrams, generated from the code.

Nothing here is drawn by hand. The orchestrated diagrams come from running the pure saga
(orders/saga.py, ``Saga`` over ``STEPS``) on a sample order: every step answering, then each
step failing with a definite "no" and without an answer, every compensation answering; what
the saga records and sends at each turn is the diagram. The choreographed ones come from the
services' reaction table (orders/reactors.py, ``Reactions.table``), followed from an event
through the command a service sends to the event its answer records.

docs/orders.md embeds the output between ``<!-- diagram ... -->`` markers;
``chumon diagram --embed docs/orders.md`` rewrites them and a test fails when they drift.
"""

from __future__ import annotations

import argparse
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orders import commands as c
from orders import events as e
from orders.model import Customer, Order, OrderLine
from orders.reactors import Reactions
from orders.saga import STEPS, Messages, Saga, SagaState, Step, Transition, compensation_command
from workers.cli import CliContext, UsageError

STYLES = ("orchestrated", "choreographed")
FORMATS = ("text", "mermaid")
Edge = tuple[str, str, str]  # from, label, to


@dataclass
class Diagram:
    title: str
    lines: list[str] = field(default_factory=list)  # the text form
    edges: list[Edge] = field(default_factory=list)  # the graph, for mermaid


def services() -> dict[str, str]:
    """Command name -> the service (queue) whose job carries it."""
    from jobs.orders import ROUTES

    return {kind.__name__: job_type.queue for kind, job_type in ROUTES.items()}


# -- orchestrated: run the saga -------------------------------------------------------------------
def sample_order() -> Order:
    line = OrderLine(sku="TEA", quantity=1, unit_price=100)
    return Order(
        id="o", customer=Customer(name="A", email="a@example.com"), ship_to="1 Street", lines=[line],
        currency="EUR", total=100, payment_hint="tok_…", correlation_id="o", placed_at=0.0, updated_at=0.0,
    )  # fmt: skip


FACTS = {Step.RESERVE: {}, Step.CHARGE: {"charge_id": "ch"}, Step.SHIP: {"shipment_id": "sh"}}


def _undoes() -> dict[str, Step]:
    msg = Messages(sample_order(), None, 0.0)
    return {type(compensation_command(msg, step, "")).__name__: step for step in STEPS}


def _names(t: Transition | None) -> list[str]:
    if t is None:
        return []
    sent = [o.command.type_name() for o in t.outgoing if not isinstance(o.command, c.CheckStepTimeout)]
    return [ev.type_name() for ev in t.events] + sent


def run_saga(fail_at: Step | None, *, definite: bool = True) -> list[str]:
    """What the saga records and sends, in order, when ``fail_at`` fails (None: nothing fails)."""
    saga, order = Saga(step_timeout=30.0), sample_order()
    state, out = saga.start(order, 0.0)
    trail = [
        "OrderPlaced",
        *(o.command.type_name() for o in out if not isinstance(o.command, c.CheckStepTimeout)),
    ]
    state = SagaState.model_validate(state.model_dump())
    for step in STEPS:
        if step is fail_at:
            t = saga.step_failed(order, state, step, "no", definite=definite, cause="x", now=1.0)
            break
        t = saga.step_succeeded(order, state, step, FACTS[step], cause="x", now=1.0)
        trail += _names(t)
    else:
        return trail
    trail += _names(t)
    undoes = _undoes()
    while t is not None and (pending := [o.command for o in t.outgoing if o.command.type_name() in undoes]):
        t = saga.compensated(
            order, state, undoes[pending[0].type_name()], {"undid": True}, cause="x", now=2.0
        )
        trail += _names(t)
    return trail


def orchestrated() -> list[Diagram]:
    where = services()
    flow = Diagram("flow (orchestrated): orders/saga.py, Saga over STEPS")
    happy = run_saga(None)
    flow.lines = [("   " if i else "") + line for i, line in enumerate(_chain(happy, where))]
    flow.edges = _edges(happy, where)
    undo = Diagram("compensations (orchestrated): each step failing, newest step undone first")
    for step in STEPS:
        for definite in (True, False):
            trail = run_saga(step, definite=definite)
            how = "says no" if definite else "gives no answer"
            undo.lines.append(f"{step.value} {how}:")
            failed = [i for i, name in enumerate(trail) if name.endswith("Failed")]
            if not failed:
                undo.lines.append("   (the saga never waits for this step)")
                continue
            start = failed[0]
            undo.lines += ["   " + line for line in _chain(trail[start:], where)]
            edges = _edges(trail[start:], where)
            undo.edges += [(edges[0][0], "said no" if definite else "no answer", edges[0][2]), *edges[1:]]
    return [flow, undo]


def _label(name: str, where: dict[str, str]) -> str:
    return f"{name} [{where[name]}]" if name in where else name


def units(trail: list[str], where: dict[str, str]) -> list[list[str]]:
    """The trail with the commands one transition sends together grouped (each an event alone)."""
    grouped: list[list[str]] = []
    previous = ""
    for name in trail:
        if name in where and previous in where:
            grouped[-1].append(_label(name, where))
        else:
            grouped.append([_label(name, where)])
        previous = name
    return grouped


def _chain(trail: list[str], where: dict[str, str], per_line: int = 3) -> list[str]:
    """The trail as lines of at most ``per_line`` steps; a continued line starts with the arrow.
    Commands sent together are joined by ``+``."""
    labels = [" + ".join(unit) for unit in units(trail, where)]
    lines = []
    for i in range(0, len(labels), per_line):
        lines.append(("─▶ " if i else "") + " ─▶ ".join(labels[i : i + per_line]))
    return lines


def _edges(trail: list[str], where: dict[str, str]) -> list[Edge]:
    grouped = units(trail, where)
    return [(a, "", b) for one, two in itertools.pairwise(grouped) for a in one for b in two]


# -- choreographed: follow the reaction table ---------------------------------------------------
class _Described(Reactions):
    """The reaction table with each action replaced by the command it sends (or the transition)."""

    def __init__(self) -> None:
        super().__init__(orders=None, step_timeout=30.0)  # type: ignore[arg-type]  # never called
        self.confirm = _Action("confirm", "OrderConfirmed")  # type: ignore[method-assign]
        self.cancel = _Action("cancel", "OrderCancelled")  # type: ignore[method-assign]

    def step(self, step: Step) -> Callable[[e.Event], None]:
        return _Action(_step_command(step), "")

    def undo(self, step: Step) -> Callable[[e.Event], None]:
        msg = Messages(sample_order(), None, 0.0)
        return _Action(compensation_command(msg, step, "").type_name(), "")

    def send(self, make: Callable[[Messages, Order], c.Command]) -> Callable[[e.Event], None]:
        return _Action(make(Messages(sample_order(), None, 0.0), sample_order()).type_name(), "")


@dataclass
class _Action:
    sends: str  # a command's name, or the orders service's transition ("confirm", "cancel")
    records: str  # the event a transition records ("" for a command: its handler's answer)

    def __call__(self, event: Any) -> None:  # pragma: no cover - never run, only described
        raise NotImplementedError


def _step_command(step: Step) -> str:
    from orders.saga import step_command

    return step_command(Messages(sample_order(), None, 0.0), sample_order(), step).type_name()


CONDITIONS = {"definite": "said no", "uncertain": "no answer", "on_time": "on time", "late": "late"}


def _condition(when: Callable[[Any], bool]) -> str:
    name = getattr(when, "__name__", "")
    if name == "of_step":  # repeated(step): its step is in the closure
        cells = [cell.cell_contents for cell in when.__closure__ or ()]
        return f"for {next((s.value for s in cells if isinstance(s, Step)), '?')}"
    return CONDITIONS.get(name, "")


def reaction_rows() -> list[tuple[str, str, str, str]]:
    """(event, condition, service, what it does) for every row of the reaction table."""
    rows = []
    for service, table in _Described().table().items():
        for event_type, when, act in table:
            assert isinstance(act, _Action)
            rows.append((event_type.__name__, _condition(when), service, act.sends))
    return rows


def answers() -> dict[str, str]:
    """Command -> the event its handler's success records (read off the orchestrated runs)."""
    found: dict[str, str] = {}
    for trail in [run_saga(None), *(run_saga(s, definite=d) for s in STEPS for d in (True, False))]:
        for a, b in itertools.pairwise(trail):
            if a in services() and b in e.EVENT_TYPES and not b.endswith("Failed"):
                found.setdefault(a, b)
    return found


Reaction = tuple[int, str, str, str, str, str]  # depth, event, condition, service, sends, result


def follow(event: str, facts: dict[str, Any], rows: list[tuple[str, str, str, str]]) -> list[Reaction]:
    """The reactions that follow ``event`` (``facts``: whether failures are definite), depth first."""
    answer = answers()
    seen: set[str] = set()
    found: list[Reaction] = []

    def walk(name: str, depth: int) -> None:
        if name in seen:
            return
        seen.add(name)
        for ev, cond, service, sends in rows:
            if ev != name or (cond and not _holds(cond, facts.get("definite", True))):
                continue
            result = {"confirm": "OrderConfirmed", "cancel": "OrderCancelled"}.get(sends) or answer.get(
                sends, ""
            )
            found.append((depth, ev, cond, service, sends, result))
            if result:
                walk(result, depth + 1)

    walk(event, 0)
    return found


def reaction_lines(found: list[Reaction], indent: str = "") -> list[str]:
    lines = []
    for depth, ev, cond, service, sends, result in found:
        head = indent + "  " * depth + ev + (f" ({cond})" if cond else "")
        lines.append(f"{head} ─▶ {service}: {sends}" + (f" ─▶ {result}" if result else ""))
    return lines


def reaction_edges(found: list[Reaction]) -> list[Edge]:
    edges = []
    for _depth, ev, cond, service, sends, result in found:
        edges.append((ev, cond, f"{service}: {sends}"))
        if result:
            edges.append((f"{service}: {sends}", "", result))
    return edges


def _holds(condition: str, definite: bool) -> bool:
    """Whether a reaction's condition holds for answers given in time, definite or not."""
    return {"said no": definite, "no answer": not definite, "on time": True, "late": False}.get(
        condition, False
    )


def choreographed() -> list[Diagram]:
    rows = reaction_rows()
    flow = Diagram("flow (choreographed): orders/reactors.py, Reactions.table followed from OrderPlaced")
    happy = follow("OrderPlaced", {}, rows)
    flow.lines, flow.edges = reaction_lines(happy), reaction_edges(happy)
    undo = Diagram("compensations (choreographed): each step failing, followed through the reactions")
    for step in STEPS:
        failed = next((n for n in run_saga(step) if n.endswith("Failed")), "")
        for definite in (True, False):
            found = follow(failed, {"definite": definite}, rows)
            undo.lines.append(f"{step.value} {'says no' if definite else 'gives no answer'}:")
            undo.lines += reaction_lines(found, "   ")
            undo.edges += reaction_edges(found)
    table = Diagram("reactions (choreographed): who reacts to which event, and how")
    width = max(len(r[0]) + len(r[1]) for r in rows) + 4
    for ev, cond, service, sends in sorted(rows, key=lambda r: (_order(r[0]), r[2])):
        head = ev + (f" ({cond})" if cond else "")
        table.lines.append(f"{head:<{width}} ─▶ {service}: {sends}")
        table.edges.append((ev, cond, service))
    return [flow, undo, table]


def _order(event: str) -> int:
    names = list(e.EVENT_TYPES)
    return names.index(event) if event in names else len(names)


# -- output -------------------------------------------------------------------------------------
def diagrams(style: str) -> list[Diagram]:
    return orchestrated() if style == "orchestrated" else choreographed()


def text(style: str) -> str:
    blocks = []
    for d in diagrams(style):
        blocks.append("\n".join([d.title, *("  " + line for line in d.lines)]))
    return "\n\n".join(blocks)


def mermaid(style: str) -> str:
    blocks = []
    for d in diagrams(style):
        ids: dict[str, str] = {}
        lines = [f"%% {d.title}", "flowchart TD"]
        for node in dict.fromkeys(n for a, _, b in d.edges for n in (a, b)):
            ids[node] = f"n{len(ids)}"
            label = node.replace('"', "'")
            shape = f'(["{label}"])' if _is_event(node) else f'["{label}"]'
            lines.append(f"  {ids[node]}{shape}")
        for a, label, b in dict.fromkeys(d.edges):
            arrow = f" -->|{label}| " if label else " --> "
            lines.append(f"  {ids[a]}{arrow}{ids[b]}")
        blocks.append("```mermaid\n" + "\n".join(lines) + "\n```")
    return "\n\n".join(blocks)


def _is_event(node: str) -> bool:
    return node in e.EVENT_TYPES


def render(style: str, fmt: str) -> str:
    return mermaid(style) if fmt == "mermaid" else text(style)


MARKER = re.compile(r"(<!-- diagram style=(\w+) format=(\w+) -->\n)(.*?)(<!-- /diagram -->)", re.DOTALL)


def embed(doc: str) -> str:
    """``doc`` with every marked block replaced by what the code generates now."""

    def block(match: re.Match[str]) -> str:
        style, fmt = match.group(2), match.group(3)
        body = render(style, fmt)
        body = body if fmt == "mermaid" else f"```text\n{body}\n```"
        return f"{match.group(1)}{body}\n{match.group(5)}"

    return MARKER.sub(block, doc)


def cmd_diagram(args: argparse.Namespace, ctx: CliContext) -> int:
    if args.embed:
        path = Path(args.embed)
        if not path.is_file():
            raise UsageError(f"--embed: no file {args.embed}")
        before = path.read_text()
        if not MARKER.search(before):
            raise UsageError(f"--embed: {args.embed} has no <!-- diagram style=... format=... --> marker")
        after = embed(before)
        path.write_text(after)
        print(f"{args.embed}: {'updated' if after != before else 'already up to date'}")
        return 0
    print(render(args.style, args.format))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("diagram", help="the saga's flow, compensation and reaction diagrams, from the code")
    p.add_argument("--style", choices=STYLES, default="orchestrated")
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--embed", metavar="FILE", help="rewrite the diagram blocks marked in FILE")
    p.set_defaults(func=cmd_diagram)
