"""The ``trio-tradovate`` command: ``demo``, ``stream``, ``sim``, ``certify`` and ``diagram``.

Every command is an ``async def run_*`` that tests drive under a virtual clock; :func:`main`
only parses arguments, turns configuration mistakes into one line and exit code 2, and runs
trio.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import orjson
import trio

from .config import ENVIRONMENTS, Credentials, EngineConfig
from .engine import Engine, open_engine
from .errors import ConfigError, EngineStopped
from .statechart import DIAGRAM_FILES, State, TransitionRecord
from .store import EntityChange

EXIT_USAGE = 2

ENV_VARS = (
    "TRADOVATE_USERNAME",
    "TRADOVATE_PASSWORD",
    "TRADOVATE_APP_ID",
    "TRADOVATE_APP_VERSION",
    "TRADOVATE_CID",
    "TRADOVATE_SEC",
    "TRADOVATE_DEVICE_ID",
    "TRADOVATE_ACCESS_TOKEN",
)


# ------------------------------------------------------------------------------------ diagram


def run_diagram(write: Path | None, fmt: str, out: TextIO) -> int:
    """Print one diagram, or write every statechart file into ``write``."""
    if write is None:
        out.write(DIAGRAM_FILES[f"connection.{fmt}"]())
        return 0
    write.mkdir(parents=True, exist_ok=True)
    for name, render in DIAGRAM_FILES.items():
        (write / name).write_text(render())
        out.write(f"wrote {write / name}\n")
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


async def run_demo(duration: float, seed: int, out: TextIO) -> int:
    """Simulator and engine in one process; one forced drop halfway; transitions as they happen."""
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

            nursery.start_soon(show_transitions)
            from .cli_quotes import QuoteBoard

            assert engine.market_data is not None
            board = QuoteBoard([engine.market_data.quotes(s) for s in ("ESZ6", "NQZ6")])
            started = trio.current_time()
            dropped = False
            while trio.current_time() - started < duration:
                await trio.sleep(min(2.0, duration))
                if engine.state is State.LIVE:
                    out.write(
                        f"account after {trio.current_time() - started:5.1f} s "
                        f"({engine.counters['props_events']} events):\n"
                    )
                    out.write(account_view(engine))
                    out.write("quotes:\n" + board.lines())
                if not dropped and trio.current_time() - started >= duration / 2:
                    dropped = True
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
            cid: int | str | None = env.get("TRADOVATE_CID") or None
            if isinstance(cid, str) and cid.isdigit():
                cid = int(cid)
            credentials = Credentials(
                username=env["TRADOVATE_USERNAME"],
                password=env["TRADOVATE_PASSWORD"],
                app_id=env.get("TRADOVATE_APP_ID") or None,
                app_version=env.get("TRADOVATE_APP_VERSION") or "1.0",
                cid=cid,
                sec=env.get("TRADOVATE_SEC") or None,
                device_id=env.get("TRADOVATE_DEVICE_ID") or None,
            )
    return EngineConfig(
        rest_url=rest_url.rstrip("/"),
        ws_url=args.ws_url,
        credentials=credentials,
        access_token=token if credentials is None else None,
    )


def _json_line(kind: str, payload: dict[str, Any]) -> str:
    return orjson.dumps({"type": kind, **payload}).decode() + "\n"


async def run_stream(
    config: EngineConfig,
    out: TextIO,
    *,
    stop_signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
    until: Callable[[Engine], bool] | None = None,
    err: TextIO = sys.stderr,
) -> int:
    """One JSON line per transition and per entity change, until a signal (exit 0) or until
    the engine stops by policy (bad credentials, retry budget: one line on ``err``, exit 1).

    The printers live in a nursery *outside* the engine, so the final ``stopped`` transition
    is printed too: the engine closes both channels when it reaches that state.
    """
    async with trio.open_nursery() as nursery, open_engine(config) as engine:
        transitions = engine.watch_transitions()
        changes = engine.events()

        async def print_transitions() -> None:
            async for record in transitions:
                out.write(_json_line("transition", record.as_dict()))
                out.flush()

        async def print_changes() -> None:
            change: EntityChange
            async for change in changes:
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
        if stop_signals:
            with trio.open_signal_receiver(*stop_signals) as signals:
                async for _ in signals:
                    break
        else:
            await trio.sleep_forever()
    if engine.stop_error is not None:
        err.write(f"trio-tradovate: the engine stopped: {engine.stop_reason}\n")
        return 1
    return 0


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
        if not isinstance(fault, dict) or fault.get("kind") not in FAULT_KINDS:
            raise ConfigError(
                f"--fault {spec!r}: 'kind' must be one of {', '.join(sorted(FAULT_KINDS))}"
            )
        schedule.append((when, fault))
    return sorted(schedule, key=lambda item: item[0])


async def run_sim(
    host: str,
    port: int,
    seed: int,
    out: TextIO,
    *,
    faults: Sequence[tuple[float, Mapping[str, Any]]] = (),
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> int:
    """A simulator on a real loopback port; prints its URLs, applies scheduled faults, and runs
    until cancelled. Faults can also be applied at any time through the control endpoint."""
    from .sim import FaultError, SimConfig, apply_fault, open_simulator, open_simulator_server

    async with (
        open_simulator(SimConfig(seed=seed)) as sim,
        open_simulator_server(sim, host=host, port=port) as server,
    ):
        base = server.rest_url.removesuffix("/v1")
        out.write(f"REST      {server.rest_url}\n")
        out.write(f"websocket {server.ws_url}\n")
        out.write(f"faults    POST {base}/_sim/fault  (JSON, see --list-faults)\n")
        out.write(
            f"user {sim.config.username!r} (password: the SimConfig default, see "
            "docs/simulator.md); Ctrl-C stops\n"
        )
        out.flush()
        task_status.started(server)
        started = trio.current_time()
        for when, fault in faults:
            await trio.sleep_until(started + when)
            try:
                await apply_fault(sim, fault)
            except FaultError as exc:
                out.write(f"fault {fault} rejected: {exc}\n")
            else:
                out.write(f"[{when:7.1f}s] fault applied: {orjson.dumps(fault).decode()}\n")
            out.flush()
        await trio.sleep_forever()


# ------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also documents every command in ``--help``)."""
    parser = argparse.ArgumentParser(prog="trio-tradovate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="engine against the embedded simulator")
    demo.add_argument("--duration", type=float, default=20.0, help="seconds to run (20)")
    demo.add_argument("--seed", type=int, default=1, help="simulator and jitter seed")

    stream = commands.add_parser(
        "stream", help="connect to a Tradovate-compatible endpoint; JSON lines to stdout"
    )
    stream.add_argument("--env", choices=sorted(ENVIRONMENTS), default="demo")
    stream.add_argument("--rest-url", help="REST base, e.g. http://127.0.0.1:8000/v1")
    stream.add_argument("--ws-url", help="websocket URL (default: derived from the REST base)")

    sim = commands.add_parser("sim", help="run the simulator on a loopback port")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=0, help="0 picks a free port")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SECONDS:JSON",
        help='apply a fault at a time, e.g. 30:\'{"kind":"drop"}\' (repeatable)',
    )
    sim.add_argument("--list-faults", action="store_true", help="list the fault kinds and exit")

    certify = commands.add_parser(
        "certify", help="run Tradovate's Stage 2 tests and write the evidence pack"
    )
    from .certify.command import add_arguments

    add_arguments(certify)

    from .cli_quotes import add_arguments as add_quotes_arguments

    add_quotes_arguments(commands)

    diagram = commands.add_parser("diagram", help="print or write the statechart diagrams")
    diagram.add_argument("--format", choices=("mmd", "dot", "json"), default="mmd")
    diagram.add_argument("--write", type=Path, help="write every file into this directory")
    return parser


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "diagram":
            return run_diagram(args.write, args.format, sys.stdout)
        if args.command == "certify":
            from .certify.command import main as certify_main

            return certify_main(args, sys.stdout)
        if args.command == "demo":
            _check(args.duration > 0, "--duration must be > 0 seconds")
            logging.basicConfig(level=logging.WARNING, format="           log: %(message)s")
            return trio.run(run_demo, args.duration, args.seed, sys.stdout)
        if args.command == "sim":
            if args.list_faults:
                from .sim import FAULT_KINDS

                for kind, help_text in sorted(FAULT_KINDS.items()):
                    sys.stdout.write(f"{kind:22} {help_text}\n")
                return 0
            loopback = args.host in ("127.0.0.1", "localhost", "::1")
            _check(loopback, "the simulator only listens on loopback: use --host 127.0.0.1")
            schedule = parse_fault_schedule(args.fault)
            return trio.run(
                partial(run_sim, args.host, args.port, args.seed, sys.stdout, faults=schedule)
            )
        if args.command == "quotes":
            from .cli_quotes import main as quotes_main

            return quotes_main(args, sys.stdout)
        config = config_from_env(args, os.environ)
        return trio.run(run_stream, config, sys.stdout)
    except ConfigError as exc:
        sys.stderr.write(f"trio-tradovate: {exc}\n")
        return EXIT_USAGE
    except EngineStopped as exc:
        sys.stderr.write(f"trio-tradovate: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


def console_main() -> None:  # pragma: no cover - thin wrapper for the console script
    """``trio-tradovate`` console script."""
    raise SystemExit(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
