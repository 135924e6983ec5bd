"""The live view of ``trio-tradovate demo`` and ``stream`` in a terminal (the ``console``
extra, ``rich``), and the periodic status line of long runs.

Why an extra and not a core dependency: an application embeds the engine and has its own
output; only the command line draws a view, and ``rich`` (with its own dependencies) has no
business in a trading process's import graph. Without it the commands print plain lines.

Everything drawn comes from one :class:`~trio_tradovate.health.EngineSnapshot` plus the
account lines, so :func:`render` is a pure function of its inputs, tested by rendering to a
string.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .health import EngineSnapshot
from .statechart import State

#: Colour of each state in the view.
STATE_STYLE = {
    State.LIVE: "bold green",
    State.SYNCING: "cyan",
    State.AUTHENTICATING: "cyan",
    State.CONNECTING: "yellow",
    State.BACKOFF: "bold red",
    State.DISCONNECTED: "dim",
    State.STOPPED: "bold magenta",
}


@dataclass(frozen=True)
class Rates:
    """Frames and events per second between two snapshots."""

    frames: float = 0.0
    events: float = 0.0

    @classmethod
    def between(cls, before: EngineSnapshot | None, after: EngineSnapshot) -> Rates:
        if before is None or after.taken_at <= before.taken_at:
            return cls()
        span = after.taken_at - before.taken_at

        def rate(name: str) -> float:
            return (after.counters.get(name, 0) - before.counters.get(name, 0)) / span

        return cls(rate("frames_received"), rate("props_events"))


def render(
    snapshot: EngineSnapshot,
    accounts: str = "",
    rates: Rates | None = None,
    title: str = "trio-tradovate",
    panels: Mapping[str, str] | None = None,
) -> RenderableType:
    """The whole view: sockets, recent transitions, the account, any further ``panels``
    (title to text, e.g. quotes once a market-data feed exists), counters."""
    sockets = Table(title="sockets", expand=True)
    for column in ("socket", "state", "node", "for", "gen", "failed", "last frame"):
        sockets.add_column(column)
    for s in snapshot.sockets:
        sockets.add_row(
            str(s.index),
            Text(s.state.value, style=STATE_STYLE[s.state]),
            s.node,
            f"{s.time_in_state:.1f} s",
            str(s.generation),
            str(s.failed_attempts),
            "-" if s.last_frame_age is None else f"{s.last_frame_age:.1f} s ago",
        )
    recent = Table(title="recent transitions", expand=True)
    for column in ("seq", "wall time", "socket", "move", "reason"):
        recent.add_column(column)
    for record in snapshot.recent:
        recent.add_row(
            str(record.seq),
            record.wall_time[11:23] if record.wall_time else f"{record.time:.2f}",
            str(record.shard),
            f"{record.source_node or record.source.value} -> "
            f"{record.dest_node or record.dest.value}",
            record.reason,
        )
    rates = rates or Rates()
    counts = snapshot.counters
    faults = ", ".join(
        f"{name.removeprefix('fault.')} {n}"
        for name, n in sorted(counts.items())
        if name.startswith("fault.")
    )
    ready, why = snapshot.ready()
    token = (
        "unknown" if snapshot.token_seconds_left is None else f"{snapshot.token_seconds_left:.0f} s"
    )
    lockout = f"{snapshot.lockout_seconds_left:.0f} s left" if snapshot.locked_out else "none"
    lines = [
        f"engine {snapshot.state.value}; ready: {'yes' if ready else 'no (' + why + ')'}",
        f"frames {counts.get('frames_received', 0)} ({rates.frames:.1f}/s), "
        f"events {counts.get('props_events', 0)} ({rates.events:.1f}/s), "
        f"reconnects {counts.get('reconnects', 0)}, faults: {faults or 'none'}",
        f"waiting for the consumer {snapshot.delivery.get('waiting', 0)}, "
        f"coalesced {snapshot.delivery.get('coalesced', 0)}, "
        f"queued requests {snapshot.queued_requests}",
        f"lockout {lockout}, token left {token}",
    ]
    counters = Text("\n".join(lines))
    return Panel(
        Group(
            sockets,
            recent,
            Panel(Text(accounts.rstrip() or "(no accounts yet)"), title="account"),
            *(Panel(Text(text.rstrip()), title=name) for name, text in (panels or {}).items()),
            counters,
        ),
        title=f"{title}  {snapshot.wall_time[:19]}",
    )


def render_text(
    snapshot: EngineSnapshot,
    accounts: str = "",
    rates: Rates | None = None,
    width: int = 100,
    panels: Mapping[str, str] | None = None,
) -> str:
    """:func:`render` as plain text (no colour codes), e.g. for a test or a log."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(render(snapshot, accounts, rates, panels=panels))
    return console.export_text()


async def run_live_view(
    snapshot: Callable[[], EngineSnapshot],
    accounts: Callable[[], str],
    console: Console,
    *,
    interval: float = 0.5,
    title: str = "trio-tradovate",
    panels: Callable[[], Mapping[str, str]] | None = None,
) -> None:
    """Redraw the view every ``interval`` seconds until cancelled (refreshed from this task,
    not from ``rich``'s own thread); ``panels`` gives the further panels of each frame (the
    demo's quotes)."""
    before: EngineSnapshot | None = None
    with Live(console=console, auto_refresh=False, redirect_stdout=False) as live:
        while True:
            now = snapshot()
            extra = panels() if panels is not None else None
            view = render(now, accounts(), Rates.between(before, now), title, extra)
            live.update(view, refresh=True)
            before = now
            await trio.sleep(interval)
