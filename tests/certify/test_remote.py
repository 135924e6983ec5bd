"""The real-server path (``--target URL``) against the loopback simulator: the engine
connects through the fault proxy on 127.0.0.1, credentials come from ``TRADOVATE_*``, and
steps a real server cannot be made to do are "simulator only", never a pass. Real sockets
and the real clock, 127.0.0.1 only, every wait bounded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
import trio

from trio_tradovate.sim import SimConfig, SimServer, open_simulator, open_simulator_server

from .conftest import certify, criteria, pack_text

PASSWORD = "loopback-Secret-pw-7781"


@contextmanager
def loopback_simulator(config: SimConfig) -> Iterator[SimServer]:
    """A simulator server on 127.0.0.1 in a thread of its own (the command runs trio itself)."""
    ready = threading.Event()
    box: dict[str, object] = {}

    async def serve() -> None:
        async with open_simulator(config) as sim, open_simulator_server(sim) as server:
            stop = trio.Event()
            box.update(server=server, stop=stop, token=trio.lowlevel.current_trio_token())
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        server = box["server"]
        assert isinstance(server, SimServer)
        yield server
    finally:
        token = box["token"]
        stop = box["stop"]
        assert isinstance(token, trio.lowlevel.TrioToken)
        assert isinstance(stop, trio.Event)
        token.run_sync_soon(stop.set)
        thread.join(10)


@pytest.mark.loopback
def test_a_url_target_runs_through_the_proxy_and_marks_simulator_only(tmp_path: Path) -> None:
    config = SimConfig(seed=5, password=PASSWORD, activity_interval=4.0)
    env = {"TRADOVATE_USERNAME": config.username, "TRADOVATE_PASSWORD": PASSWORD}
    picks = (
        "login,login_invalid,heartbeats,heartbeat_timeout,reconnect,network_delay,"
        "request_errors,sync_events,idempotency,rate_limit"
    )
    with loopback_simulator(config) as server:
        assert server.host == "127.0.0.1"
        status, stdout = certify(
            tmp_path,
            "--target",
            server.rest_url,
            "--duration",
            "5",
            "--only",
            picks,
            "--set",
            "heartbeat_interval=1",
            "--set",
            "server_silence_timeout=4",
            env=env,
        )
    found = criteria(tmp_path)
    verdicts = {k: v["verdict"] for k, v in found.items() if v["verdict"] != "NOT RUN"}
    simulator_only = {"events.idempotency", "rate.429", "rate.priorities"}
    assert {k for k, v in verdicts.items() if v == "SIMULATOR ONLY"} == simulator_only
    assert {k: v for k, v in verdicts.items() if v not in ("PASS", "SIMULATOR ONLY")} == {}
    assert status == 0, stdout
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    faults = {s["id"]: s["network_faults"] for s in report["scenarios"]}
    assert faults["reconnect"] == {"drop": 1}
    assert faults["heartbeat_timeout"] == {"silence": 1}
    assert faults["network_delay"] == {"delay": 1}
    assert report["target"] == server.rest_url
    assert all(s["clock"] == "real" for s in report["scenarios"] if s["ran"])
    assert PASSWORD not in pack_text(tmp_path) + stdout


def test_a_real_target_needs_credentials(tmp_path: Path) -> None:
    from trio_tradovate.errors import ConfigError

    with pytest.raises(ConfigError, match="TRADOVATE_USERNAME"):
        certify(tmp_path, "--target", "demo", env={})
