"""Every ``python`` block of docs/simulator.md's "Market data and replay" section runs, as
written, and each ``test_*`` function it defines passes (so the docs cannot rot)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio.testing

DOC = Path(__file__).resolve().parents[2] / "docs" / "simulator.md"
SECTION = "## Market data and replay"


def section_blocks() -> list[str]:
    text = DOC.read_text()
    body = text[text.index(SECTION) :]
    end = body.find("\n## ", len(SECTION))
    body = body if end < 0 else body[:end]
    return [block.split("```")[0] for block in body.split("```python\n")[1:]]


def documented_tests() -> list[tuple[str, Callable[..., Awaitable[None]]]]:
    found: list[tuple[str, Callable[..., Awaitable[None]]]] = []
    for index, block in enumerate(section_blocks()):
        namespace: dict[str, Any] = {}
        exec(compile(block, f"{DOC.name}[market block {index}]", "exec"), namespace)
        found += [(name, fn) for name, fn in namespace.items() if name.startswith("test_")]
    return found


def test_the_section_has_its_three_examples() -> None:
    names = [name for name, _ in documented_tests()]
    assert names == ["test_quotes_and_a_tick_chart", "test_restored_after_a_drop", "test_a_replay"]


@pytest.mark.parametrize(("name", "fn"), documented_tests(), ids=lambda v: str(v)[:40])
async def test_documented_example_passes(
    name: str, fn: Callable[..., Awaitable[None]], autojump_clock: trio.testing.MockClock
) -> None:
    await fn(autojump_clock)
