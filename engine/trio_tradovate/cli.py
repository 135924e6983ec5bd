"""The trio-tradovate command: demo, stream, sim, certify and diagram.

Every command is an ``async def run_*`` that tests drive under a virtual clock; :func:`main`
only parses arguments, turns configuration mistakes into one line and exit code 2, and runs
trio. The conventions every subcommand shares live in one place each (docs/operations.md):

- :func:`until_stopped` ends a command cleanly on SIGINT or SIGTERM (exit 0, no traceback);
- :func:`_exit_code` maps what escaped a command to an exit code: a closed pipe
  (``stream | head``) and a requested stop are 0, a configuration mistake is one line and 2,
  a policy stop is one line and 1;
- :class:`CliParser` makes every argument error one line and exit code 2;
- :func:`add_connection_flags`, :func:`add_output_flags` and :func:`add_logging_flags` are
  the flag groups a command that talks to Tradovate, prints a view, or logs adds to its parser.

A new command adds a parser block in :func:`build_parser` (with those groups) and one branch
in :func:`_run`: ``config_from_env(args, os.environ)`` for its engine config,
``_configure_logging(args)``, then ``trio.run(until_stopped, partial(run_mine, ...))``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

import orjson
import trio

from . import __version__
from .config import ENVIRONMENTS, Credentials, EngineConfig
from .engine import Engine, open_engine
from .errors import ConfigError, EngineStopped
from .statechart import DIAGRAM_FILES, State, TransitionRecord
from .store import EntityChange

EXIT_USAGE = 2

#: The signals that ask any command to stop (exit code 0).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: The environment variables ``stream`` (and ``certify`` against a real target) read.
ENV_VARS = {
    "TRADOVATE_USERNAME": "login name",
    "TRADOVATE_PASSWORD": "password",
    "TRADOVATE_APP_ID": "application id (API-key logins)",
    "TRADOVATE_APP_VERSION": "application version (default 1.0)",
    "TRADOVATE_CID": "API key client id: a whole number",
    "TRADOVATE_SEC": "API key secret",
    "TRADOVATE_DEVICE_ID": "device id",
    "TRADOVATE_ACCESS_TOKEN": "an access token to use as is, instead of logging in",
}

logger = logging.getLogger("trio_tradovate.cli")


# ---------------------------------------------------------------------- shared conventions


async def until_stopped(
    body: Callable[[], Awaitable[int]], *, stop_signals: Sequence[int] = STOP_SIGNALS
) -> int:
    """Run ``body`` until it returns (its exit code) or one of ``stop_signals`` arrives (0).

    The signal cancels ``body`` like any cancellation, so its ``async with`` blocks (engine,
    simulator, server) close as on a normal exit.
    """
    result = 0
    with trio.open_signal_receiver(*stop_signals) as received:
        async with trio.open_nursery() as nursery:

            async def run_body() -> None:
                nonlocal result
                result = await body()
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                async for signum in received:
                    logger.info("%s received: stopping", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(run_body)
            nursery.start_soon(watch)
    return result


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _silence_stdout() -> None:
    """The reader of stdout went away: point stdout at /dev/null so the interpreter's final
    flush does not report the broken pipe again."""
    with suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _exit_code(exc: BaseException, err: TextIO) -> int:
    """The exit code for what escaped a command, printing one line where one is due; anything
    unexpected is re-raised (a bug deserves its traceback)."""
    leaves = _leaves(exc)
    if any(isinstance(leaf, BrokenPipeError) for leaf in leaves):
        _silence_stdout()
    for leaf in leaves:
        if isinstance(leaf, ConfigError):
            err.write(f"trio-tradovate: {leaf}\n")
            return EXIT_USAGE
    for leaf in leaves:
        if isinstance(leaf, EngineStopped):
            err.write(f"trio-tradovate: {leaf}\n")
            return 1
    if all(isinstance(leaf, KeyboardInterrupt | BrokenPipeError) for leaf in leaves):
        return 0
    raise exc


def _forward_sigterm_as_sigint() -> None:
    """Before trio runs (and for the synchronous commands), SIGTERM is handled as SIGINT is,
    by the SIGINT handler in place: trio's while it runs (``KeyboardInterrupt`` at a safe
    point), Python's otherwise. One path for both signals.

    A background job of a non-interactive shell inherits SIGINT ignored; an explicit
    ``kill -INT`` is still a request to stop, so Python's handler is put back first (trio only
    installs its own over Python's)."""
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def forward(signum: int, frame: FrameType | None) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)

    signal.signal(signal.SIGTERM, forward)


class CliParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``trio-tradovate stream: error: ...``)
    and exit code 2, and whose help keeps the text as written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        description = kwargs.get("description")
        if description and "\n" not in description:  # one paragraph: wrap it as argparse would
            kwargs["description"] = textwrap.fill(description, 79)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def port_number(text: str) -> int:
    """A TCP port, 0 (pick a free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535; 0 picks a free one)")
    return port


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


def seconds_or_zero(text: str) -> float:
    """A finite number of seconds >= 0 (0 turns the thing off)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text}")
    return value


def utc_instant(text: str) -> str:
    """An ISO 8601 instant such as 2026-01-05T14:30:00Z (a zone is required)."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 instant: {text!r} (e.g. 2026-01-05T14:30:00Z)"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no zone: add Z for UTC")
    return parsed.astimezone(UTC).isoformat()


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """``--env``, ``--rest-url``, ``--ws-url``: where a command connects (with ``TRADOVATE_*``
    credentials, see :func:`config_from_env`)."""
    parser.add_argument(
        "--env", choices=sorted(ENVIRONMENTS), default="demo", help="Tradovate environment (demo)"
    )
    parser.add_argument("--rest-url", help="REST base, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--ws-url", help="websocket URL (default: derived from the REST base)")


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``--view`` and ``--status-every``: what a long-running command prints."""
    parser.add_argument(
        "--view",
        choices=("auto", "live", "plain"),
        default="auto",
        help="live: a live view (needs the console extra); plain: lines as text or JSON; "
        "auto (default): live when stdout is a terminal and rich is installed",
    )
    parser.add_argument(
        "--status-every",
        type=seconds_or_zero,
        default=60.0,
        metavar="SECONDS",
        help="print a status line to stderr this often in plain view (60; 0: never)",
    )


def add_logging_flags(parser: argparse.ArgumentParser, default_level: str = "warning") -> None:
    """``--log-format`` and ``--log-level``, on every command."""
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines on stderr as text or as JSON objects with the structured fields",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=default_level,
        help=f"least severe log records shown ({default_level})",
    )


def _live_view_wanted(view: str, out: TextIO) -> bool:
    if view == "plain":
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        if view == "live":
            raise ConfigError(
                "--view live needs rich: pip install 'trio-tradovate[console]'"
            ) from None
        return False
    return view == "live" or out.isatty()


# ------------------------------------------------------------------------------------ diagram


def run_diagram(write: Path | None, fmt: str, out: TextIO) -> int:
    """Print one diagram, or write every statechart file into ``write``.

    Raises:
        ConfigError: ``write`` cannot be created or written.
    """
    if write is None:
        out.write(DIAGRAM_FILES[f"connection.{fmt}"]())
        return 0
    try:
        write.mkdir(parents=True, exist_ok=True)
        for name, render in DIAGRAM_FILES.items():
            (write / name).write_text(render())
            out.write(f"wrote {write / name}\n")
    except OSError as exc:
        raise ConfigError(f"--write {write}: {exc.strerror or exc}") from None
    return 0


# --------------------------------------------------------------------------------------- demo


def _format_transition(record: TransitionRecord, origin: float) -> str:
    return (
        f"[{record.time - origin:7.2f}s] #{record.seq:<3} {record.source.value:>14} -> "
        f"{record.dest.value:<14} gen {record.generation}  {record.reason}"
    )


def account_view(engine: Engine) -> str:
    """A few lines per account: open positions, working orders, fills, cash."""
    views = engine.views
    lines = []
    for account in views.accounts():
        positions = [
            f"{(views.contract(p.contract_id) or p).raw.get('name', p.contract_id)} {p.net_pos:+}"
            for p in views.positions(account.id, open_only=True)
            if p.contract_id is not None and p.net_pos is not None
        ]
        working = views.orders(account.id, working_only=True)
        fills = views.fills(account_id=account.id)
        cash = sum(b.amount or 0.0 for b in views.cash_balances(account.id))
        lines.append(
            f"  {account.name or account.id}: {', '.join(positions) or 'flat'}; "
            f"{len(working)} working, {len(fills)} fills; cash {cash:,.2f}\n"
        )
    return "".join(lines) or "  (no accounts)\n"


async def _live_view(
    engine: Engine,
    title: str,
    console: Any = None,
    panels: Callable[[], Mapping[str, str]] | None = None,
) -> None:
    """The rich live view of ``engine`` on ``console`` (default: the terminal), until
    cancelled; ``panels`` adds further panels (the demo's quotes)."""
    from rich.console import Console

    from .console import run_live_view

    await run_live_view(
        engine.snapshot_metrics,
        partial(account_view, engine),
        console or Console(),
        title=title,
        panels=panels,
    )


async def run_demo(
    duration: float,
    seed: int,
    out: TextIO,
    *,
    live_view: bool = False,
    view_console: Any = None,
    status_every: float = 0.0,
    err: TextIO = sys.stderr,
) -> int:
    """Simulator and engine in one process; one forced drop halfway; transitions as they
    happen (or, with ``live_view``, the live view on ``view_console``, a ``rich`` console,
    default the terminal)."""
    from .sim import SimConfig, open_simulator

    async with open_simulator(SimConfig(seed=seed)) as sim:
        config = sim.engine_config(seed=seed, market_data=True)
        out.write(
            "trio-tradovate demo: engine <-> embedded Tradovate simulator "
            f"(seed {seed}, {duration:g} s)\n"
        )
        origin = trio.current_time()
        async with open_engine(config) as engine, trio.open_nursery() as nursery:
            transitions = engine.watch_transitions()

            async def show_transitions() -> None:
                async for record in transitions:
                    out.write(_format_transition(record, origin) + "\n")

            from .cli_quotes import QuoteBoard

            assert engine.market_data is not None
            board = QuoteBoard([engine.market_data.quotes(s) for s in ("ESZ6", "NQZ6")])
            if live_view:
                nursery.start_soon(
                    partial(
                        _live_view,
                        engine,
                        "trio-tradovate demo",
                        view_console,
                        lambda: {"quotes": board.lines()},
                    )
                )
            else:
                nursery.start_soon(show_transitions)
                if status_every > 0:
                    nursery.start_soon(_status_lines, engine, err, status_every)
            started = trio.current_time()
            dropped = False
            while trio.current_time() - started < duration:
                await trio.sleep(min(2.0, duration))
                if engine.state is State.LIVE and not live_view:
                    out.write(
                        f"account after {trio.current_time() - started:5.1f} s "
                        f"({engine.counters['props_events']} events):\n"
                    )
                    out.write(account_view(engine))
                    out.write("quotes:\n" + board.lines())
                if not dropped and trio.current_time() - started >= duration / 2:
                    dropped = True
                    if not live_view:
                        out.write(">>> simulator drops every connection now (abrupt TCP drop)\n")
                    await sim.drop_connections()
            nursery.cancel_scope.cancel()
        for record in engine.transitions[-1:]:
            out.write(_format_transition(record, origin) + "\n")
        sim.pause_activity()
        reconnects = sum(1 for r in engine.transitions if r.trigger == "retry")
        out.write(f"done: {reconnects} reconnect(s), {len(engine.store)} entities in store\n")
    return 0


# ------------------------------------------------------------------------------------- stream


def _whole_number(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name) or None
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {text!r}") from None


def config_from_env(args: argparse.Namespace, env: Mapping[str, str]) -> EngineConfig:
    """Build a config from ``--env``/``--rest-url``/``--ws-url`` and ``TRADOVATE_*`` variables.

    Raises:
        ConfigError: something is missing or malformed; the message says what to set.
    """
    rest_url = args.rest_url or ENVIRONMENTS[args.env]
    token = env.get("TRADOVATE_ACCESS_TOKEN") or None
    credentials = None
    if env.get("TRADOVATE_USERNAME") or env.get("TRADOVATE_PASSWORD") or not token:
        missing = [v for v in ("TRADOVATE_USERNAME", "TRADOVATE_PASSWORD") if not env.get(v)]
        if missing and not token:
            raise ConfigError(
                f"set {' and '.join(missing)} (plus TRADOVATE_APP_ID, TRADOVATE_CID, "
                "TRADOVATE_SEC for API-key logins), or TRADOVATE_ACCESS_TOKEN"
            )
        if not missing:
            credentials = Credentials(
                username=env["TRADOVATE_USERNAME"],
                password=env["TRADOVATE_PASSWORD"],
                app_id=env.get("TRADOVATE_APP_ID") or None,
                app_version=env.get("TRADOVATE_APP_VERSION") or "1.0",
                cid=_whole_number(env, "TRADOVATE_CID"),
                sec=env.get("TRADOVATE_SEC") or None,
                device_id=env.get("TRADOVATE_DEVICE_ID") or None,
            )
    return EngineConfig(
        rest_url=rest_url.rstrip("/"),
        ws_url=args.ws_url,
        credentials=credentials,
        access_token=token if credentials is None else None,
    )


async def wait_for_stop(stop_signals: Sequence[int]) -> None:
    """Until one of ``stop_signals`` arrives; with none, until cancelled (the command's
    nursery is cancelled when the engine stops by policy)."""
    if stop_signals:
        with trio.open_signal_receiver(*stop_signals) as signals:
            async for _ in signals:
                return
    await trio.sleep_forever()


def stopped_status(engine: Engine, err: TextIO) -> int:
    """A long-running command's exit status once its engine is closed: 1 with one line on
    ``err`` when the engine stopped by policy, else 0 (a signal or the caller stopped it)."""
    if engine.stop_error is not None:
        err.write(f"trio-tradovate: the engine stopped: {engine.stop_reason}\n")
        return 1
    return 0


def _json_line(kind: str, payload: dict[str, Any]) -> str:
    return orjson.dumps({"type": kind, **payload}).decode() + "\n"


async def _status_lines(engine: Engine, err: TextIO, every: float) -> None:
    """A status line every ``every`` seconds (long runs), until cancelled."""
    while True:
        await trio.sleep(every)
        snap = engine.snapshot_metrics()
        err.write(f"status {snap.wall_time[:19]} {snap.status_line()}\n")
        err.flush()


def _engine_metrics(engine: Engine) -> Any:
    """An ``EngineMetrics`` of ``engine``, or ``None`` without the metrics extra."""
    try:
        from .metrics import EngineMetrics
    except ImportError:
        logger.warning("prometheus-client is not installed: /metrics is off, health is on")
        return None
    return EngineMetrics(engine.snapshot_metrics)


async def _serve_metrics(
    engine: Engine,
    port: int,
    metrics: Any,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``/metrics`` (with the metrics extra) and the health endpoints on 127.0.0.1."""
    from .monitoring import serve_monitoring

    exposition = None if metrics is None else metrics.exposition
    try:
        await serve_monitoring(
            engine.snapshot_metrics, port, metrics=exposition, task_status=task_status
        )
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: {exc.strerror or exc}") from None


async def run_stream(
    config: EngineConfig,
    out: TextIO,
    *,
    stop_signals: Sequence[int] = STOP_SIGNALS,
    until: Callable[[Engine], bool] | None = None,
    err: TextIO = sys.stderr,
    live_view: bool = False,
    status_every: float = 0.0,
    metrics_port: int | None = None,
) -> int:
    """One JSON line per transition and per entity change (or the live view), until a signal
    (exit 0) or until the engine stops by policy (bad credentials, retry budget: one line on
    ``err``, exit 1).

    The printers live in a nursery *outside* the engine, so the final ``stopped`` transition
    is printed too: the engine closes both channels when it reaches that state.
    """
    async with trio.open_nursery() as nursery, open_engine(config) as engine:
        metrics = None
        if metrics_port is not None:
            metrics = _engine_metrics(engine)
            bound = await nursery.start(_serve_metrics, engine, metrics_port, metrics)
            err.write(f"monitoring on http://127.0.0.1:{bound} (/metrics, /healthz/ready)\n")
            err.flush()
        transitions = engine.watch_transitions()
        changes = engine.events()

        async def print_transitions() -> None:
            async for record in transitions:
                if not live_view:
                    out.write(_json_line("transition", record.as_dict()))
                    out.flush()

        async def print_changes() -> None:
            change: EntityChange
            async for change in changes:
                if metrics is not None:
                    metrics.latency.observe_engine(engine)
                if not live_view:
                    out.write(_json_line("change", change.as_dict()))
                    out.flush()
                if until is not None and until(engine):
                    nursery.cancel_scope.cancel()

        async def stop_with_the_engine() -> None:
            with suppress(EngineStopped):
                await engine.wait_for(State.STOPPED)
            nursery.cancel_scope.cancel()

        nursery.start_soon(print_transitions)
        nursery.start_soon(print_changes)
        nursery.start_soon(stop_with_the_engine)
        if live_view:
            nursery.start_soon(_live_view, engine, "trio-tradovate stream")
        elif status_every > 0:
            nursery.start_soon(_status_lines, engine, err, status_every)
        await wait_for_stop(stop_signals)
    return stopped_status(engine, err)


# ---------------------------------------------------------------------------------------- sim


def parse_fault_schedule(specs: Sequence[str]) -> list[tuple[float, dict[str, Any]]]:
    """``SECONDS:JSON`` items, e.g. ``30:{"kind":"drop"}``, sorted by time.

    Raises:
        ConfigError: an item is not ``SECONDS:JSON`` with a known ``kind``.
    """
    from .sim import FAULT_KINDS

    schedule = []
    for spec in specs:
        at, _, text = spec.partition(":")
        try:
            when = float(at)
            fault = orjson.loads(text)
        except (ValueError, orjson.JSONDecodeError):
            raise ConfigError(
                f'--fault {spec!r}: use SECONDS:JSON, e.g. 30:\'{{"kind":"drop"}}\''
            ) from None
        if not (when >= 0 and math.isfinite(when)):
            raise ConfigError(f"--fault {spec!r}: SECONDS must be a finite number >= 0")
        if not isinstance(fault, dict) or fault.get("kind") not in FAULT_KINDS:
            raise ConfigError(
                f"--fault {spec!r}: 'kind' must be one of {', '.join(sorted(FAULT_KINDS))}"
            )
        schedule.append((when, fault))
    return sorted(schedule, key=lambda item: item[0])


async def _log_sim_activity(sim: Any, every: float = 0.25) -> None:
    """Log each websocket the simulator accepts or closes and each fault injected, however it
    was injected (schedule or control endpoint), by watching the simulator's audit."""
    seen_open: set[int] = set()
    seen_closed: set[int] = set()
    faults: dict[str, int] = {}
    while True:
        for audit in sim.sockets:
            if audit.index not in seen_open:
                seen_open.add(audit.index)
                logger.info("websocket #%d opened", audit.index)
            if audit.close_reason is not None and audit.index not in seen_closed:
                seen_closed.add(audit.index)
                logger.info(
                    "websocket #%d closed: %s",
                    audit.index,
                    audit.close_reason,
                )
        for kind, count in sim.injected.items():
            if count > faults.get(kind, 0):
                faults[kind] = count
                logger.info(
                    "fault injected: %s (%d so far)", kind, count, extra={"fault_kind": kind}
                )
        await trio.sleep(every)


async def run_sim(
    host: str,
    port: int,
    seed: int,
    out: TextIO,
    *,
    faults: Sequence[tuple[float, Mapping[str, Any]]] = (),
    epoch: str | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """A simulator on a real loopback port; prints its URLs, applies scheduled faults, logs
    connections and faults, and runs until cancelled. Faults can also be applied at any time
    through the control endpoint.

    ``epoch`` is the simulator's wall-clock time at start (ISO 8601); ``None`` means now, so
    token expiry times agree with the client's clock.

    Raises:
        ConfigError: the port cannot be bound (in use, or not allowed).
    """
    from .sim import FaultError, SimConfig, apply_fault, open_simulator, open_simulator_server

    start = epoch or datetime.now(UTC).isoformat()
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(open_simulator(SimConfig(seed=seed, epoch=start)))
        try:
            server = await stack.enter_async_context(
                open_simulator_server(sim, host=host, port=port)
            )
        except (OSError, ExceptionGroup) as exc:
            failure = next((e for e in _leaves(exc) if isinstance(e, OSError)), None)
            if failure is None:
                raise
            raise ConfigError(
                f"--port {port}: cannot listen on {host}: {failure.strerror or failure}"
            ) from None
        base = server.rest_url.removesuffix("/v1")
        out.write(f"REST      {server.rest_url}\n")
        out.write(f"websocket {server.ws_url}\n")
        out.write(f"faults    POST {base}/_sim/fault  (JSON, see --list-faults)\n")
        out.write(
            f"user {sim.config.username!r} (password: the SimConfig default, see "
            f"docs/simulator.md); clock starts at {start}; Ctrl-C stops\n"
        )
        out.flush()
        task_status.started(server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_log_sim_activity, sim)
            started = trio.current_time()
            for when, fault in faults:
                await trio.sleep_until(started + when)
                try:
                    await apply_fault(sim, fault)
                except FaultError as exc:
                    logger.warning("fault %s rejected: %s", fault, exc)
                else:
                    out.write(f"[{when:7.1f}s] fault applied: {orjson.dumps(fault).decode()}\n")
                    out.flush()
            await trio.sleep_forever()


# ------------------------------------------------------------------------------------- parser

_DESCRIPTION = """\
Keep a Trio application connected to the Tradovate websocket API.

Every command stops cleanly on Ctrl-C or SIGTERM (exit 0). A mistake in the arguments or the
environment is one line on stderr and exit 2; an engine stopped by policy (bad credentials,
retries used up) is exit 1. See docs/operations.md.
"""


def _env_epilog() -> str:
    lines = ["environment variables (credentials; never logged):"]
    lines += [f"  {name:24} {text}" for name, text in ENV_VARS.items()]
    lines.append("")
    lines.append("Give TRADOVATE_USERNAME and TRADOVATE_PASSWORD (plus the API key variables),")
    lines.append("or TRADOVATE_ACCESS_TOKEN.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also documents every command in ``--help``)."""
    parser = CliParser(prog="trio-tradovate", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="the engine against the embedded simulator",
        description="The engine against the embedded simulator: transitions, the account, "
        "and one forced drop halfway through.",
    )
    demo.add_argument("--duration", type=positive_seconds, default=20.0, help="seconds (20)")
    demo.add_argument("--seed", type=int, default=1, help="simulator and jitter seed (1)")
    add_output_flags(demo)
    add_logging_flags(demo)

    stream = commands.add_parser(
        "stream",
        help="connect to a Tradovate-compatible endpoint; JSON lines to stdout",
        description="Connect to Tradovate (or a compatible endpoint such as trio-tradovate "
        "sim) and print every transition and entity change as a JSON line, or a live view "
        "in a terminal.",
        epilog=_env_epilog(),
    )
    add_connection_flags(stream)
    stream.add_argument(
        "--metrics-port",
        type=port_number,
        metavar="PORT",
        help="serve /metrics (metrics extra), /healthz/live and /healthz/ready on "
        "127.0.0.1:PORT (0 picks a free port)",
    )
    add_output_flags(stream)
    add_logging_flags(stream)

    sim = commands.add_parser(
        "sim",
        help="run the simulator on a loopback port",
        description="Run the Tradovate-compatible simulator on a loopback port; it logs every "
        "websocket it accepts and every fault injected.",
    )
    sim.add_argument("--host", default="127.0.0.1", help="loopback address (127.0.0.1)")
    sim.add_argument("--port", type=port_number, default=0, help="0 picks a free port (0)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the simulated world (0)")
    sim.add_argument(
        "--epoch",
        type=utc_instant,
        help="the simulator's wall-clock time at start, e.g. 2026-01-05T14:30:00Z "
        "(default: now, so token expiry agrees with the client's clock)",
    )
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SECONDS:JSON",
        help='apply a fault at a time, e.g. 30:\'{"kind":"drop"}\' (repeatable)',
    )
    sim.add_argument("--list-faults", action="store_true", help="list the fault kinds and exit")
    add_logging_flags(sim, default_level="info")

    certify = commands.add_parser(
        "certify",
        help="run Tradovate's Stage 2 tests and write the evidence pack",
        description="Run Tradovate's Stage 2 websocket tests and write the evidence pack.",
    )
    from .certify.command import add_arguments

    add_arguments(certify)

    quotes = commands.add_parser(
        "quotes",
        help="print market data as JSON lines (quotes, --dom, --chart)",
        description="Subscribe to market data and print one JSON line per update (a live "
        "table in a terminal), until a signal (exit 0) or until the engine stops by policy "
        "(exit 1), like stream.",
        epilog=_env_epilog(),
    )
    from .cli_quotes import add_arguments as add_quotes_arguments

    add_quotes_arguments(quotes)
    add_connection_flags(quotes)
    add_logging_flags(quotes)

    diagram = commands.add_parser(
        "diagram",
        help="print or write the statechart diagrams",
        description="Print the connection statechart, or write every diagram file.",
    )
    diagram.add_argument("--format", choices=("mmd", "dot", "json"), default="mmd")
    diagram.add_argument("--write", type=Path, help="write every file into this directory")
    return parser


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _configure_logging(args: argparse.Namespace) -> None:
    if getattr(args, "log_format", None) is None:
        return
    from .logs import configure

    configure(args.log_format, getattr(logging, args.log_level.upper()))


def _run(args: argparse.Namespace) -> int:
    """Dispatch to the command (the exceptions are mapped by :func:`main`)."""
    if args.command == "diagram":
        return run_diagram(args.write, args.format, sys.stdout)
    if args.command == "certify":
        from .certify.command import main as certify_main

        return certify_main(args, sys.stdout)
    _configure_logging(args)
    if args.command == "demo":
        live = _live_view_wanted(args.view, sys.stdout)
        body = partial(
            run_demo,
            args.duration,
            args.seed,
            sys.stdout,
            live_view=live,
            status_every=args.status_every,
        )
        return trio.run(until_stopped, body)
    if args.command == "sim":
        if args.list_faults:
            from .sim import FAULT_KINDS

            for kind, help_text in sorted(FAULT_KINDS.items()):
                sys.stdout.write(f"{kind:22} {help_text}\n")
            return 0
        loopback = args.host in ("127.0.0.1", "localhost", "::1")
        _check(loopback, "the simulator only listens on loopback: use --host 127.0.0.1")
        schedule = parse_fault_schedule(args.fault)
        serve = partial(
            run_sim,
            args.host,
            args.port,
            args.seed,
            sys.stdout,
            faults=schedule,
            epoch=args.epoch,
        )
        return trio.run(until_stopped, serve)
    if args.command == "quotes":
        from .cli_quotes import quotes_body

        return trio.run(until_stopped, quotes_body(args, os.environ, sys.stdout))
    config = config_from_env(args, os.environ)
    live = _live_view_wanted(args.view, sys.stdout)
    return trio.run(
        partial(
            run_stream,
            config,
            sys.stdout,
            live_view=live,
            status_every=args.status_every,
            metrics_port=args.metrics_port,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line argument error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(args)
    except (Exception, KeyboardInterrupt, BaseExceptionGroup) as exc:
        return _exit_code(exc, sys.stderr)


def console_main() -> None:  # pragma: no cover - thin wrapper for the console script
    """``trio-tradovate`` console script."""
    _forward_sigterm_as_sigint()
    raise SystemExit(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
