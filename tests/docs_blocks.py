"""The ``python`` code blocks of a page in ``docs/``, so that tests can run them."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(page: str, section: str | None = None, language: str = "python") -> list[str]:
    """The ``python`` (or ``language``) blocks of ``docs/<page>``, in order; only those
    under the ``## `` heading that starts with ``section`` when one is given."""
    text = (DOCS / page).read_text()
    if section is not None:
        parts = re.split(r"^## ", text, flags=re.MULTILINE)
        matching = [part for part in parts if part.startswith(section)]
        assert len(matching) == 1, f"no single section {section!r} in {page}"
        text = matching[0]
    fence = re.compile(rf"^```{language}\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return fence.findall(text)
