"""``trio-tradovate certify``: Tradovate's Stage 2 conformance tests as one command.

Tradovate asks partners to send their logs and their test plan to its solutions engineering
team, and revalidates conformance whenever the integration changes. This package runs every
Stage 2 test step as a scenario (:mod:`.scenarios`), against the embedded simulator in
virtual time or against a real server through the fault-injecting proxy
(:mod:`trio_tradovate.proxy`), judges every validation criterion from measured figures
(:mod:`.model`), and writes the evidence pack (:mod:`.report`). Transition coverage
(:mod:`.coverage`) shows which declared moves and cells of the statechart the run reached.

Import cost: this package loads the engine, the simulator and trio; nothing in the engine
imports it.
"""

from __future__ import annotations

from .context import Target
from .model import Figure, Result, Verdict
from .report import write_pack
from .runner import Options, Report, run

__all__ = ["Figure", "Options", "Report", "Result", "Target", "Verdict", "run", "write_pack"]
