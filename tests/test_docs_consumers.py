"""The several-consumers example of ``docs/state-recovery.md`` runs, in virtual time."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from .docs_blocks import python_blocks


async def test_the_several_consumers_block_runs(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    [block] = python_blocks("state-recovery.md", "Several consumers")
    namespace: dict[str, Any] = {"__name__": "docs_state_recovery"}
    exec(compile(block, "docs/state-recovery.md", "exec"), namespace)
    journal, seen = await namespace["main"]()
    assert journal >= seen > 0  # the journal has every change; the dashboard at most as many
    assert f"journal: {journal} changes, dashboard: {seen}" in capsys.readouterr().out
