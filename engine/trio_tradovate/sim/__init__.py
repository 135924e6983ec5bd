"""A Tradovate-compatible simulator for tests: REST auth, the user, market-data and replay
websockets, seeded activity and market data, and deterministic fault controls, built from
``docs/protocol.md`` (not from any client).

Typical use::

    async with open_simulator(SimConfig(seed=1)) as sim:
        token = sim.issue_token()
        stream = await sim.connector()("demo.tradovateapi.com", 443, tls=True)
        ...
        assert client_state == sim.truth()

Fault controls are :class:`Simulator` methods (``drop_connections``, ``inject_malformed``,
``penalize_requests``, ...), each counted in ``sim.injected``; :func:`apply_fault` maps a spec
``{"kind": <FAULT_KINDS key>, **params}`` onto them, and the loopback server exposes it as
``POST /_sim/fault``.
"""

from ._audit import MdRecord, PenaltyRecord, RequestRecord, RestRecord, RetryRecord, SocketAudit
from ._config import DEFAULT_REQUEST_LIMITS, SimConfig
from ._faults import FAULT_KINDS, FaultError, apply_fault
from ._inject import MALFORMED_KINDS
from ._server import SimServer, open_simulator_server
from ._simulator import SimConnector, Simulator, open_simulator, socket_role
from ._world import COLLECTIONS

__all__ = [
    "COLLECTIONS",
    "DEFAULT_REQUEST_LIMITS",
    "FAULT_KINDS",
    "MALFORMED_KINDS",
    "FaultError",
    "MdRecord",
    "PenaltyRecord",
    "RequestRecord",
    "RestRecord",
    "RetryRecord",
    "SimConfig",
    "SimConnector",
    "SimServer",
    "Simulator",
    "SocketAudit",
    "apply_fault",
    "open_simulator",
    "open_simulator_server",
    "socket_role",
]
