"""Helpers for the certification tests: run the command in-process, read the pack."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from trio_tradovate.certify.command import main
from trio_tradovate.cli import build_parser


def certify(out: Path, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``trio-tradovate certify --out OUT ARGV...``; returns (exit status, stdout)."""
    args = build_parser().parse_args(["certify", "--out", str(out), *argv])
    stdout = io.StringIO()
    status = main(args, stdout, env={} if env is None else env)
    return status, stdout.getvalue()


def criteria(out: Path) -> dict[str, dict[str, Any]]:
    report = orjson.loads((out / "report.json").read_bytes())
    return {item["id"]: item for item in report["criteria"]}


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_text().splitlines() if line]


def figure(item: dict[str, Any], name: str) -> float:
    for found in item["figures"]:
        if found["name"] == name:
            value: float = found["value"]
            return value
    raise KeyError(name)


def pack_text(out: Path, names: Sequence[str] | None = None) -> str:
    """Every file of the pack as text (the PNG as latin-1, so bytes are searched too)."""
    texts = []
    for path in sorted(out.rglob("*")):
        if path.is_file() and (names is None or path.name in names):
            texts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(texts)
