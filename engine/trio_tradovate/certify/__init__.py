"""``trio-tradovate certify``: Tradovate's Stage 2 conformance tests as one command.

Tradovate asks partners to send their logs and their test plan to its solutions engineering
team, and revalidates conformance whenever the integration changes. This package runs every
Stage 2 test step as a scenario (:mod:`.scenarios`), against the embedded simulator in
virtual time or against a real server through the fault-injecting proxy
(:mod:`trio_tradovate.proxy`), judges every validation criterion from measured figures
(:mod:`.model`), and writes the evidence pack (:mod:`.report`). Transition coverage
(:mod:`.coverage`) shows which declared moves and cells of the statechart the run reached.

The names below load on first use (PEP 562), as the top-level package's do: the command
line builds its parser from :mod:`.command` without loading the simulator or the scenarios.
Nothing in the engine imports this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import Target
    from .model import Figure, Result, Verdict
    from .report import write_pack
    from .runner import Options, Report, run

_SOURCES = {
    "Figure": "model",
    "Options": "runner",
    "Report": "runner",
    "Result": "model",
    "Target": "context",
    "Verdict": "model",
    "run": "runner",
    "write_pack": "report",
}

__all__ = ["Figure", "Options", "Report", "Result", "Target", "Verdict", "run", "write_pack"]

if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        module = _SOURCES.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
