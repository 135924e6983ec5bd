"""Every ``python`` block of ``docs/orders.md`` runs, in order, in one namespace; the last one's
``main()`` then drives the others against the simulator in virtual time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import trio
import trio.testing

DOC = Path(__file__).resolve().parent.parent / "docs" / "orders.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


async def test_every_block_of_the_orders_page_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    found = blocks()
    assert len(found) >= 7
    namespace: dict[str, Any] = {"__name__": "docs_orders"}
    for index, block in enumerate(found):
        exec(compile(block, f"docs/orders.md block {index + 1}", "exec"), namespace)
    results = await namespace["main"]()
    assert results == {
        "market": "Filled",
        "limit": "Canceled",
        "take_profit": "Filled",
        "refusal": "UnknownReason",
        "lost_but_placed": True,
        "lost_not_placed": True,
        "flat": True,
    }
