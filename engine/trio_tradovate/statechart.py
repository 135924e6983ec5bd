"""The statecharts: declared, total tables, run by ``transitions``, drawn for auditors.

Rule 1 (after h11's ``_state.py``): what the engine does with an event is looked up in a
declared :class:`Table`, keyed by ``(node, trigger)``, and the table is **total**: every pair
has an outcome, checked when the module is imported and again by a generated test. There are
four kinds of outcome (:class:`Outcome`):

``move``
    a recorded transition to ``dest``; rows of one pair are tried in order and the first whose
    guard holds is taken; the last row of a pair never has a guard, so a move always happens;
``handle``
    the event is dealt with in place (a ``props`` event applied to the store, an answer routed
    to its caller): no state change and no record, because these are the hot path;
``ignore``
    nothing to do here (an ``h`` while backing off, a push this socket does not serve, an
    answer nobody asked for): counted under ``ignored.<trigger>`` and logged at debug level;
``malformed``
    a well-behaved server never sends this here (a second ``o``, a snapshot nobody asked for):
    counted as malformed and logged with the node, the connection stays up.

Rule 2: only a socket's supervisor task fires its chart (:meth:`Statechart.fire`); child
tasks report through channels. :meth:`Statechart.fire` never raises for an event: a trigger
without a declared row cannot exist (import fails), and a move whose guards all fail cannot
exist either (the last row is unguarded).

Rule 3: hidden sub-states are declared nodes. ``syncing`` has three children (the
syncrequest waiting for its rate budget, sent, collecting split parts); the public
:class:`State` of a node is its parent. A penalty lockout is its own region
(:data:`PENALTY_TABLE`), so its start and its end are both recorded.

Guards are named by :class:`Guard` and answered by the chart's :class:`Policy` with the event
that fired, so a guard reads both the event (was the refused token just minted?) and the
socket's counters (how many attempts failed in a row?).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson
from transitions import EventData, Machine

logger = logging.getLogger("trio_tradovate.transitions")


class State(enum.Enum):
    """Where one socket is in its connection lifecycle (the public, top-level states)."""

    #: Created, not started yet.
    DISCONNECTED = "disconnected"
    #: Getting a token if needed, opening TCP/TLS and the websocket, waiting for ``o``.
    CONNECTING = "connecting"
    #: ``authorize`` sent, waiting for its answer.
    AUTHENTICATING = "authenticating"
    #: Authorized; the one ``user/syncrequest`` is waiting for its budget, sent, or its split
    #: parts are arriving.
    SYNCING = "syncing"
    #: Snapshot applied; ``props`` events stream into the store.
    LIVE = "live"
    #: The connection is gone; waiting a jittered delay before trying again.
    BACKOFF = "backoff"
    #: Terminal: closed by the application or stopped by policy. The reason is recorded.
    STOPPED = "stopped"


class Node(enum.Enum):
    """The states the connection table runs on: :class:`State` with ``syncing`` split into its
    declared children (``syncing.paced``, ``syncing.sent``, ``syncing.collecting``)."""

    #: Created, not started yet.
    DISCONNECTED = "disconnected"
    #: Token, TCP/TLS, websocket upgrade, then waiting for ``o`` (``connect_timeout``).
    CONNECTING = "connecting"
    #: ``authorize`` sent, waiting for its answer (``auth_timeout``).
    AUTHENTICATING = "authenticating"
    #: Authorized; the syncrequest waits for its rate budget (no phase timeout runs).
    SYNC_PACED = "syncing.paced"
    #: The syncrequest is sent, waiting for the snapshot (``sync_timeout``).
    SYNC_SENT = "syncing.sent"
    #: Split snapshot parts are arriving; complete after ``split_quiet`` without a new one.
    SYNC_COLLECTING = "syncing.collecting"
    #: Snapshot applied; ``props`` events stream into the store.
    LIVE = "live"
    #: The connection is gone; waiting a jittered delay before trying again.
    BACKOFF = "backoff"
    #: Terminal: closed by the application or stopped by policy.
    STOPPED = "stopped"

    @property
    def state(self) -> State:
        """The public state this node belongs to."""
        return _PARENT[self]


_PARENT = {node: State(node.value.split(".")[0]) for node in Node}


class Trigger(enum.StrEnum):
    """Every event a socket's supervisor can be told of (typed; equal to its string value)."""

    START = "start"
    OPENED = "opened"
    AUTHORIZED = "authorized"
    AUTH_REJECTED = "auth_rejected"
    BUDGET_READY = "budget_ready"
    SNAPSHOT = "snapshot"
    SNAPSHOT_PART = "snapshot_part"
    PARTS_COMPLETE = "parts_complete"
    SYNC_REJECTED = "sync_rejected"
    PROPS = "props"
    ANSWER = "answer"
    UNREQUESTED = "unrequested"
    HEARTBEAT = "heartbeat"
    PUSH = "push"
    MALFORMED = "malformed"
    CONNECT_FAILED = "connect_failed"
    LOST = "lost"
    SERVER_CLOSING = "server_closing"
    SHUTDOWN = "shutdown"
    TIMED_OUT = "timed_out"
    RETRY = "retry"
    FAIL = "fail"
    CLOSE = "close"
    # Market-data sockets (``MARKET_DATA_TABLE``); the user socket declares them ignored.
    RESTORED = "restored"
    MARKET_DATA = "market_data"
    SUBSCRIPTION_ANSWER = "subscription_answer"
    REQUESTS_DUE = "requests_due"
    STALE = "stale"
    CLOCK = "clock"


#: Triggers only a market-data socket's session emits.
MARKET_DATA_TRIGGERS = (
    Trigger.RESTORED,
    Trigger.MARKET_DATA,
    Trigger.SUBSCRIPTION_ANSWER,
    Trigger.REQUESTS_DUE,
    Trigger.STALE,
    Trigger.CLOCK,
)
#: Triggers only the user-sync socket's session emits.
SYNC_TRIGGERS = (
    Trigger.BUDGET_READY,
    Trigger.SNAPSHOT,
    Trigger.SNAPSHOT_PART,
    Trigger.PARTS_COMPLETE,
    Trigger.SYNC_REJECTED,
    Trigger.PROPS,
)


class MdNode(enum.Enum):
    """The states a market-data socket's table runs on (``MARKET_DATA_TABLE``): the user
    socket's, with ``syncing`` replaced by the restoring of the subscriptions."""

    #: Created, not started yet.
    DISCONNECTED = "disconnected"
    #: Token, TCP/TLS, websocket upgrade, then waiting for ``o`` (``connect_timeout``).
    CONNECTING = "connecting"
    #: ``authorize`` sent, waiting for its answer (``auth_timeout``).
    AUTHENTICATING = "authenticating"
    #: Authorized; the wanted subscriptions are asked for again, paced, until each has its
    #: answer (``sync_timeout``). Public state ``syncing``.
    RESTORING = "syncing.restoring"
    #: Every wanted subscription restored; data streams to the consumers.
    LIVE = "live"
    #: The connection is gone; waiting a jittered delay before trying again.
    BACKOFF = "backoff"
    #: Terminal: closed by the application or stopped by policy.
    STOPPED = "stopped"

    @property
    def state(self) -> State:
        """The public state this node belongs to."""
        return State(self.value.split(".")[0])


class PenaltyNode(enum.Enum):
    """The penalty region: whether a captcha or 429 lockout is running (engine-wide)."""

    #: Requests flow under the rate governor.
    CLEAR = "clear"
    #: Only cancellations and liquidations go out until the lockout ends.
    LOCKED_OUT = "locked_out"


class PenaltyTrigger(enum.StrEnum):
    """Events of the penalty region."""

    LOCKOUT_BEGAN = "lockout_began"
    LOCKOUT_ENDED = "lockout_ended"


class Outcome(enum.Enum):
    """What a declared rule does with its event (see the module docstring)."""

    MOVE = "move"
    HANDLE = "handle"
    IGNORE = "ignore"
    MALFORMED = "malformed"


class Guard(enum.StrEnum):
    """Conditions a ``move`` row may ask the chart's :class:`Policy`."""

    #: The configured number of consecutive failed attempts is used up.
    RETRY_BUDGET_EXHAUSTED = "retry_budget_exhausted"
    #: No new token can help: none can be minted (caller-given token), or a just-minted
    #: token was refused twice in a row.
    TOKEN_HOPELESS = "token_hopeless"
    #: The syncrequest's rate budget allows sending it now.
    SYNC_BUDGET_FREE = "sync_budget_free"
    #: A market-data socket has no subscription to restore.
    NOTHING_TO_RESTORE = "nothing_to_restore"


class Action(enum.StrEnum):
    """What the supervisor does for a rule, named in the table so the diagrams show it."""

    SEND_AUTHORIZE = "send_authorize"
    SEND_SYNC = "send_sync"
    COLLECT_PART = "collect_part"
    GO_LIVE = "go_live"
    APPLY_PROPS = "apply_props"
    BUFFER_PROPS = "buffer_props"
    APPLY_LATE_PART = "apply_late_part"
    ROUTE_ANSWER = "route_answer"
    COUNT_HEARTBEAT = "count_heartbeat"
    END_CONNECTION = "end_connection"
    REJECT_TOKEN = "reject_token"
    SEND_REQUESTS = "send_requests"
    DELIVER = "deliver"
    NOTE_ANSWER = "note_answer"
    RESUBSCRIBE = "resubscribe"


N = TypeVar("N", bound=enum.Enum)
T = TypeVar("T", bound=enum.StrEnum)


@dataclass(frozen=True)
class Rule(Generic[N, T]):
    """One declared row: ``trigger`` in any of ``source`` has ``outcome``."""

    trigger: T
    source: tuple[N, ...]
    outcome: Outcome
    dest: N | None = None
    guard: Guard | None = None
    action: Action | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if (self.outcome is Outcome.MOVE) != (self.dest is not None):
            raise ValueError(f"{self}: a move names its dest, and only a move does")


class Table(Generic[N, T]):
    """A total table over ``nodes`` x ``triggers`` (checked here, at import)."""

    def __init__(
        self,
        name: str,
        nodes: Iterable[N],
        triggers: Iterable[T],
        initial: N,
        terminal: Sequence[N],
        rules: Sequence[Rule[N, T]],
    ) -> None:
        self.name = name
        self.nodes: tuple[N, ...] = tuple(nodes)
        self.triggers: tuple[T, ...] = tuple(triggers)
        self.initial = initial
        self.terminal = tuple(terminal)
        self.rules = tuple(rules)
        cells: dict[tuple[N, T], list[Rule[N, T]]] = {}
        for rule in self.rules:
            for source in rule.source:
                cells.setdefault((source, rule.trigger), []).append(rule)
        missing = [(n, t) for n in self.nodes for t in self.triggers if (n, t) not in cells]
        if missing:
            raise ValueError(f"{name} table is not total; undeclared: {missing[:5]}")
        for (node, trigger), found in cells.items():
            kinds = {rule.outcome for rule in found}
            if len(found) > 1 and kinds != {Outcome.MOVE}:
                raise ValueError(f"{name}: ({node}, {trigger}) mixes outcomes {kinds}")
            if found[-1].guard is not None:
                raise ValueError(f"{name}: ({node}, {trigger}) ends on a guarded row")
        #: ``(node, trigger) -> rules``, tried in order.
        self.cells: Mapping[tuple[N, T], tuple[Rule[N, T], ...]] = {
            key: tuple(value) for key, value in cells.items()
        }

    def rules_for(self, node: N, trigger: T) -> tuple[Rule[N, T], ...]:
        """The declared rules of one pair (never empty)."""
        return self.cells[(node, trigger)]

    def moves(self) -> list[Rule[N, T]]:
        """The ``move`` rows, in table order."""
        return [rule for rule in self.rules if rule.outcome is Outcome.MOVE]


def _rules(
    trigger: T,
    cases: Iterable[tuple[Iterable[N], Outcome, Action | None, str]],
) -> list[Rule[N, T]]:
    return [
        Rule(trigger, tuple(nodes), outcome, action=action, doc=doc)
        for nodes, outcome, action, doc in cases
    ]


def _move(
    trigger: T,
    source: Iterable[N],
    dest: N,
    doc: str,
    *,
    guard: Guard | None = None,
    action: Action | None = None,
) -> Rule[N, T]:
    return Rule(trigger, tuple(source), Outcome.MOVE, dest, guard, action, doc)


# --- the connection table ---------------------------------------------------------------------

_SYNCING = (Node.SYNC_PACED, Node.SYNC_SENT, Node.SYNC_COLLECTING)
#: Nodes with an open websocket (or one being opened).
CONNECTED = (Node.CONNECTING, Node.AUTHENTICATING, *_SYNCING, Node.LIVE)
#: Nodes with no connection at all: whatever a connection said is stale here.
UNCONNECTED = (Node.DISCONNECTED, Node.BACKOFF, Node.STOPPED)
NON_TERMINAL = tuple(node for node in Node if node is not Node.STOPPED)
_AFTER_OPEN = (Node.AUTHENTICATING, *_SYNCING, Node.LIVE)

IGNORE, HANDLE, MALFORMED = Outcome.IGNORE, Outcome.HANDLE, Outcome.MALFORMED


def _others(*nodes: Node) -> tuple[Node, ...]:
    return tuple(node for node in Node if node not in nodes)


def _ending(
    trigger: Trigger,
    source: Sequence[Node],
    doc: str,
    action: Action = Action.END_CONNECTION,
) -> list[Rule[Node, Trigger]]:
    """A connection ended: stop when the retry budget is used up, else back off."""
    return [
        _move(
            trigger,
            source,
            Node.STOPPED,
            "no attempts left",
            guard=Guard.RETRY_BUDGET_EXHAUSTED,
            action=action,
        ),
        _move(trigger, source, Node.BACKOFF, doc, action=action),
        *_rules(trigger, [(_others(*source), IGNORE, None, "no connection of this node to end")]),
    ]


_CONNECTION_RULES: list[Rule[Node, Trigger]] = [
    _move(Trigger.START, [Node.DISCONNECTED], Node.CONNECTING, "application opened"),
    *_rules(Trigger.START, [(_others(Node.DISCONNECTED), IGNORE, None, "already started")]),
    _move(
        Trigger.OPENED,
        [Node.CONNECTING],
        Node.AUTHENTICATING,
        "'o' received",
        action=Action.SEND_AUTHORIZE,
    ),
    *_rules(
        Trigger.OPENED,
        [(_AFTER_OPEN, MALFORMED, None, "a second 'o'"), (UNCONNECTED, IGNORE, None, "stale")],
    ),
    _move(
        Trigger.AUTHORIZED,
        [Node.AUTHENTICATING],
        Node.SYNC_SENT,
        "authorize s=200, budget free",
        guard=Guard.SYNC_BUDGET_FREE,
        action=Action.SEND_SYNC,
    ),
    _move(
        Trigger.AUTHORIZED,
        [Node.AUTHENTICATING],
        Node.SYNC_PACED,
        "authorize s=200; the syncrequest waits for its rate budget",
    ),
    *_rules(
        Trigger.AUTHORIZED,
        [
            (_others(Node.AUTHENTICATING, *UNCONNECTED), MALFORMED, None, "authorize not awaited"),
            (UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    _move(
        Trigger.AUTH_REJECTED,
        [Node.AUTHENTICATING],
        Node.STOPPED,
        "no token could help",
        guard=Guard.TOKEN_HOPELESS,
        action=Action.REJECT_TOKEN,
    ),
    *_ending(
        Trigger.AUTH_REJECTED,
        [Node.AUTHENTICATING],
        "token refused: get another",
        Action.REJECT_TOKEN,
    ),
    _move(
        Trigger.BUDGET_READY,
        [Node.SYNC_PACED],
        Node.SYNC_SENT,
        "rate budget free",
        action=Action.SEND_SYNC,
    ),
    *_rules(Trigger.BUDGET_READY, [(_others(Node.SYNC_PACED), IGNORE, None, "nothing paced")]),
    _move(
        Trigger.SNAPSHOT,
        [Node.SYNC_SENT],
        Node.LIVE,
        "snapshot applied with the events that raced it",
        action=Action.GO_LIVE,
    ),
    *_rules(
        Trigger.SNAPSHOT,
        [
            (_others(Node.SYNC_SENT, *UNCONNECTED), MALFORMED, None, "no snapshot awaited"),
            (UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    _move(
        Trigger.SNAPSHOT_PART,
        [Node.SYNC_SENT],
        Node.SYNC_COLLECTING,
        "first split part",
        action=Action.COLLECT_PART,
    ),
    *_rules(
        Trigger.SNAPSHOT_PART,
        [
            ([Node.SYNC_COLLECTING], HANDLE, Action.COLLECT_PART, "another part"),
            (
                [Node.LIVE],
                HANDLE,
                Action.APPLY_LATE_PART,
                "a part after the quiet period: upserted",
            ),
            (
                [Node.CONNECTING, Node.AUTHENTICATING, Node.SYNC_PACED],
                MALFORMED,
                None,
                "no snapshot awaited",
            ),
            (UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    _move(
        Trigger.PARTS_COMPLETE,
        [Node.SYNC_COLLECTING],
        Node.LIVE,
        "split_quiet passed without a part: snapshot assembled and applied",
        action=Action.GO_LIVE,
    ),
    *_rules(Trigger.PARTS_COMPLETE, [(_others(Node.SYNC_COLLECTING), IGNORE, None, "no parts")]),
    *_ending(
        Trigger.SYNC_REJECTED,
        [Node.SYNC_SENT, Node.SYNC_COLLECTING],
        "syncrequest refused, penalised or rate limited",
    ),
    *_rules(
        Trigger.PROPS,
        [
            ([Node.LIVE], HANDLE, Action.APPLY_PROPS, "applied to the store"),
            (
                [Node.SYNC_SENT, Node.SYNC_COLLECTING],
                HANDLE,
                Action.BUFFER_PROPS,
                "races the snapshot: kept, coalesced per entity",
            ),
            (
                [Node.CONNECTING, Node.AUTHENTICATING, Node.SYNC_PACED, *UNCONNECTED],
                IGNORE,
                None,
                "before any syncrequest: nobody asked for it",
            ),
        ],
    ),
    *_rules(
        Trigger.ANSWER,
        [
            ([Node.LIVE], HANDLE, Action.ROUTE_ANSWER, "to the request that waits for it"),
            (_others(Node.LIVE), IGNORE, None, "no application request is out"),
        ],
    ),
    *_rules(Trigger.UNREQUESTED, [(tuple(Node), IGNORE, None, "duplicate or unknown answer")]),
    *_rules(
        Trigger.HEARTBEAT,
        [
            (CONNECTED, HANDLE, Action.COUNT_HEARTBEAT, "the server is alive"),
            (UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    *_rules(Trigger.PUSH, [(tuple(Node), IGNORE, None, "md, chart, clock or unknown kinds")]),
    *_rules(
        Trigger.MALFORMED,
        [(CONNECTED, MALFORMED, None, "skipped"), (UNCONNECTED, IGNORE, None, "stale")],
    ),
    *_ending(
        Trigger.CONNECT_FAILED,
        CONNECTED,
        "DNS, TLS, refused, rejected upgrade (the websocket library may report it late)",
    ),
    *_ending(Trigger.LOST, CONNECTED, "drop, close, stall or protocol error"),
    *_ending(Trigger.SERVER_CLOSING, CONNECTED, "a c[code, reason] frame"),
    *_ending(Trigger.SHUTDOWN, CONNECTED, "a shutdown event: wait by its reasonCode"),
    *_ending(
        Trigger.TIMED_OUT,
        [Node.CONNECTING, Node.AUTHENTICATING, Node.SYNC_SENT],
        "no 'o', no authorize answer or no snapshot in time",
    ),
    _move(Trigger.RETRY, [Node.BACKOFF], Node.CONNECTING, "backoff delay elapsed"),
    *_rules(Trigger.RETRY, [(_others(Node.BACKOFF), IGNORE, None, "not backing off")]),
    _move(
        Trigger.FAIL,
        NON_TERMINAL,
        Node.STOPPED,
        "unrecoverable: e.g. bad credentials",
        action=Action.END_CONNECTION,
    ),
    *_rules(Trigger.FAIL, [([Node.STOPPED], IGNORE, None, "already stopped")]),
    _move(
        Trigger.CLOSE,
        NON_TERMINAL,
        Node.STOPPED,
        "application closed the engine",
        action=Action.END_CONNECTION,
    ),
    *_rules(Trigger.CLOSE, [([Node.STOPPED], IGNORE, None, "already stopped")]),
    *[
        rule
        for trigger in MARKET_DATA_TRIGGERS
        for rule in _rules(trigger, [(tuple(Node), IGNORE, None, "no market data here")])
    ],
]

#: The connection table every socket runs.
CONNECTION_TABLE: Table[Node, Trigger] = Table(
    "connection", Node, Trigger, Node.DISCONNECTED, [Node.STOPPED], _CONNECTION_RULES
)

#: The penalty region, one per engine (Tradovate's lockouts are per user, P-RL).
PENALTY_TABLE: Table[PenaltyNode, PenaltyTrigger] = Table(
    "penalty",
    PenaltyNode,
    PenaltyTrigger,
    PenaltyNode.CLEAR,
    [],
    [
        _move(
            PenaltyTrigger.LOCKOUT_BEGAN,
            [PenaltyNode.CLEAR],
            PenaltyNode.LOCKED_OUT,
            "captcha or 429: only cancellations and liquidations go out",
        ),
        *_rules(
            PenaltyTrigger.LOCKOUT_BEGAN,
            [([PenaltyNode.LOCKED_OUT], HANDLE, None, "another one: the lockout is extended")],
        ),
        _move(
            PenaltyTrigger.LOCKOUT_ENDED,
            [PenaltyNode.LOCKED_OUT],
            PenaltyNode.CLEAR,
            "the lockout time is over",
        ),
        *_rules(
            PenaltyTrigger.LOCKOUT_ENDED, [([PenaltyNode.CLEAR], IGNORE, None, "none running")]
        ),
    ],
)


# --- the market-data table ------------------------------------------------------------------

M = MdNode
_MD_CONNECTED = (M.CONNECTING, M.AUTHENTICATING, M.RESTORING, M.LIVE)
_MD_UNCONNECTED = (M.DISCONNECTED, M.BACKOFF, M.STOPPED)
_MD_STREAMING = (M.RESTORING, M.LIVE)


def _md_others(*nodes: MdNode) -> tuple[MdNode, ...]:
    return tuple(node for node in MdNode if node not in nodes)


def _md_ending(
    trigger: Trigger,
    source: Sequence[MdNode],
    doc: str,
    action: Action = Action.END_CONNECTION,
) -> list[Rule[MdNode, Trigger]]:
    """A connection ended: stop when the retry budget is used up, else back off."""
    return [
        _move(
            trigger,
            source,
            M.STOPPED,
            "no attempts left",
            guard=Guard.RETRY_BUDGET_EXHAUSTED,
            action=action,
        ),
        _move(trigger, source, M.BACKOFF, doc, action=action),
        *_rules(
            trigger, [(_md_others(*source), IGNORE, None, "no connection of this node to end")]
        ),
    ]


def _md_streaming(trigger: Trigger, action: Action, doc: str) -> list[Rule[MdNode, Trigger]]:
    """Handled while subscriptions stream (restoring or live), ignored elsewhere."""
    return _rules(
        trigger,
        [
            (_MD_STREAMING, HANDLE, action, doc),
            (_md_others(*_MD_STREAMING), IGNORE, None, "no subscription on this connection"),
        ],
    )


_MARKET_DATA_RULES: list[Rule[MdNode, Trigger]] = [
    _move(Trigger.START, [M.DISCONNECTED], M.CONNECTING, "application opened"),
    *_rules(Trigger.START, [(_md_others(M.DISCONNECTED), IGNORE, None, "already started")]),
    _move(
        Trigger.OPENED,
        [M.CONNECTING],
        M.AUTHENTICATING,
        "'o' received",
        action=Action.SEND_AUTHORIZE,
    ),
    *_rules(
        Trigger.OPENED,
        [
            ((M.AUTHENTICATING, *_MD_STREAMING), MALFORMED, None, "a second 'o'"),
            (_MD_UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    _move(
        Trigger.AUTHORIZED,
        [M.AUTHENTICATING],
        M.LIVE,
        "authorize s=200, no subscription to restore",
        guard=Guard.NOTHING_TO_RESTORE,
        action=Action.GO_LIVE,
    ),
    _move(
        Trigger.AUTHORIZED,
        [M.AUTHENTICATING],
        M.RESTORING,
        "authorize s=200: the wanted subscriptions are asked for again, paced",
        action=Action.SEND_REQUESTS,
    ),
    *_rules(
        Trigger.AUTHORIZED,
        [
            ((M.CONNECTING, *_MD_STREAMING), MALFORMED, None, "authorize not awaited"),
            (_MD_UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    _move(
        Trigger.AUTH_REJECTED,
        [M.AUTHENTICATING],
        M.STOPPED,
        "no token could help",
        guard=Guard.TOKEN_HOPELESS,
        action=Action.REJECT_TOKEN,
    ),
    *_md_ending(
        Trigger.AUTH_REJECTED, [M.AUTHENTICATING], "token refused: get another", Action.REJECT_TOKEN
    ),
    _move(
        Trigger.RESTORED,
        [M.RESTORING],
        M.LIVE,
        "every wanted subscription answered",
        action=Action.GO_LIVE,
    ),
    *_rules(Trigger.RESTORED, [(_md_others(M.RESTORING), IGNORE, None, "nothing restoring")]),
    *_md_streaming(Trigger.MARKET_DATA, Action.DELIVER, "to each subscription's consumers"),
    *_md_streaming(Trigger.CLOCK, Action.DELIVER, "the replay clock, to its watchers"),
    *_md_streaming(
        Trigger.SUBSCRIPTION_ANSWER, Action.NOTE_ANSWER, "subscribed, refused or released"
    ),
    *_md_streaming(Trigger.REQUESTS_DUE, Action.SEND_REQUESTS, "subscribe and unsubscribe, paced"),
    *_md_streaming(
        Trigger.STALE, Action.RESUBSCRIBE, "no value for stale_after: re-subscribed once"
    ),
    *_rules(
        Trigger.ANSWER,
        [
            ([M.LIVE], HANDLE, Action.ROUTE_ANSWER, "to the request that waits for it"),
            (_md_others(M.LIVE), IGNORE, None, "no application request is out"),
        ],
    ),
    *_rules(Trigger.UNREQUESTED, [(tuple(MdNode), IGNORE, None, "duplicate or unknown answer")]),
    *_rules(
        Trigger.HEARTBEAT,
        [
            (_MD_CONNECTED, HANDLE, Action.COUNT_HEARTBEAT, "the server is alive (a quiet market)"),
            (_MD_UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    *_rules(Trigger.PUSH, [(tuple(MdNode), IGNORE, None, "props or unknown kinds")]),
    *_rules(
        Trigger.MALFORMED,
        [(_MD_CONNECTED, MALFORMED, None, "skipped"), (_MD_UNCONNECTED, IGNORE, None, "stale")],
    ),
    *[
        rule
        for trigger in SYNC_TRIGGERS
        for rule in _rules(trigger, [(tuple(MdNode), IGNORE, None, "no user sync here")])
    ],
    *_md_ending(
        Trigger.CONNECT_FAILED,
        _MD_CONNECTED,
        "DNS, TLS, refused, rejected upgrade (the websocket library may report it late)",
    ),
    *_md_ending(Trigger.LOST, _MD_CONNECTED, "drop, close, stall or protocol error"),
    *_md_ending(Trigger.SERVER_CLOSING, _MD_CONNECTED, "a c[code, reason] frame"),
    *_md_ending(Trigger.SHUTDOWN, _MD_CONNECTED, "a shutdown event: wait by its reasonCode"),
    *_md_ending(
        Trigger.TIMED_OUT,
        [M.CONNECTING, M.AUTHENTICATING, M.RESTORING],
        "no 'o', no authorize answer or subscriptions unanswered in time",
    ),
    _move(Trigger.RETRY, [M.BACKOFF], M.CONNECTING, "backoff delay elapsed"),
    *_rules(Trigger.RETRY, [(_md_others(M.BACKOFF), IGNORE, None, "not backing off")]),
    _move(
        Trigger.FAIL,
        _md_others(M.STOPPED),
        M.STOPPED,
        "unrecoverable: e.g. bad credentials",
        action=Action.END_CONNECTION,
    ),
    *_rules(Trigger.FAIL, [([M.STOPPED], IGNORE, None, "already stopped")]),
    _move(
        Trigger.CLOSE,
        _md_others(M.STOPPED),
        M.STOPPED,
        "application closed the engine",
        action=Action.END_CONNECTION,
    ),
    *_rules(Trigger.CLOSE, [([M.STOPPED], IGNORE, None, "already stopped")]),
]

#: The table of a market-data socket: the connection table's lifecycle, with the restoring
#: of subscriptions where the user socket syncs (see ``docs/market-data.md``).
MARKET_DATA_TABLE: Table[MdNode, Trigger] = Table(
    "marketdata", MdNode, Trigger, MdNode.DISCONNECTED, [MdNode.STOPPED], _MARKET_DATA_RULES
)


# --- the replay table --------------------------------------------------------------------------

#: The replay socket's nodes: the user socket's, with ``syncing.restoring`` (the replay clock
#: and the subscriptions) before the user sync (the replay account exists once the clock runs).
REPLAY_NODES: tuple[Node | MdNode, ...] = (
    Node.DISCONNECTED,
    Node.CONNECTING,
    Node.AUTHENTICATING,
    MdNode.RESTORING,
    *_SYNCING,
    Node.LIVE,
    Node.BACKOFF,
    Node.STOPPED,
)
_R_CONNECTED: tuple[Node | MdNode, ...] = (
    Node.CONNECTING,
    Node.AUTHENTICATING,
    MdNode.RESTORING,
    *_SYNCING,
    Node.LIVE,
)
_R_UNCONNECTED: tuple[Node | MdNode, ...] = UNCONNECTED
_R_STREAMING: tuple[Node | MdNode, ...] = (MdNode.RESTORING, *_SYNCING, Node.LIVE)


def _r(*nodes: Node | MdNode) -> tuple[Node | MdNode, ...]:
    """Nodes of the replay table, typed as such."""
    return nodes


def _r_others(*nodes: Node | MdNode) -> tuple[Node | MdNode, ...]:
    return tuple(node for node in REPLAY_NODES if node not in nodes)


def _r_ending(
    trigger: Trigger,
    source: Sequence[Node | MdNode],
    doc: str,
    action: Action = Action.END_CONNECTION,
) -> list[Rule[Node | MdNode, Trigger]]:
    return [
        _move(
            trigger,
            source,
            Node.STOPPED,
            "no attempts left",
            guard=Guard.RETRY_BUDGET_EXHAUSTED,
            action=action,
        ),
        _move(trigger, source, Node.BACKOFF, doc, action=action),
        *_rules(trigger, [(_r_others(*source), IGNORE, None, "no connection of this node to end")]),
    ]


def _r_streaming(trigger: Trigger, action: Action, doc: str) -> list[Rule[Node | MdNode, Trigger]]:
    return _rules(
        trigger,
        [
            (_R_STREAMING, HANDLE, action, doc),
            (_r_others(*_R_STREAMING), IGNORE, None, "no subscription on this connection"),
        ],
    )


_R_SYNC = (Node.SYNC_SENT, Node.SYNC_COLLECTING)

_REPLAY_RULES: list[Rule[Node | MdNode, Trigger]] = [
    _move(Trigger.START, _r(Node.DISCONNECTED), Node.CONNECTING, "application opened"),
    *_rules(Trigger.START, [(_r_others(Node.DISCONNECTED), IGNORE, None, "already started")]),
    _move(
        Trigger.OPENED,
        _r(Node.CONNECTING),
        Node.AUTHENTICATING,
        "'o' received",
        action=Action.SEND_AUTHORIZE,
    ),
    *_rules(
        Trigger.OPENED,
        [
            (_r_others(Node.CONNECTING, *_R_UNCONNECTED), MALFORMED, None, "a second 'o'"),
            (_R_UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    _move(
        Trigger.AUTHORIZED,
        _r(Node.AUTHENTICATING),
        MdNode.RESTORING,
        "authorize s=200: check the replay session, start its clock, restore subscriptions",
        action=Action.SEND_REQUESTS,
    ),
    *_rules(
        Trigger.AUTHORIZED,
        [
            (_r_others(Node.AUTHENTICATING, *_R_UNCONNECTED), MALFORMED, None, "not awaited"),
            (_R_UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    _move(
        Trigger.AUTH_REJECTED,
        _r(Node.AUTHENTICATING),
        Node.STOPPED,
        "no token could help",
        guard=Guard.TOKEN_HOPELESS,
        action=Action.REJECT_TOKEN,
    ),
    *_r_ending(
        Trigger.AUTH_REJECTED,
        _r(Node.AUTHENTICATING),
        "token refused: get another",
        Action.REJECT_TOKEN,
    ),
    _move(
        Trigger.RESTORED,
        _r(MdNode.RESTORING),
        Node.SYNC_PACED,
        "the clock runs and every subscription is answered: the replay account can sync",
    ),
    *_rules(Trigger.RESTORED, [(_r_others(MdNode.RESTORING), IGNORE, None, "nothing restoring")]),
    _move(
        Trigger.BUDGET_READY,
        _r(Node.SYNC_PACED),
        Node.SYNC_SENT,
        "rate budget free",
        action=Action.SEND_SYNC,
    ),
    *_rules(Trigger.BUDGET_READY, [(_r_others(Node.SYNC_PACED), IGNORE, None, "nothing paced")]),
    _move(
        Trigger.SNAPSHOT,
        _r(Node.SYNC_SENT),
        Node.LIVE,
        "snapshot applied with the events that raced it",
        action=Action.GO_LIVE,
    ),
    *_rules(
        Trigger.SNAPSHOT,
        [
            (_r_others(Node.SYNC_SENT, *_R_UNCONNECTED), MALFORMED, None, "no snapshot awaited"),
            (_R_UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    _move(
        Trigger.SNAPSHOT_PART,
        _r(Node.SYNC_SENT),
        Node.SYNC_COLLECTING,
        "first split part",
        action=Action.COLLECT_PART,
    ),
    *_rules(
        Trigger.SNAPSHOT_PART,
        [
            (_r(Node.SYNC_COLLECTING), HANDLE, Action.COLLECT_PART, "another part"),
            (_r(Node.LIVE), HANDLE, Action.APPLY_LATE_PART, "a part after the quiet period"),
            (
                _r(Node.CONNECTING, Node.AUTHENTICATING, MdNode.RESTORING, Node.SYNC_PACED),
                MALFORMED,
                None,
                "no snapshot awaited",
            ),
            (_R_UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    _move(
        Trigger.PARTS_COMPLETE,
        _r(Node.SYNC_COLLECTING),
        Node.LIVE,
        "split_quiet passed without a part: snapshot assembled and applied",
        action=Action.GO_LIVE,
    ),
    *_rules(Trigger.PARTS_COMPLETE, [(_r_others(Node.SYNC_COLLECTING), IGNORE, None, "no parts")]),
    *_r_ending(Trigger.SYNC_REJECTED, _R_SYNC, "syncrequest refused, penalised or rate limited"),
    *_rules(
        Trigger.PROPS,
        [
            (_r(Node.LIVE), HANDLE, Action.APPLY_PROPS, "applied to the store"),
            (_R_SYNC, HANDLE, Action.BUFFER_PROPS, "races the snapshot: kept, coalesced"),
            (
                _r(Node.CONNECTING, Node.AUTHENTICATING, MdNode.RESTORING, Node.SYNC_PACED),
                IGNORE,
                None,
                "before any syncrequest: nobody asked for it",
            ),
            (_R_UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    *_r_streaming(Trigger.MARKET_DATA, Action.DELIVER, "to each subscription's consumers"),
    *_r_streaming(Trigger.CLOCK, Action.DELIVER, "the replay clock, to its watchers"),
    *_r_streaming(
        Trigger.SUBSCRIPTION_ANSWER, Action.NOTE_ANSWER, "replay, subscription or speed answer"
    ),
    *_r_streaming(Trigger.REQUESTS_DUE, Action.SEND_REQUESTS, "subscribe, unsubscribe, speed"),
    *_r_streaming(Trigger.STALE, Action.RESUBSCRIBE, "re-subscribed once"),
    *_rules(
        Trigger.ANSWER,
        [
            (_r(Node.LIVE), HANDLE, Action.ROUTE_ANSWER, "to the request that waits for it"),
            (_r_others(Node.LIVE), IGNORE, None, "no application request is out"),
        ],
    ),
    *_rules(Trigger.UNREQUESTED, [(REPLAY_NODES, IGNORE, None, "duplicate or unknown answer")]),
    *_rules(
        Trigger.HEARTBEAT,
        [
            (_R_CONNECTED, HANDLE, Action.COUNT_HEARTBEAT, "the server is alive"),
            (_R_UNCONNECTED, IGNORE, None, "stale"),
        ],
    ),
    *_rules(Trigger.PUSH, [(REPLAY_NODES, IGNORE, None, "unknown kinds")]),
    *_rules(
        Trigger.MALFORMED,
        [(_R_CONNECTED, MALFORMED, None, "skipped"), (_R_UNCONNECTED, IGNORE, None, "stale")],
    ),
    *_r_ending(Trigger.CONNECT_FAILED, _R_CONNECTED, "DNS, TLS, refused, rejected upgrade"),
    *_r_ending(Trigger.LOST, _R_CONNECTED, "drop, close, stall or protocol error"),
    *_r_ending(Trigger.SERVER_CLOSING, _R_CONNECTED, "a c[code, reason] frame"),
    *_r_ending(Trigger.SHUTDOWN, _R_CONNECTED, "a shutdown event: wait by its reasonCode"),
    *_r_ending(
        Trigger.TIMED_OUT,
        _r(Node.CONNECTING, Node.AUTHENTICATING, MdNode.RESTORING, Node.SYNC_SENT),
        "no 'o', no authorize answer, replay or subscriptions unanswered, or no snapshot",
    ),
    _move(Trigger.RETRY, _r(Node.BACKOFF), Node.CONNECTING, "backoff delay elapsed"),
    *_rules(Trigger.RETRY, [(_r_others(Node.BACKOFF), IGNORE, None, "not backing off")]),
    _move(
        Trigger.FAIL,
        _r_others(Node.STOPPED),
        Node.STOPPED,
        "unrecoverable: bad credentials, a refused replay",
        action=Action.END_CONNECTION,
    ),
    *_rules(Trigger.FAIL, [(_r(Node.STOPPED), IGNORE, None, "already stopped")]),
    _move(
        Trigger.CLOSE,
        _r_others(Node.STOPPED),
        Node.STOPPED,
        "application closed the engine",
        action=Action.END_CONNECTION,
    ),
    *_rules(Trigger.CLOSE, [(_r(Node.STOPPED), IGNORE, None, "already stopped")]),
]

#: The table of a replay socket: market data, the replay clock and the user sync on one socket.
REPLAY_TABLE: Table[Node | MdNode, Trigger] = Table(
    "replay", REPLAY_NODES, Trigger, Node.DISCONNECTED, [Node.STOPPED], _REPLAY_RULES
)


#: Observers told of every rule :meth:`Statechart.fire` takes, called as
#: ``observer(table, node, trigger, rule)`` with the node the chart was in. Empty, and then
#: costing one truth test per fire, unless a certification run or the test suite's
#: transition-coverage option adds one (``trio_tradovate.certify.coverage``). An observer that
#: raises is logged and otherwise ignored: watching must never change what the engine does.
FIRE_OBSERVERS: list[Callable[[Table[Any, Any], Any, Any, Rule[Any, Any]], None]] = []


def _observe(table: Table[Any, Any], node: object, trigger: object, rule: Rule[Any, Any]) -> None:
    for observer in tuple(FIRE_OBSERVERS):
        try:
            observer(table, node, trigger, rule)
        except Exception:
            logger.exception("a statechart observer failed; ignored")


class Policy(Protocol):
    """Answers the guards of a table, given the event that fired."""

    def check(self, guard: Guard, event: object) -> bool: ...


class _NoPolicy:
    def check(self, guard: Guard, event: object) -> bool:
        return guard in (Guard.SYNC_BUDGET_FREE, Guard.NOTHING_TO_RESTORE)


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One recorded transition, for the audit log and for consumers."""

    seq: int
    time: float
    trigger: str
    source: State
    dest: State
    reason: str
    generation: int
    #: Which socket of a sharded engine (0 for an engine with one socket).
    shard: int = 0
    #: The table's nodes (``syncing.sent`` where ``source`` says ``syncing``).
    source_node: str = ""
    dest_node: str = ""
    #: ``connection`` or ``penalty``.
    region: str = "connection"
    #: UTC wall-clock time (ISO 8601), to line the record up with other logs.
    wall_time: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (states by value)."""
        return {
            "seq": self.seq,
            "time": self.time,
            "wall_time": self.wall_time,
            "region": self.region,
            "trigger": self.trigger,
            "source": self.source.value,
            "dest": self.dest.value,
            "source_node": self.source_node,
            "dest_node": self.dest_node,
            "reason": self.reason,
            "generation": self.generation,
            "shard": self.shard,
        }


@dataclass(frozen=True, slots=True)
class Fired(Generic[N]):
    """What :meth:`Statechart.fire` did: the rule taken, and the record if it moved."""

    rule: Rule[Any, Any]
    record: TransitionRecord | None

    @property
    def outcome(self) -> Outcome:
        return self.rule.outcome

    @property
    def action(self) -> Action | None:
        return self.rule.action


class Statechart(Generic[N, T]):
    """One table running in a plain synchronous ``transitions.Machine``.

    ``clock`` stamps records (the engine passes ``trio.current_time`` so records replay under a
    ``MockClock``); ``wall_clock`` gives the ISO wall-clock stamp; ``on_record`` gets each new
    record after the state changed; ``on_count`` gets the counter name of every ``ignore``
    and ``malformed`` outcome.
    """

    def __init__(
        self,
        table: Table[N, T],
        *,
        clock: Callable[[], float],
        policy: Policy | None = None,
        on_record: Callable[[TransitionRecord], None] | None = None,
        on_count: Callable[[str], None] | None = None,
        wall_clock: Callable[[], str] | None = None,
        shard: int = 0,
        state_of: Callable[[N], State] | None = None,
    ) -> None:
        self.table = table
        self._clock = clock
        self._wall_clock = wall_clock
        self._shard = shard
        self._policy: Policy = policy or _NoPolicy()
        self._on_record = on_record
        self._on_count = on_count
        self._state_of = state_of
        self._seq = 0
        self.node: N = table.initial
        self._pending: tuple[str, int, object] = ("", 0, None)
        self._last: TransitionRecord | None = None
        self._machine = Machine(
            model=self,
            states=list(table.nodes),
            initial=table.initial,
            model_attribute="node",
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
            after_state_change="_record",
        )
        for index, rule in enumerate(table.moves()):
            # One machine trigger per row: the guards were already read by :meth:`fire`,
            # which picks the row, so the machine only moves and records.
            self._machine.add_transition(
                trigger=_machine_trigger(index), source=list(rule.source), dest=rule.dest
            )
        #: The machine trigger of each move row, bound once (the hot path makes no names).
        self._move_of: dict[int, Callable[[], bool]] = {
            id(rule): getattr(self, _machine_trigger(index))
            for index, rule in enumerate(table.moves())
        }

    def fire(
        self, trigger: T, *, reason: str = "", generation: int = 0, event: object = None
    ) -> Fired[N]:
        """Apply ``trigger`` as the table declares; never raises for a declared trigger.

        ``event`` is handed to the guards. For ``ignore`` and ``malformed`` outcomes the
        counter ``ignored.<trigger>`` or ``malformed`` is reported to ``on_count``.
        """
        rules = self.table.cells[(self.node, trigger)]
        first = rules[0]
        if first.outcome is not Outcome.MOVE:
            if FIRE_OBSERVERS:
                _observe(self.table, self.node, trigger, first)
            if first.outcome is Outcome.IGNORE and self._on_count is not None:
                self._on_count(f"ignored.{trigger}")
            elif first.outcome is Outcome.MALFORMED:
                if self._on_count is not None:
                    self._on_count("malformed")
                logger.warning(
                    "%s in %s: a well-behaved server never sends this here (%s); skipped",
                    trigger,
                    self.node.value,
                    reason,
                    extra={
                        "socket": self._shard,
                        "generation": generation,
                        "state": _as_state(self.node).value
                        if isinstance(self.node, Node)
                        else self.node.value,
                    },
                )
            return Fired(first, None)
        for rule in rules:
            if rule.guard is not None and not self._policy.check(rule.guard, event):
                continue
            if FIRE_OBSERVERS:
                _observe(self.table, self.node, trigger, rule)
            self._pending = (reason, generation, trigger)
            self._move_of[id(rule)]()
            return Fired(rule, self._last)
        raise AssertionError("unreachable: the last row of a pair has no guard")  # pragma: no cover

    def outcome_of(self, trigger: T) -> Outcome:
        """The outcome ``trigger`` would have now (without firing it)."""
        return self.table.cells[(self.node, trigger)][0].outcome

    def allowed_triggers(self) -> list[T]:
        """The triggers that would move from the current node."""
        return [
            trigger
            for trigger in self.table.triggers
            if self.table.cells[(self.node, trigger)][0].outcome is Outcome.MOVE
        ]

    def _record(self, event: EventData) -> None:
        source = event.transition.source if event.transition else None
        by_name = {node.name: node for node in self.table.nodes}
        source_node = by_name.get(source, self.node) if isinstance(source, str) else self.node
        reason, generation, trigger = self._pending
        self._seq += 1
        state_of = self._state_of
        record = TransitionRecord(
            seq=self._seq,
            time=self._clock(),
            trigger=str(trigger),
            source=state_of(source_node) if state_of else _as_state(source_node),
            dest=state_of(self.node) if state_of else _as_state(self.node),
            reason=reason,
            generation=generation,
            shard=self._shard,
            source_node=str(source_node.value),
            dest_node=str(self.node.value),
            region=self.table.name,
            wall_time=self._wall_clock() if self._wall_clock else "",
        )
        self._last = record
        logger.info(
            "%s -> %s on %s (generation %d): %s",
            record.source_node,
            record.dest_node,
            record.trigger,
            record.generation,
            record.reason,
            extra={
                "socket": record.shard,
                "generation": record.generation,
                "state": record.dest.value,
                "transition": record.as_dict(),
            },
        )
        if self._on_record is not None:
            self._on_record(record)


def _as_state(node: enum.Enum) -> State:
    if isinstance(node, Node | MdNode):
        return node.state
    raise TypeError(f"{node!r} has no connection state; pass state_of")


def _machine_trigger(index: int) -> str:
    return f"_move_{index}"


# ---------------------------------------------------------------------------------------------
# Diagrams, generated from the tables only (never from a running machine, so they are stable).


def _label(rule: Rule[Any, Any]) -> str:
    label = str(rule.trigger)
    if rule.guard:
        label += f" [{rule.guard}]"
    if rule.action:
        label += f" / {rule.action}"
    return label


def _node_id(node: enum.Enum | None) -> str:
    assert node is not None  # moves always name their dest
    return node.name


def to_mermaid(table: Table[Any, Any] = CONNECTION_TABLE) -> str:
    """A table's moves as a Mermaid ``stateDiagram-v2`` (``syncing`` drawn as a composite)."""
    lines = ["stateDiagram-v2", f"    [*] --> {_node_id(table.initial)}"]
    if table is CONNECTION_TABLE:
        lines.append("    state SYNCING {")
        for node in _SYNCING:
            lines.append(f"        {node.name}: {node.value}")
        lines.append("    }")
    for rule in table.moves():
        for source in rule.source:
            lines.append(f"    {_node_id(source)} --> {_node_id(rule.dest)}: {_label(rule)}")
    for node in table.terminal:
        lines.append(f"    {_node_id(node)} --> [*]")
    return "\n".join(lines) + "\n"


def to_dot(table: Table[Any, Any] = CONNECTION_TABLE) -> str:
    """A table's moves as Graphviz ``dot`` source (no graphviz install needed to produce it)."""
    lines = [
        f"digraph {table.name} {{",
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        '    __start [shape=point, label=""];',
    ]
    if table is CONNECTION_TABLE:
        lines.append('    subgraph cluster_syncing { label="syncing";')
        for node in _SYNCING:
            lines.append(f'        {node.name} [label="{node.value}"];')
        lines.append("    }")
    for node in table.nodes:
        if table is CONNECTION_TABLE and node in _SYNCING:
            continue
        shape = ", peripheries=2" if node in table.terminal else ""
        lines.append(f'    {node.name} [label="{node.value}"{shape}];')
    lines.append(f"    __start -> {_node_id(table.initial)};")
    for rule in table.moves():
        for source in rule.source:
            lines.append(
                f'    {_node_id(source)} -> {_node_id(rule.dest)} [label="{_label(rule)}"];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(table: Table[Any, Any] = CONNECTION_TABLE) -> str:
    """The whole table as JSON: nodes, initial, terminal, and every rule of every outcome."""
    document = {
        "name": table.name,
        "initial": table.initial.value,
        "terminal": [node.value for node in table.terminal],
        "nodes": [node.value for node in table.nodes],
        "triggers": [str(trigger) for trigger in table.triggers],
        "rules": [
            {
                "trigger": str(rule.trigger),
                "source": [node.value for node in rule.source],
                "outcome": rule.outcome.value,
                "dest": rule.dest.value if rule.dest is not None else None,
                "guard": rule.guard,
                "action": rule.action,
                "doc": rule.doc,
            }
            for rule in table.rules
        ],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


_CELL = {Outcome.HANDLE: "handle", Outcome.IGNORE: "ignore", Outcome.MALFORMED: "malformed"}


def matrix(table: Table[Any, Any]) -> list[str]:
    """The node x trigger matrix as Markdown rows: every pair and its declared outcome."""
    nodes = list(table.nodes)
    lines = [
        "| trigger | " + " | ".join(f"`{node.value}`" for node in nodes) + " |",
        "|---|" + "---|" * len(nodes),
    ]
    for trigger in table.triggers:
        cells = []
        for node in nodes:
            rules = table.cells[(node, trigger)]
            if rules[0].outcome is Outcome.MOVE:
                cells.append(
                    " / ".join(
                        f"{rule.dest.value}" + (f" [{rule.guard}]" if rule.guard else "")
                        for rule in rules
                        if rule.dest is not None
                    )
                )
            else:
                cells.append(_CELL[rules[0].outcome])
        lines.append(f"| `{trigger}` | " + " | ".join(cells) + " |")
    return lines


def to_markdown() -> str:
    """``statecharts/README.md``: every table, its matrix and its diagram."""
    lines = [
        "# Statecharts",
        "",
        "Generated by `make diagrams` from `trio_tradovate.statechart` (`CONNECTION_TABLE`,",
        "`MARKET_DATA_TABLE`, `REPLAY_TABLE`, `PENALTY_TABLE`), the tables the engine runs.",
        "Do not edit: a test regenerates these files and fails on any difference.",
        "",
        "Files: `connection.mmd`, `connection.dot`, `connection.json`, `marketdata.mmd`,",
        "`marketdata.dot`, `marketdata.json`, `replay.mmd`, `replay.json` and `penalty.mmd`,",
        "`penalty.json`. Outcomes: a",
        "state name is a recorded move (rows of a cell are tried in order, the first whose",
        "guard holds is taken); `handle` is dealt with in place (no record); `ignore` is",
        "counted as `ignored.<trigger>`; `malformed` is counted as malformed input and logged.",
        "The connection stays up for all three.",
        "",
        "## Connection nodes",
        "",
        "| node | state | meaning |",
        "|---|---|---|",
    ]
    docs = _member_docs(Node)
    md_docs = _member_docs(MdNode)
    for node in Node:
        lines.append(f"| `{node.value}` | `{node.state.value}` | {docs.get(node.name, '')} |")
    lines += [
        "",
        "## Connection: every node x trigger",
        "",
        *matrix(CONNECTION_TABLE),
        "",
        "## Connection: moves",
        "",
        "| trigger | from | to | guard | action | when |",
        "|---|---|---|---|---|---|",
    ]
    for rule in CONNECTION_TABLE.moves():
        lines.append(_move_row(rule))
    lines += [
        "",
        "```mermaid",
        to_mermaid().rstrip("\n"),
        "```",
        "",
        "## Market data (one table per market-data socket)",
        "",
        "| node | state | meaning |",
        "|---|---|---|",
        *[
            f"| `{node.value}` | `{node.state.value}` | {md_docs.get(node.name, '')} |"
            for node in MdNode
        ],
        "",
        *matrix(MARKET_DATA_TABLE),
        "",
        "| trigger | from | to | guard | action | when |",
        "|---|---|---|---|---|---|",
        *[_move_row(rule) for rule in MARKET_DATA_TABLE.moves()],
        "",
        "```mermaid",
        to_mermaid(MARKET_DATA_TABLE).rstrip("\n"),
        "```",
        "",
        "## Replay (market data, the replay clock and the user sync on one socket)",
        "",
        *matrix(REPLAY_TABLE),
        "",
        "| trigger | from | to | guard | action | when |",
        "|---|---|---|---|---|---|",
        *[_move_row(rule) for rule in REPLAY_TABLE.moves()],
        "",
        "```mermaid",
        to_mermaid(REPLAY_TABLE).rstrip("\n"),
        "```",
        "",
        "## Penalty region (one per engine)",
        "",
        *matrix(PENALTY_TABLE),
        "",
        "| trigger | from | to | guard | action | when |",
        "|---|---|---|---|---|---|",
        *[_move_row(rule) for rule in PENALTY_TABLE.moves()],
        "",
        "```mermaid",
        to_mermaid(PENALTY_TABLE).rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)


def _move_row(rule: Rule[Any, Any]) -> str:
    sources = ", ".join(f"`{s.value}`" for s in rule.source)
    guard = f"`{rule.guard}`" if rule.guard else ""
    action = f"`{rule.action}`" if rule.action else ""
    assert rule.dest is not None
    return (
        f"| `{rule.trigger}` | {sources} | `{rule.dest.value}` | {guard} | {action} | {rule.doc} |"
    )


def _member_docs(kind: type[enum.Enum]) -> dict[str, str]:
    """Member descriptions, read from the ``#:`` comments above each member (one source)."""
    import inspect

    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(kind).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif "=" in stripped and pending:
            docs[stripped.split("=")[0].strip()] = " ".join(pending)
            pending = []
    return docs


DIAGRAM_FILES: dict[str, Callable[[], str]] = {
    "connection.mmd": to_mermaid,
    "connection.dot": to_dot,
    "connection.json": to_json,
    "marketdata.mmd": lambda: to_mermaid(MARKET_DATA_TABLE),
    "marketdata.dot": lambda: to_dot(MARKET_DATA_TABLE),
    "marketdata.json": lambda: to_json(MARKET_DATA_TABLE),
    "replay.mmd": lambda: to_mermaid(REPLAY_TABLE),
    "replay.json": lambda: to_json(REPLAY_TABLE),
    "penalty.mmd": lambda: to_mermaid(PENALTY_TABLE),
    "penalty.json": lambda: to_json(PENALTY_TABLE),
    "README.md": to_markdown,
}
