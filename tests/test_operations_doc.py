"""Every flag ``docs/operations.md`` and ``docs/configuration.md`` name exists.

(Their code blocks run in ``tests/test_docs_code.py`` with every other page's.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trio_tradovate.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]+)")


def test_every_flag_the_documents_name_exists(capsys: pytest.CaptureFixture[str]) -> None:
    helps = []
    for command in ([], ["demo"], ["stream"], ["sim"], ["certify"], ["diagram"]):
        assert main([*command, "--help"]) == 0
        helps.append(capsys.readouterr().out)
    known = set(FLAG.findall("\n".join(helps)))
    for name in ("operations.md", "configuration.md"):
        named = set(FLAG.findall((DOCS / name).read_text()))
        assert "--metrics-port" in named or name != "operations.md"
        assert named <= known, (name, named - known)
