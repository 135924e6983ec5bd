"""`trio-tradovate certify --target sim`: every Stage 2 criterion judged from measured
figures, the evidence pack, determinism, and verdicts that can fail."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from trio_tradovate.certify.context import sim_credentials
from trio_tradovate.certify.report import PACK_FILES
from trio_tradovate.certify.scenarios import SCENARIOS, all_criteria
from trio_tradovate.cli import main as cli_main
from trio_tradovate.errors import ConfigError
from trio_tradovate.sim import _auth

from .conftest import certify, criteria, figure, jsonl, pack_text

#: Every validation criterion, error class and performance requirement of the Stage 2 page.
STAGE2 = (
    "Websocket connection establishes successfully",
    "Authentication succeeds with valid token",
    "Authentication fails with invalid token",
    "Connection remains stable after authentication",
    "Heartbeats are sent at regular intervals",
    "Heartbeat mechanism works during high message volume",
    "heartbeat timeout",
    "recovery after missed heartbeats",
    "Only one syncrequest is sent per socket lifecycle",
    "Real-time events are received",
    "Idempotency is maintained",
    "Sharding is implemented correctly",
    "Entity types are subscribed to correctly",
    "Syncrequest is sent correctly",
    "Event handlers are robust and don't crash on malformed data",
    "Message processing performance meets requirements",
    "Rate limiting responses are properly handled",
    "P-Ticket system is implemented correctly",
    "priority handling",
    "Automatic reconnection works after connection loss",
    "Re-authentication occurs after reconnection",
    "State is properly recovered after reconnection",
    "Network timeouts",
    "DNS resolution failures",
    "SSL/TLS handshake failures",
    "Server unavailable errors",
    "expired token",
    "Expired tokens during connection",
    "Authentication timeout",
    "Malformed JSON messages",
    "Unknown message types",
    "Invalid message parameters",
    "establish connection within 5 seconds",
    "complete authentication within 2 seconds",
    "send heartbeats every 30 seconds",
    "attempt reconnection within 10 seconds",
    "process messages within 100ms",
)


def test_every_stage2_item_has_a_criterion() -> None:
    texts = [spec.text.lower() for spec in all_criteria()]
    missing = [item for item in STAGE2 if not any(item.lower() in text for text in texts)]
    assert missing == []
    ids = [spec.id for spec in all_criteria()]
    assert len(ids) == len(set(ids))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path, set[str]]:
    """One full simulator run; records every token the simulator minted (ground truth for
    the secret check, taken beside the code under test, not from it)."""
    out = tmp_path_factory.mktemp("pack")
    minted: set[str] = set()
    original = _auth.AuthRegistry.mint

    def spy(self: _auth.AuthRegistry, session_id: int, now: float) -> _auth.Token:
        token = original(self, session_id, now)
        minted.add(token.value)
        return token

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_auth.AuthRegistry, "mint", spy)
        status, stdout = certify(out, "--seed", "3")
    return status, stdout, out, minted


def test_a_full_simulator_run_passes_every_criterion(
    full_run: tuple[int, str, Path, set[str]],
) -> None:
    status, stdout, out, _ = full_run
    found = criteria(out)
    assert {k: v["verdict"] for k, v in found.items() if v["verdict"] != "PASS"} == {}
    assert status == 0
    assert set(found) == {spec.id for spec in all_criteria()}
    assert f"PASS: {len(found)} PASS; {len(SCENARIOS)} scenarios" in stdout
    # figures are measured and compared with both limits
    login = found["login.connect"]["figures"][0]
    assert (login["stage2_limit"], login["engine_limit"], login["within"]) == (5.0, 5.0, True)
    assert figure(found["heartbeats.interval"], "largest gap between heartbeats") <= 2.5 + 1e-6
    assert 0 < figure(found["reconnect.automatic"], "reconnection attempt after the loss") <= 10
    assert figure(found["events.processing"], "p99 processing time") <= 100


def test_the_pack_has_every_file_and_a_section_per_stage2_test(
    full_run: tuple[int, str, Path, set[str]],
) -> None:
    _, _, out, _ = full_run
    for name in PACK_FILES:
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    try:
        import matplotlib  # noqa: F401 - the optional `certify` extra
    except ImportError:  # pragma: no cover - `make certify` and CI install it
        assert "No image: matplotlib is not installed" in report
    else:
        assert (out / "statechart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "![statechart](statechart.png)" in report
    for section in (
        "1. Websocket Login",
        "2. Heartbeats",
        "3. Event Handling",
        "4. Rate Limit Handling (P-Ticket)",
        "5. Reconnection",
        "Error Handling",
        "Performance Requirements",
        "Transition coverage",
    ):
        assert f"## {section}" in report
    plan = (out / "test-plan.md").read_text()
    assert all(f"`{scenario.id}`" in plan for scenario in SCENARIOS)
    suite = ET.parse(out / "junit.xml").getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == len(all_criteria())
    assert suite.findall(".//failure") == []
    assert (out / "statechart.mmd").read_text().startswith("stateDiagram-v2")
    log = (out / "engine.log").read_text()
    assert "[heartbeat_timeout]" in log
    assert "stalled" in log


def test_transition_log_and_wire_log(full_run: tuple[int, str, Path, set[str]]) -> None:
    _, _, out, _ = full_run
    records = jsonl(out / "transitions.jsonl")
    keys = {"scenario", "monotonic", "wall_time", "socket", "generation", "reason", "trigger"}
    assert all(keys <= set(r) for r in records)
    assert {r["scenario"] for r in records} >= {s.id for s in SCENARIOS}
    assert {r["socket"] for r in records if r["scenario"] == "sharding"} == {0, 1}
    assert any(r["wall_time"].startswith("2026-") for r in records)
    wire = jsonl(out / "wire.jsonl")
    authorizes = [
        w for w in wire if w.get("direction") == "out" and w["text"].startswith("authorize\n")
    ]
    assert authorizes
    assert all(w["text"].endswith("\n<redacted>") for w in authorizes)
    assert any(
        w.get("channel") == "rest" and w["path"].endswith("accesstokenrequest") for w in wire
    )


def test_no_secret_anywhere_in_the_pack(full_run: tuple[int, str, Path, set[str]]) -> None:
    _, stdout, out, minted = full_run
    text = pack_text(out) + stdout
    secrets = set(minted)
    for index in range(len(SCENARIOS)):
        _, credentials = sim_credentials(3 * 1000 + index)
        secrets |= {credentials.password, credentials.sec or ""}
    assert len(minted) >= len(SCENARIOS)  # the run really logged in, many times
    leaked = sorted(secret for secret in secrets if secret and secret in text)
    assert leaked == []


def test_coverage_shows_what_the_run_exercised(full_run: tuple[int, str, Path, set[str]]) -> None:
    _, _, out, _ = full_run
    import orjson

    coverage = orjson.loads((out / "coverage.json").read_bytes())
    summary = coverage["summary"]["connection"]
    assert 0 < summary["moves_exercised"] < summary["moves_declared"]
    assert 0 < summary["cells_exercised"] < summary["cells_declared"]
    cells = {(c["node"], c["trigger"]) for c in coverage["cells"] if c["table"] == "connection"}
    assert {
        ("connecting", "opened"),
        ("live", "lost"),
        ("backoff", "retry"),
        ("live", "malformed"),
        ("live", "props"),  # the hot path's handle cells go through fire too
        ("live", "heartbeat"),
    } <= cells
    assert any(
        c["table"] == "penalty" and c["trigger"] == "lockout_began" for c in coverage["cells"]
    )
    matrix = (out / "coverage.md").read_text()
    assert "never" in matrix  # what was not exercised is shown, not hidden


def test_a_broken_backoff_setting_fails_reconnection(tmp_path: Path) -> None:
    status, stdout = certify(
        tmp_path,
        "--only",
        "reconnect",
        "--set",
        "backoff.initial=24",
        "--set",
        "backoff.cap=60",
        "--set",
        "backoff.after_live_cap=30",
    )
    found = criteria(tmp_path)
    assert status == 1
    assert found["reconnect.automatic"]["verdict"] == "FAIL"
    assert figure(found["reconnect.automatic"], "reconnection attempt after the loss") > 10
    assert found["perf.reconnect"]["verdict"] == "FAIL"
    assert "FAIL" in stdout.splitlines()[-1]
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert len(suite.findall(".//failure")) == 2
    assert "`reconnect.automatic`" in (tmp_path / "report.md").read_text().split("## Verdicts")[0]


def test_an_injected_network_delay_fails_authorization_time(tmp_path: Path) -> None:
    status, _ = certify(tmp_path, "--only", "network_delay", "--delay", "1.5")
    found = criteria(tmp_path)
    assert status == 1
    assert found["perf.slow_network"]["verdict"] == "FAIL"
    assert figure(found["perf.slow_network"], "authorization time") == pytest.approx(3.0)
    ok_status, _ = certify(tmp_path / "ok", "--only", "network_delay", "--delay", "0.4")
    assert ok_status == 0


def test_a_run_is_a_function_of_its_seed(tmp_path: Path) -> None:
    picks = ("--only", "login,reconnect,heartbeat_timeout,sharding")
    for name in ("a", "b"):
        assert certify(tmp_path / name, "--seed", "9", *picks)[0] == 0
    for name in ("transitions.jsonl", "wire.jsonl", "coverage.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    certify(tmp_path / "c", "--seed", "10", *picks)
    assert (tmp_path / "a" / "wire.jsonl").read_text() != (
        tmp_path / "c" / "wire.jsonl"
    ).read_text()


def test_only_selects_and_the_rest_is_not_run(tmp_path: Path) -> None:
    status, _ = certify(tmp_path, "--only", "login_invalid")
    found = criteria(tmp_path)
    assert status == 0
    assert found["login.invalid"]["verdict"] == "PASS"
    assert {v["verdict"] for k, v in found.items() if k != "login.invalid"} <= {"NOT RUN", "PASS"}
    assert found["perf.processing"]["verdict"] == "NOT RUN"
    assert "partial run" in (tmp_path / "report.md").read_text()
    with pytest.raises(ConfigError, match="unknown scenario"):
        certify(tmp_path, "--only", "login,nope")
    with pytest.raises(ConfigError, match="backoff"):
        certify(tmp_path, "--set", "backoff.nope=1")


def test_the_console_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["certify", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(scenario.id in listed for scenario in SCENARIOS)
    assert cli_main(["certify", "--out", str(tmp_path), "--only", "login"]) == 0
    assert cli_main(["certify", "--target", "nowhere"]) == 2
    assert "use sim" in capsys.readouterr().err
