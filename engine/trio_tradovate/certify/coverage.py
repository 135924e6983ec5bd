"""Transition coverage: which declared moves and which (node, trigger) cells were exercised.

A total table declares an outcome for every pair, which is what makes it auditable; the
question an auditor asks next is which of those pairs any run ever reached. :class:`Coverage`
is a :data:`~trio_tradovate.statechart.FIRE_OBSERVERS` observer that counts them, for a
certification run (per scenario and overall) or for the whole test suite
(``pytest -p trio_tradovate.certify.pytest_plugin --transition-coverage=FILE``).

Every event a socket's session produces goes through ``Statechart.fire``, the hot path's
``handle`` cells included (a read's ``props`` events fire once, as one run), so every cell is
observable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..statechart import (
    CONNECTION_TABLE,
    FIRE_OBSERVERS,
    PENALTY_TABLE,
    Outcome,
    Rule,
    Table,
)

TABLES: tuple[Table[Any, Any], ...] = (CONNECTION_TABLE, PENALTY_TABLE)


def _value(member: Any) -> str:
    return str(member.value)


class Coverage:
    """Counts of fired cells ``(table, node, trigger)`` and moves ``(table, row, source)``."""

    def __init__(self) -> None:
        self.cells: Counter[tuple[str, str, str]] = Counter()
        self.moves: Counter[tuple[str, int, str]] = Counter()
        self._rows: dict[int, int] = {
            id(rule): index for table in TABLES for index, rule in enumerate(table.rules)
        }
        #: Who is running now (the test suite sets the test's module), and which of them
        #: reached each cell: shows the cells only one place ever exercises.
        self.label: str | None = None
        self.reached_by: dict[tuple[str, str, str], set[str]] = {}

    def __repr__(self) -> str:
        return f"<Coverage cells={len(self.cells)} moves={len(self.moves)}>"

    def observe(
        self, table: Table[Any, Any], node: Any, trigger: Any, rule: Rule[Any, Any]
    ) -> None:
        """The :data:`FIRE_OBSERVERS` callback."""
        cell = (table.name, _value(node), str(trigger))
        self.cells[cell] += 1
        if self.label is not None:
            self.reached_by.setdefault(cell, set()).add(self.label)
        if rule.outcome is Outcome.MOVE:
            self.moves[(table.name, self._rows.get(id(rule), -1), _value(node))] += 1

    def update(self, other: Coverage) -> None:
        self.cells.update(other.cells)
        self.moves.update(other.moves)

    @contextmanager
    def installed(self) -> Iterator[Coverage]:
        """Observe every chart while the block runs."""
        FIRE_OBSERVERS.append(self.observe)
        try:
            yield self
        finally:
            FIRE_OBSERVERS.remove(self.observe)

    # ----------------------------------------------------------------------------- figures

    def summary(self) -> dict[str, Any]:
        """Exercised / declared counts per table."""
        out: dict[str, Any] = {}
        for table in TABLES:
            hit = [
                (n, t) for (n, t) in table.cells if self.cells[(table.name, _value(n), str(t))] > 0
            ]
            edges = [
                (index, source)
                for index, rule in enumerate(table.rules)
                if rule.outcome is Outcome.MOVE
                for source in rule.source
            ]
            edges_hit = [(i, s) for (i, s) in edges if self.moves[(table.name, i, _value(s))] > 0]
            out[table.name] = {
                "cells_declared": len(table.cells),
                "cells_exercised": len(hit),
                "moves_declared": len(edges),
                "moves_exercised": len(edges_hit),
            }
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "cells": [
                {
                    "table": t,
                    "node": n,
                    "trigger": g,
                    "count": c,
                    **(
                        {"reached_by": sorted(self.reached_by[(t, n, g)])}
                        if (t, n, g) in self.reached_by
                        else {}
                    ),
                }
                for (t, n, g), c in sorted(self.cells.items())
            ],
            "moves": [
                {
                    "table": t,
                    "row": i,
                    "source": s,
                    "trigger": str(_table(t).rules[i].trigger),
                    "dest": _value(_table(t).rules[i].dest),
                    "guard": _table(t).rules[i].guard,
                    "count": c,
                }
                for (t, i, s), c in sorted(self.moves.items())
                if i >= 0
            ],
        }

    def markdown(self) -> list[str]:
        """The matrices: every cell of every table, marked exercised or never."""
        lines: list[str] = []
        summary = self.summary()
        for table in TABLES:
            figures = summary[table.name]
            lines += [
                f"### Table `{table.name}`",
                "",
                f"- (node, trigger) cells: {figures['cells_exercised']} of "
                f"{figures['cells_declared']} declared cells exercised",
                f"- declared moves (row x source node): {figures['moves_exercised']} of "
                f"{figures['moves_declared']} exercised",
                "",
                "Cell legend: `outcome` then `xN` (fired N times), `never` (declared, not "
                "reached).",
                "",
                "| trigger | " + " | ".join(f"`{_value(n)}`" for n in table.nodes) + " |",
                "|---|" + "---|" * len(table.nodes),
            ]
            for trigger in table.triggers:
                row = []
                for node in table.nodes:
                    rule = table.cells[(node, trigger)][0]
                    kind = "move" if rule.outcome is Outcome.MOVE else rule.outcome.value
                    count = self.cells[(table.name, _value(node), str(trigger))]
                    row.append(f"{kind} **x{count}**" if count else f"{kind} never")
                lines.append(f"| `{trigger}` | " + " | ".join(row) + " |")
            lines += ["", "| move | from | to | guard | exercised |", "|---|---|---|---|---|"]
            for index, rule in enumerate(table.rules):
                if rule.outcome is not Outcome.MOVE:
                    continue
                for source in rule.source:
                    count = self.moves[(table.name, index, _value(source))]
                    lines.append(
                        f"| `{rule.trigger}` | `{_value(source)}` | `{_value(rule.dest)}` | "
                        f"{'`' + str(rule.guard) + '`' if rule.guard else ''} | "
                        f"{'x' + str(count) if count else '**never**'} |"
                    )
            lines.append("")
        if self.reached_by:
            single = sorted(
                (sorted(labels)[0], cell)
                for cell, labels in self.reached_by.items()
                if len(labels) == 1
            )
            lines += [
                f"### Cells only one test module reaches ({len(single)})",
                "",
                "A change that breaks one of these is caught by that module alone.",
                "",
                "| module | table | node | trigger |",
                "|---|---|---|---|",
                *[f"| `{label}` | {t} | `{n}` | `{g}` |" for label, (t, n, g) in single],
                "",
            ]
        return lines

    def exercised_moves(self) -> set[tuple[int, str]]:
        """``(row, source node)`` of the exercised connection moves (for the diagram)."""
        return {
            (index, source)
            for (name, index, source), count in self.moves.items()
            if name == CONNECTION_TABLE.name and index >= 0 and count
        }


def _table(name: str) -> Table[Any, Any]:
    for table in TABLES:
        if table.name == name:
            return table
    raise KeyError(name)
