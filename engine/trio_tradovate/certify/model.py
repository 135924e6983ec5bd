"""What a certification run judges: Stage 2's limits, criteria, figures and verdicts.

Plain data, no I/O, so the report writers and the tests can build and read them without a
running engine. A criterion's verdict is computed from its figures (never written by hand):
every figure names the limit it was held to, and a criterion passes only when every figure
is within its limit and the scenario's own checks held.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Stage 2 "Performance Requirements" (partner.tradovate.com, overview/conformance-testing/
#: stage-2-websocket-management), in seconds.
STAGE2_CONNECT = 5.0
STAGE2_AUTH = 2.0
STAGE2_HEARTBEAT = 30.0
STAGE2_RECONNECT = 10.0
STAGE2_PROCESSING = 0.100

#: Scheduling slack allowed on top of a configured heartbeat interval on the real clock
#: (a timer of a busy process fires a little late; the virtual clock needs none).
HEARTBEAT_SLACK_REAL = 0.25
#: Rounding allowed when a figure meets its limit exactly (2.5 s of virtual time summed from
#: float steps can come out a few ulps above 2.5): one microsecond, far below any limit.
EPSILON = 1e-6


class Verdict(enum.StrEnum):
    """A criterion's outcome. Only ``PASS`` counts as passed."""

    PASS = "PASS"
    FAIL = "FAIL"
    #: The step cannot be provoked safely against a real server (captcha, 429, malformed
    #: frames): run it against the simulator. Never a pass.
    SIMULATOR_ONLY = "SIMULATOR ONLY"
    #: The run could not observe what the criterion needs (a quiet account sent no event).
    INCONCLUSIVE = "INCONCLUSIVE"
    #: Not selected (``--only``), or no scenario that ran gathers its evidence.
    NOT_RUN = "NOT RUN"


class Section(enum.Enum):
    """The parts of the Stage 2 page, in its order."""

    LOGIN = "1. Websocket Login"
    HEARTBEATS = "2. Heartbeats"
    EVENTS = "3. Event Handling"
    RATE_LIMITS = "4. Rate Limit Handling (P-Ticket)"
    RECONNECTION = "5. Reconnection"
    ERRORS = "Error Handling"
    PERFORMANCE = "Performance Requirements"


@dataclass(frozen=True)
class Figure:
    """One measured value and the limits it is compared with.

    ``stage2`` is Tradovate's limit, ``engine`` the bound the engine's configuration promises
    (``None`` where there is none). ``binding`` is the one that decides: the tighter of the two
    for an upper bound; ``lower=True`` flips the comparison (a count that must reach a floor).
    """

    name: str
    value: float
    unit: str = "s"
    stage2: float | None = None
    engine: float | None = None
    lower: bool = False

    @property
    def binding(self) -> float | None:
        limits = [limit for limit in (self.stage2, self.engine) if limit is not None]
        if not limits:
            return None
        return max(limits) if self.lower else min(limits)

    @property
    def ok(self) -> bool:
        limit = self.binding
        if limit is None:
            return math.isfinite(self.value)
        if not math.isfinite(self.value):
            return False
        return self.value >= limit - EPSILON if self.lower else self.value <= limit + EPSILON

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value if math.isfinite(self.value) else None,
            "unit": self.unit,
            "stage2_limit": self.stage2,
            "engine_limit": self.engine,
            "comparison": ">=" if self.lower else "<=",
            "within": self.ok,
        }

    def text(self) -> str:
        value = "none" if not math.isfinite(self.value) else _fmt(self.value, self.unit)
        op = ">=" if self.lower else "<="
        parts = []
        if self.stage2 is not None:
            parts.append(f"Stage 2 {op} {_fmt(self.stage2, self.unit)}")
        if self.engine is not None:
            # a time bound comes from the engine's configuration; a count or a rate from the
            # test plan
            basis = "engine" if self.unit in ("s", "ms") and not self.lower else "required"
            parts.append(f"{basis} {op} {_fmt(self.engine, self.unit)}")
        limits = f" ({'; '.join(parts)})" if parts else ""
        return f"{self.name}: {value}{limits} {'ok' if self.ok else 'OUT OF LIMIT'}"


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if float(value).is_integer():
        return f"{int(value)}{' ' + unit if unit else ''}"
    return f"{value:g}{' ' + unit if unit else ''}"


@dataclass(frozen=True)
class CriterionSpec:
    """One validation criterion as the test plan states it, before any run."""

    id: str
    section: Section
    #: The criterion's words (Stage 2's own where it has them).
    text: str
    #: What must hold for a pass, in the plan's words.
    passes_when: str
    #: Judged against a real server too; otherwise "simulator only" there.
    remote: bool = True


@dataclass
class Result:
    """A judged criterion."""

    spec: CriterionSpec
    scenario: str
    verdict: Verdict
    figures: list[Figure] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.spec.id,
            "section": self.spec.section.value,
            "criterion": self.spec.text,
            "passes_when": self.spec.passes_when,
            "scenario": self.scenario,
            "verdict": self.verdict.value,
            "figures": [figure.as_dict() for figure in self.figures],
            "checks": [{"check": name, "held": held} for name, held in self.checks],
            "detail": self.detail,
        }


def judge(
    spec: CriterionSpec,
    scenario: str,
    figures: Sequence[Figure] = (),
    checks: Sequence[tuple[str, bool]] = (),
    detail: str = "",
) -> Result:
    """The verdict from the evidence: PASS only when every figure and every check holds."""
    held = all(figure.ok for figure in figures) and all(ok for _, ok in checks)
    if not figures and not checks:
        held = False
        detail = detail or "no evidence was gathered"
    return Result(
        spec,
        scenario,
        Verdict.PASS if held else Verdict.FAIL,
        list(figures),
        list(checks),
        detail,
    )
