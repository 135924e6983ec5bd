"""The connection statechart: one declared table, run by ``transitions``, drawn for auditors.

Rule 1 (after h11's ``_state.py``): every transition the engine can make is a row of
:data:`TRANSITIONS`. The runtime machine, the diagrams in ``statecharts/`` and the golden test
that compares them are all built from this table, so what an auditor reads is what runs.

Rule 2: only the supervisor task fires triggers (:meth:`Statechart.fire`). Child tasks report
what they saw through a channel; they never change the state.

Guards are named methods of the policy given to :class:`Statechart`; a trigger whose rows all
fail their guards raises :class:`InvalidTransition` and leaves the state unchanged, as does a
trigger the current state does not declare.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from transitions import EventData, Machine, MachineError

from .errors import InvalidTransition

logger = logging.getLogger("trio_tradovate.transitions")
# transitions logs every callback at INFO on its own logger; our log is the one that matters.
logging.getLogger("transitions").setLevel(logging.WARNING)


class State(enum.Enum):
    """Where one engine is in its connection lifecycle."""

    #: Created, not started yet.
    DISCONNECTED = "disconnected"
    #: Getting a token if needed, opening TCP/TLS and the websocket, waiting for ``o``.
    CONNECTING = "connecting"
    #: ``authorize`` sent, waiting for its answer.
    AUTHENTICATING = "authenticating"
    #: ``user/syncrequest`` sent, waiting for the snapshot.
    SYNCING = "syncing"
    #: Snapshot applied; ``props`` events stream into the store.
    LIVE = "live"
    #: The connection is gone; waiting a jittered delay before trying again.
    BACKOFF = "backoff"
    #: Terminal: closed by the application or stopped by policy. The reason is recorded.
    STOPPED = "stopped"


RUNNING_STATES = (State.CONNECTING, State.AUTHENTICATING, State.SYNCING, State.LIVE)
NON_TERMINAL = (State.DISCONNECTED, *RUNNING_STATES, State.BACKOFF)


@dataclass(frozen=True)
class Transition:
    """One declared row: ``trigger`` moves ``source`` to ``dest`` when ``guard`` holds."""

    trigger: str
    source: tuple[State, ...]
    dest: State
    guard: str | None = None
    doc: str = ""


#: The whole statechart. Rows with the same trigger are tried in order; the first whose
#: guard holds is taken.
TRANSITIONS: tuple[Transition, ...] = (
    Transition("start", (State.DISCONNECTED,), State.CONNECTING, doc="application opened"),
    Transition("opened", (State.CONNECTING,), State.AUTHENTICATING, doc="'o' received"),
    Transition("authorized", (State.AUTHENTICATING,), State.SYNCING, doc="authorize: s=200"),
    Transition("synced", (State.SYNCING,), State.LIVE, doc="snapshot applied"),
    Transition(
        "connect_failed",
        (State.CONNECTING,),
        State.STOPPED,
        guard="retry_budget_exhausted",
        doc="no attempts left",
    ),
    Transition(
        "connect_failed", (State.CONNECTING,), State.BACKOFF, doc="DNS, TLS, refused, timeout"
    ),
    Transition(
        "lost",
        (State.AUTHENTICATING, State.SYNCING, State.LIVE),
        State.STOPPED,
        guard="retry_budget_exhausted",
        doc="no attempts left",
    ),
    Transition(
        "lost",
        (State.AUTHENTICATING, State.SYNCING, State.LIVE),
        State.BACKOFF,
        doc="drop, close, stall, shutdown, rejected or timed-out phase",
    ),
    Transition("retry", (State.BACKOFF,), State.CONNECTING, doc="backoff delay elapsed"),
    Transition(
        "penalized",
        (State.LIVE,),
        State.LIVE,
        doc="captcha or 429: lockout, only cancellations go out",
    ),
    Transition("fail", NON_TERMINAL, State.STOPPED, doc="unrecoverable: e.g. bad credentials"),
    Transition("close", NON_TERMINAL, State.STOPPED, doc="application closed the engine"),
)


class Policy(Protocol):
    """What the guards of :data:`TRANSITIONS` ask."""

    def retry_budget_exhausted(self) -> bool: ...


class _NoBudget:
    def retry_budget_exhausted(self) -> bool:
        return False


@dataclass(frozen=True)
class TransitionRecord:
    """One transition as it happened, for the audit log and for consumers."""

    seq: int
    time: float
    trigger: str
    source: State
    dest: State
    reason: str
    generation: int
    #: Which socket of a sharded engine (0 for an engine with one socket).
    shard: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (states by value)."""
        return {
            "seq": self.seq,
            "time": self.time,
            "trigger": self.trigger,
            "source": self.source.value,
            "dest": self.dest.value,
            "reason": self.reason,
            "generation": self.generation,
            "shard": self.shard,
        }


class Statechart:
    """The declared table running in a plain synchronous ``transitions.Machine``.

    ``clock`` gives the time stamped on records (the engine passes ``trio.current_time``, so
    records are reproducible under a ``MockClock``). ``on_record`` is called with each new
    record after the state changed.
    """

    state: State  # maintained by transitions

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        policy: Policy | None = None,
        on_record: Callable[[TransitionRecord], None] | None = None,
        shard: int = 0,
    ) -> None:
        self._clock = clock
        self._shard = shard
        self._policy = policy or _NoBudget()
        self._on_record = on_record
        self.records: list[TransitionRecord] = []
        self._machine = Machine(
            model=self,
            states=State,
            transitions=[_as_machine_row(row) for row in TRANSITIONS],
            initial=State.DISCONNECTED,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
            after_state_change="_record",
        )

    # Guards, looked up by name from the table.
    def retry_budget_exhausted(self, event: EventData) -> bool:
        return self._policy.retry_budget_exhausted()

    def fire(self, trigger: str, *, reason: str, generation: int = 0) -> TransitionRecord:
        """Apply ``trigger``; return the new record.

        Raises:
            InvalidTransition: the current state declares no row for ``trigger`` whose guard
                holds. The state is unchanged.
        """
        event = self._machine.events.get(trigger)
        try:
            moved = event is not None and event.trigger(self, reason=reason, generation=generation)
        except MachineError:
            moved = False
        if not moved:
            raise InvalidTransition(trigger, self.state.value)
        return self.records[-1]

    def allowed_triggers(self) -> list[str]:
        """The triggers the current state declares."""
        return sorted({row.trigger for row in TRANSITIONS if self.state in row.source})

    def _record(self, event: EventData) -> None:
        source = event.transition.source if event.transition else None
        record = TransitionRecord(
            seq=len(self.records) + 1,
            time=self._clock(),
            trigger=event.event.name if event.event else "?",
            source=State[source] if isinstance(source, str) else self.state,
            dest=self.state,
            reason=str(event.kwargs.get("reason", "")),
            generation=int(event.kwargs.get("generation", 0)),
            shard=self._shard,
        )
        self.records.append(record)
        logger.info(
            "%s -> %s on %s (generation %d): %s",
            record.source.value,
            record.dest.value,
            record.trigger,
            record.generation,
            record.reason,
            extra={"transition": record.as_dict()},
        )
        if self._on_record is not None:
            self._on_record(record)


def _as_machine_row(row: Transition) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "trigger": row.trigger,
        "source": list(row.source),
        "dest": row.dest,
    }
    if row.guard:
        spec["conditions"] = row.guard
    return spec


# ---------------------------------------------------------------------------------------------
# Diagrams, generated from TRANSITIONS only (never from a running machine, so they are stable).


def _edges(rows: Sequence[Transition]) -> list[tuple[State, State, str]]:
    edges = []
    for row in rows:
        label = row.trigger + (f" [{row.guard}]" if row.guard else "")
        for source in row.source:
            edges.append((source, row.dest, label))
    return edges


def to_mermaid() -> str:
    """The statechart as a Mermaid ``stateDiagram-v2``."""
    lines = ["stateDiagram-v2", f"    [*] --> {State.DISCONNECTED.name}"]
    for source, dest, label in _edges(TRANSITIONS):
        lines.append(f"    {source.name} --> {dest.name}: {label}")
    lines.append(f"    {State.STOPPED.name} --> [*]")
    return "\n".join(lines) + "\n"


def to_dot() -> str:
    """The statechart as Graphviz ``dot`` source (no graphviz install needed to produce it)."""
    lines = [
        "digraph connection {",
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        '    __start [shape=point, label=""];',
    ]
    for state in State:
        shape = ", peripheries=2" if state is State.STOPPED else ""
        lines.append(f'    {state.name} [label="{state.value}"{shape}];')
    lines.append(f"    __start -> {State.DISCONNECTED.name};")
    for source, dest, label in _edges(TRANSITIONS):
        lines.append(f'    {source.name} -> {dest.name} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json() -> str:
    """The table as JSON: states, initial state and every row with its guard."""
    document = {
        "initial": State.DISCONNECTED.value,
        "terminal": [State.STOPPED.value],
        "states": [state.value for state in State],
        "transitions": [
            {
                "trigger": row.trigger,
                "source": [s.value for s in row.source],
                "dest": row.dest.value,
                "guard": row.guard,
                "doc": row.doc,
            }
            for row in TRANSITIONS
        ],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


def to_markdown() -> str:
    """``statecharts/README.md``: the transition table in prose-friendly form."""
    lines = [
        "# Connection statechart",
        "",
        "Generated by `make diagrams` from `trio_tradovate.statechart.TRANSITIONS`, the table the",
        "engine runs. Do not edit: a test regenerates these files and fails on any difference.",
        "",
        "Files: `connection.mmd` (Mermaid), `connection.dot` (Graphviz), `connection.json`.",
        "",
        "## States",
        "",
        "| state | meaning |",
        "|---|---|",
    ]
    docs = _state_docs()
    for state in State:
        lines.append(f"| `{state.value}` | {docs.get(state.name, '')} |")
    lines += [
        "",
        "## Transitions",
        "",
        "Rows with the same trigger are tried in order; the first whose guard holds is taken.",
        "",
        "| trigger | from | to | guard | when |",
        "|---|---|---|---|---|",
    ]
    for row in TRANSITIONS:
        sources = ", ".join(f"`{s.value}`" for s in row.source)
        guard = f"`{row.guard}`" if row.guard else ""
        lines.append(f"| `{row.trigger}` | {sources} | `{row.dest.value}` | {guard} | {row.doc} |")
    lines += ["", "```mermaid", to_mermaid().rstrip("\n"), "```", ""]
    return "\n".join(lines)


def _state_docs() -> dict[str, str]:
    """State descriptions, read from the ``#:`` comments above each member (one source)."""
    import inspect

    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(State).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif "=" in stripped and pending:
            docs[stripped.split("=")[0].strip()] = " ".join(pending)
            pending = []
    return docs


DIAGRAM_FILES: dict[str, Callable[[], str]] = {
    "connection.mmd": to_mermaid,
    "connection.dot": to_dot,
    "connection.json": to_json,
    "README.md": to_markdown,
}
