"""The code block of ``docs/market-data.md`` runs and does what the page says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import trio

DOC = Path(__file__).resolve().parents[2] / "docs" / "market-data.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


async def test_the_market_data_page_runs(autojump_clock: trio.testing.MockClock) -> None:
    [block] = python_blocks()
    namespace: dict[str, Any] = {"__name__": "market_data_doc"}
    exec(compile(block, str(DOC), "exec"), namespace)
    seen = await namespace["main"]()
    assert seen[0].startswith("bid ")
    assert seen[-1] == "history complete"
