"""The fault proxy: drop, half-open silence and delay, in virtual time over in-memory
streams and on a real loopback port in front of the simulator's server."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio

from trio_tradovate import (
    BackoffPolicy,
    Credentials,
    Engine,
    EngineConfig,
    EngineStopped,
    State,
    open_engine,
)
from trio_tradovate.proxy import (
    NetworkFaults,
    ProxyConnector,
    SplicingConnector,
    open_fault_proxy,
    splice,
)
from trio_tradovate.sim import SimConfig, Simulator, open_simulator, open_simulator_server


def records(engine: Engine, trigger: str) -> list[float]:
    return [r.time for r in engine.transitions if r.trigger == trigger]


async def test_splicing_faults_in_virtual_time(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    faults = NetworkFaults()
    async with trio.open_nursery() as nursery:
        connector = SplicingConnector(sim.connector(), faults, nursery)
        async with open_engine(sim.engine_config(connector=connector)) as engine:
            await engine.wait_for(State.LIVE)
            await faults.drop()
            lost = await engine.wait_for(State.BACKOFF)
            assert lost.reason.startswith("dropped")
            await engine.wait_for(State.LIVE)
            silent_at = trio.current_time()
            faults.silence()
            stalled = await engine.wait_for(State.BACKOFF)
            assert stalled.reason.startswith("stalled")
            assert stalled.time - silent_at <= engine.config.server_silence_timeout + 0.01
            faults.silence(False)
            await engine.wait_for(State.LIVE)
            faults.delay(0.75)
            await faults.drop()
            await engine.wait_for(State.BACKOFF)
            await engine.wait_for(State.LIVE)
            opened, authorized = records(engine, "opened"), records(engine, "authorized")
            # authorize out and its answer back each cross the delay once
            assert authorized[-1] - opened[-1] == pytest.approx(1.5, abs=0.01)
        nursery.cancel_scope.cancel()
    assert faults.injected == {"drop": 2, "silence": 1, "delay": 1}
    assert [a.syncrequest_count for a in sim.sockets] == [1, 1, 1, 1]


async def test_the_proxy_listens_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        async with open_fault_proxy("127.0.0.1", 1, host="0.0.0.0"):
            pass  # pragma: no cover


@pytest.mark.loopback
async def test_tcp_proxy_in_front_of_the_loopback_simulator() -> None:
    """Real sockets, real clock, bounded: drop, silence and delay through the proxy."""
    with trio.fail_after(40):
        async with (
            open_simulator(SimConfig(seed=4, activity_interval=0.5)) as sim,
            open_simulator_server(sim) as server,
            open_fault_proxy("127.0.0.1", server.port) as proxy,
        ):
            assert proxy.host == "127.0.0.1"
            assert proxy.port != server.port
            config = EngineConfig(
                rest_url=server.rest_url,
                credentials=Credentials(sim.config.username, sim.config.password),
                wall_clock=sim.wall_clock,
                connector=ProxyConnector(proxy),
                backoff=BackoffPolicy(initial=0.2),
                server_silence_timeout=1.0,
                seed=3,
            )
            faults = proxy.faults
            async with open_engine(config) as engine:
                await engine.wait_for(State.LIVE)
                assert faults.open_connections == 1
                await faults.drop()
                lost = await engine.wait_for(State.BACKOFF)
                assert lost.reason.startswith("dropped")
                await engine.wait_for(State.LIVE)
                faults.silence()
                stalled = await engine.wait_for(State.BACKOFF)
                assert stalled.reason.startswith("stalled")
                faults.silence(False)
                await engine.wait_for(State.LIVE)
                faults.delay(0.3)
                await faults.drop()
                await engine.wait_for(State.BACKOFF)
                await engine.wait_for(State.LIVE)
                opened, authorized = records(engine, "opened"), records(engine, "authorized")
                assert authorized[-1] - opened[-1] >= 0.6  # one round trip, delayed each way
            assert faults.connections == 4
            assert [a.syncrequest_count for a in sim.sockets] == [1, 1, 1, 1]


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` made with the openssl command line."""
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


@pytest.mark.loopback
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_runs_end_to_end_through_the_proxy(tmp_path: Path) -> None:
    """``wss`` through the proxy: the engine's TLS session is with the server, checked
    against the server's name; the proxy in between only forwards ciphertext."""
    key, cert = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    with trio.fail_after(30):
        async with (
            open_simulator(SimConfig(seed=6)) as sim,
            open_simulator_server(sim) as server,
            trio.open_nursery() as nursery,
        ):

            async def terminate_tls(stream: trio.abc.Stream) -> None:
                upstream = await trio.open_tcp_stream("127.0.0.1", server.port)
                await splice(stream, upstream, NetworkFaults())

            [listener] = await nursery.start(
                partial(trio.serve_ssl_over_tcp, terminate_tls, 0, server_context, host="127.0.0.1")
            )
            tls_port = listener.transport_listener.socket.getsockname()[1]
            async with open_fault_proxy("127.0.0.1", tls_port) as proxy:

                def config(connector: ProxyConnector, budget: int | None) -> EngineConfig:
                    return EngineConfig(
                        rest_url=server.rest_url,
                        ws_url=f"wss://localhost:{tls_port}/v1/websocket",
                        credentials=Credentials(sim.config.username, sim.config.password),
                        wall_clock=sim.wall_clock,
                        connector=connector,
                        backoff=BackoffPolicy(initial=0.2, retry_budget=budget),
                    )

                async with open_engine(config(ProxyConnector(proxy, trusting), None)) as engine:
                    await engine.wait_for(State.LIVE)
                    await proxy.faults.drop()
                    await engine.wait_for(State.BACKOFF)
                    await engine.wait_for(State.LIVE)
                async with open_engine(config(ProxyConnector(proxy), 1)) as untrusting:
                    with pytest.raises(EngineStopped) as info:
                        await untrusting.wait_for(State.LIVE)
            nursery.cancel_scope.cancel()
    assert info.value.reason.startswith("tls")  # the system store does not know this cert
    assert proxy.faults.connections == 3  # the refused handshake went through it too
    assert [a.syncrequest_count for a in sim.sockets] == [1, 1]
