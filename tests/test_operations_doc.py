"""Every code block of ``docs/operations.md`` runs, and every flag it names exists.

Blocks that define ``main`` are awaited: under the virtual clock, except the one that serves
HTTP on 127.0.0.1, which runs on the real clock (it only waits for its own requests).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_tradovate.cli import main

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
LOOPBACK = [i for i, block in enumerate(BLOCKS) if "serve_monitoring(" in block]
VIRTUAL = [i for i in range(len(BLOCKS)) if i not in LOOPBACK]


async def _run_block(index: int) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"docs_operations_{index}"}
    exec(compile(BLOCKS[index], f"docs/operations.md block {index}", "exec"), namespace)
    if "main" in namespace:
        await namespace["main"]()
    return namespace


def test_the_document_has_its_blocks() -> None:
    assert len(BLOCKS) == 4
    assert len(LOOPBACK) == 1


@pytest.mark.parametrize("index", VIRTUAL)
async def test_block_runs(index: int, autojump_clock: trio.testing.MockClock) -> None:
    await _run_block(index)


@pytest.mark.loopback
@pytest.mark.parametrize("index", LOOPBACK)
async def test_loopback_block_runs(index: int) -> None:
    with trio.fail_after(60):
        await _run_block(index)


def test_every_flag_the_documents_name_exists(capsys: pytest.CaptureFixture[str]) -> None:
    helps = []
    for command in ([], ["demo"], ["stream"], ["sim"], ["certify"], ["diagram"]):
        assert main([*command, "--help"]) == 0
        helps.append(capsys.readouterr().out)
    known = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", "\n".join(helps)))
    for name in ("operations.md", "configuration.md"):
        text = (DOC.parent / name).read_text()
        named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", text))
        assert named <= known, (name, named - known)
