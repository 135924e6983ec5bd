"""Configuration fails fast, with a message that says what to change."""

from __future__ import annotations

from typing import Any

import pytest

from trio_tradovate import BackoffPolicy, ConfigError, Credentials, EngineConfig, SyncOptions
from trio_tradovate.config import websocket_url_for

TOKEN: dict[str, Any] = {"access_token": "t"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "credentials"),
        ({**TOKEN, "heartbeat_interval": 31}, "heartbeat_interval"),
        ({**TOKEN, "heartbeat_interval": 0}, "heartbeat_interval"),
        ({**TOKEN, "server_silence_timeout": -1}, "server_silence_timeout"),
        ({**TOKEN, "request_timeout": float("nan")}, "request_timeout"),
        ({**TOKEN, "rest_url": "demo.tradovateapi.com"}, "rest_url"),
        ({**TOKEN, "ws_url": "https://x/v1/websocket"}, "ws_url"),
        ({**TOKEN, "event_buffer": 0}, "event_buffer"),
        ({**TOKEN, "sync": {"users": [1]}}, "SyncOptions"),
        ({**TOKEN, "shards": 0}, "shards"),
        ({**TOKEN, "shards": 2, "sync": SyncOptions(users=(1,))}, "users or accounts"),
        ({**TOKEN, "shards": 2, "sync": SyncOptions(sharding=("modAccountId", 2, 0))}, "shards=N"),
        ({**TOKEN, "shards": 2, "shard_by": "modNothing"}, "shard_by"),
        ({**TOKEN, "sync": SyncOptions(entity_types=("order",))}, "entity_types needs accounts"),
        (
            {**TOKEN, "websocket_layer": "wsproto"},
            "websocket_layer must be one of 'websockets', 'trio-websocket', got 'wsproto'",
        ),
    ],
)
def test_bad_settings_fail_fast(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EngineConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": 0}, "initial"),
        ({"factor": 0.5}, "factor"),
        ({"initial": 5, "cap": 1}, "cap"),
        ({"retry_budget": 0}, "retry_budget"),
        ({"stable_after": -1}, "stable_after"),
    ],
)
def test_bad_backoff_fails_fast(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BackoffPolicy(**kwargs)


def test_backoff_ceiling_grows_to_the_cap() -> None:
    policy = BackoffPolicy(initial=1, factor=2, cap=30)
    assert [policy.ceiling(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert policy.ceiling(10_000) == 30


def test_urls() -> None:
    assert websocket_url_for("https://demo.tradovateapi.com/v1") == (
        "wss://demo.tradovateapi.com/v1/websocket"
    )
    assert websocket_url_for("http://127.0.0.1:8080/v1/") == "ws://127.0.0.1:8080/v1/websocket"
    assert EngineConfig(**TOKEN, ws_url="ws://h/x").websocket_url == "ws://h/x"


def test_secrets_stay_out_of_reprs() -> None:
    creds = Credentials("alice", "hunter2", sec="s3cret-value")
    config = EngineConfig(credentials=creds, access_token="tok-123456")
    text = repr(creds) + repr(config)
    for secret in ("hunter2", "s3cret-value", "tok-123456"):
        assert secret not in text
    assert creds.request_body()["sec"] == "s3cret-value"


def test_empty_credentials_say_what_to_set() -> None:
    with pytest.raises(ConfigError, match="TRADOVATE_PASSWORD"):
        Credentials("alice", "")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": (1,), "entity_types": ("order",)}, "users together with entityTypes"),
        ({"users": (1,), "sharding": ("modAccountId", 2, 0)}, "sharding expression"),
        ({"accounts": (1,), "sharding": ("modAccountId", 2, 0)}, "sharding expression"),
        ({"sharding": ("modOrderId", 2, 0)}, "sharding key"),
        ({"sharding": ("modAccountId", 2, 2)}, "remainder"),
        ({"sharding": ("modAccountId", 2)}, "expressionType, divisor, remainder"),
        ({"users": ()}, "non-empty"),
        ({"accounts": (True,)}, "int ids"),
        ({"entity_types": ("",)}, "entity_types"),
        ({"extra": {"users": [1]}}, "extra"),
        ({"split_quiet": 0}, "split_quiet"),
    ],
)
def test_sync_combinations_tradovate_refuses_fail_fast(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SyncOptions(**kwargs)


def test_sync_bodies() -> None:
    assert SyncOptions().body(7) == {"users": [7]}
    assert SyncOptions(accounts=(3,), entity_types=("order",), split_responses=True).body(7) == {
        "accounts": [3],
        "entityTypes": ["order"],
        "splitResponses": True,
    }
    sharded = EngineConfig(**TOKEN, shards=3, sync=SyncOptions(entity_types=("fill",)))
    assert sharded.sync_for_shard(2).body(7) == {
        "entityTypes": ["fill"],
        "shardingExpression": {"expressionType": "modAccountId", "divisor": 3, "remainder": 2},
    }
