"""The ``certify`` subcommand: arguments to :class:`~.runner.Options`, the pack, the exit code.

Kept here rather than in ``cli.py`` so the command line module only gains a parser block and
one branch; everything the command does is in this package.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..config import ENVIRONMENTS
from ..errors import ConfigError

if TYPE_CHECKING:
    from .context import Target
    from .runner import Report

#: Exit status when a criterion failed (or was inconclusive).
EXIT_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``certify`` options (also its ``--help``)."""
    parser.add_argument(
        "--target",
        default="sim",
        help="sim (default: the embedded simulator, offline, virtual time), demo, or a "
        "REST base URL such as http://127.0.0.1:8000/v1; real targets read TRADOVATE_* "
        "credentials from the environment",
    )
    parser.add_argument("--ws-url", help="websocket URL of a URL target (default: derived)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the whole run (1)")
    parser.add_argument("--out", type=Path, default=Path("certification"), help="pack directory")
    parser.add_argument(
        "--only", help="comma-separated scenario ids (see --list); the others are not run"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    from ..cli import positive_seconds, seconds_or_zero

    parser.add_argument(
        "--duration",
        type=positive_seconds,
        default=30.0,
        help="observation window of a real target, seconds (30); the simulator's are virtual",
    )
    parser.add_argument(
        "--delay",
        type=seconds_or_zero,
        default=0.4,
        help="one-way latency the network_delay scenario injects, seconds (0.4)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change an EngineConfig setting for every engine of the run, e.g. "
        "heartbeat_interval=5 or backoff.after_live_cap=20 (repeatable)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the engine's warnings")


def target_from(args: argparse.Namespace, env: Mapping[str, str]) -> Target:
    """The target ``--target`` names, with credentials from ``TRADOVATE_*`` for real ones.

    Raises:
        ConfigError: unknown target, or credentials missing for a real one.
    """
    from .context import Target

    name = args.target
    if name == "sim":
        return Target("sim", duration=args.duration)
    if name == "live":
        raise ConfigError(
            "--target live: certification drops connections and logs in many times; run it "
            "against demo (Tradovate's conformance environment) or a URL"
        )
    if name in ENVIRONMENTS:
        rest_url = ENVIRONMENTS[name]
    elif name.startswith(("http://", "https://")):
        rest_url = name.rstrip("/")
    else:
        raise ConfigError(
            f"--target {name!r}: use sim, {', '.join(sorted(ENVIRONMENTS))}, or a REST base URL"
        )
    if args.duration <= 0:
        raise ConfigError("--duration must be > 0 seconds")
    from ..cli import config_from_env

    namespace = argparse.Namespace(env="demo", rest_url=rest_url, ws_url=args.ws_url)
    config = config_from_env(namespace, env)
    return Target(
        "remote",
        name=name,
        rest_url=config.rest_url,
        ws_url=config.ws_url,
        credentials=config.credentials,
        access_token=config.access_token,
        duration=args.duration,
    )


def list_scenarios(out: TextIO) -> int:
    from .scenarios import SCENARIOS

    for scenario in SCENARIOS:
        where = "" if scenario.remote else "  (simulator only)"
        out.write(f"{scenario.id:18} {scenario.title}{where}\n")
    return 0


def main(args: argparse.Namespace, out: TextIO, env: Mapping[str, str] | None = None) -> int:
    """Run ``certify``; returns the exit status (0 only when everything allowed passed).

    Raises:
        ConfigError: bad arguments (the caller prints it and exits 2).
    """
    from .report import write_pack
    from .runner import Options, run, select

    if args.list:
        return list_scenarios(out)
    if args.delay < 0:
        raise ConfigError("--delay must be >= 0 seconds")
    only = tuple(s.strip() for s in args.only.split(",") if s.strip()) if args.only else None
    try:
        select(only)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    target = target_from(args, os.environ if env is None else env)
    try:  # before the run, not after it: a pack that cannot be written is a usage error
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {args.out}: {exc.strerror or exc}") from None
    options = Options(target, args.seed, only, tuple(args.overrides), args.delay)
    # The scenarios provoke faults on purpose; the engine's warnings about them go to the
    # pack's engine.log, and to the console only with --verbose.
    if args.verbose:
        logging.basicConfig(level=logging.WARNING, format="log: %(message)s")
    report = run(options)
    write_pack(report, args.out)
    summarize(report, args.out, out)
    return 0 if report.passed else EXIT_FAILED


def summarize(report: Report, where: Path, out: TextIO) -> None:
    from .model import Verdict

    for result in report.results:
        if result.verdict is Verdict.NOT_RUN and report.options.only:
            continue
        bad = [f.text() for f in result.figures if not f.ok]
        bad += [f"check failed: {n}" for n, held in result.checks if not held]
        note = f"  <- {'; '.join(bad) or result.detail}" if result.verdict is Verdict.FAIL else ""
        out.write(f"{result.verdict.value:15} {result.spec.id:26} {result.spec.text}{note}\n")
    counts = ", ".join(f"{n} {v}" for v, n in sorted(report.counts().items()))
    verdict = "PASS" if report.passed else "FAIL"
    out.write(
        f"\n{verdict}: {counts}; {len(report.runs)} scenarios in {report.wall_seconds:.1f} s; "
        f"evidence pack in {where}/ (start with report.md)\n"
    )
