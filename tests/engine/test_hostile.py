"""Hostile-server property test (issue 8, point 3): seeded scripts, named regressions, soak.

``tests/engine/hostile.py`` explains the harness and the invariants (a) to (g). A failing seed
replays with ``run_script(seed)``; a failing named case replays by running its test.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import trio
import trio.testing

from trio_tradovate.config import WEBSOCKET_LAYERS

from .hostile import (
    CONNECT_ATTEMPTS_PER_MINUTE,
    ConnScript,
    HostileFailure,
    Raw,
    RestAnswer,
    Step,
    answer,
    check_script,
    fixed_script,
    good_path,
    make_script,
    nested_list,
    open_frame,
    props,
    push,
    run_script,
    staying_good,
    wait,
)

QUICK_SEEDS = range(200)
#: The quick profile alternates websocket layers by seed: each layer plays half the seeds, so
#: both stay covered and the profile takes no longer than on one.
QUICK_CASES = [
    pytest.param(seed, WEBSOCKET_LAYERS[seed % 2], id=f"{seed}-{WEBSOCKET_LAYERS[seed % 2]}")
    for seed in QUICK_SEEDS
]
SOAK_SEEDS = range(1_000_000, 1_010_000)

SNAPSHOT: dict[str, Any] = {
    "orders": [
        {"id": 1, "accountId": 7, "ordStatus": "Working"},
        {"id": 2, "accountId": 7, "ordStatus": "Working"},
        {"id": 3, "accountId": 7, "ordStatus": "Filled"},
    ],
    "accounts": [{"id": 7, "name": "hostile"}],
    "accountRiskStatuses": [{"id": 7, "adminAction": "Normal"}],
}


def connection(
    index: int, *steps: Step, live_for: float = 0.0, ending: str = "forever"
) -> ConnScript:
    return ConnScript(index, steps=steps, live_for=live_for, ending=ending, label="named")


# ------------------------------------------------------------------------------- quick profile


@pytest.mark.parametrize(("seed", "layer"), QUICK_CASES)
async def test_hostile_script(
    seed: int, layer: str, autojump_clock: trio.testing.MockClock
) -> None:
    await run_script(seed, layer=layer)


# ---------------------------------------------------------------------------- the harness itself


async def test_a_well_behaved_server_passes(autojump_clock: trio.testing.MockClock) -> None:
    """No false alarms: the good path, props before and after the snapshot, h, a drop."""
    steps = [
        open_frame(),
        wait("authorize"),
        answer("authorize", 200),
        wait("user/syncrequest"),
        props("order", "Updated", {"id": 2, "accountId": 7, "ordStatus": "Filled"}),
        answer("sync", 200, SNAPSHOT),
        props("order", "Deleted", {"id": 1, "accountId": 7}),
        props("order", "Created", [{"id": 4, "qty": 1}, {"id": 5, "qty": 2}]),
        Step("text", "h", 3.0),
    ]
    script = fixed_script("well behaved", [connection(0, *steps, live_for=30, ending="tcp_close")])
    report = await run_script(0, script)
    assert report.attempts >= 2
    assert report.store_checks > 0  # the store invariant really ran


async def test_the_store_invariant_runs_in_most_generated_scripts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    checked = 0
    for seed in QUICK_SEEDS[:30]:
        checked += (await run_script(seed)).store_checks > 0
    assert checked >= 10, checked


def test_a_script_is_a_pure_function_of_its_seed() -> None:
    for seed in (3, 17, 40, 121):
        first = make_script(seed)
        again = make_script(seed)
        assert first.describe(12) == again.describe(12)
        runs = [
            trio.run(check_script, seed, clock=trio.testing.MockClock(autojump_threshold=0))
            for _ in range(2)
        ]
        assert runs[0].message() == runs[1].message()
        assert runs[0].steps == runs[1].steps


# ------------------------------------------------------------- named regressions (issue 8 bullets)


async def test_socket_closed_right_after_upgrade_before_o(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = fixed_script("closed after upgrade", [connection(0, Step("tcp_close"))])
    await run_script(0, script)


async def test_c_frame_before_o(autojump_clock: trio.testing.MockClock) -> None:
    script = fixed_script(
        "c before o", [connection(0, Step("text", 'c[3000,"Go away!"]'), Step("silence"))]
    )
    await run_script(0, script)


async def test_shutdown_before_o(autojump_clock: trio.testing.MockClock) -> None:
    shutdown = push("shutdown", {"reasonCode": "Maintenance", "reason": "before o"})
    script = fixed_script("shutdown before o", [connection(0, shutdown, Step("silence"))])
    await run_script(0, script)


async def test_second_answer_to_authorize(autojump_clock: trio.testing.MockClock) -> None:
    steps = [*good_path(SNAPSHOT), answer("authorize", 200)]
    script = fixed_script("second authorize answer", [connection(0, *steps)])
    await run_script(0, script)


async def test_thousand_deep_json_element_in_a_2kb_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    text, _ = nested_list(1000)
    deep = Step("array", (Raw(text, 1000, "list nested 1000"),))
    assert 2000 <= len("a[" + text + "]") <= 2100
    script = fixed_script("1000-deep element", [connection(0, *good_path(SNAPSHOT), deep)])
    await run_script(0, script)


async def test_second_sync_answer_does_not_resurrect_deleted_orders(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No splitResponses was asked for: a second answer to the syncrequest must not change
    the store (order 1 stays deleted, order 2 stays filled)."""
    steps = [
        *good_path(SNAPSHOT),
        props("order", "Deleted", {"id": 1, "accountId": 7, "ordStatus": "Canceled"}),
        props("order", "Updated", {"id": 2, "accountId": 7, "ordStatus": "Filled"}),
        answer("sync", 200, SNAPSHOT),
        Step("text", "h", 1.0),
    ]
    script = fixed_script("second sync answer", [connection(0, *steps)])
    await run_script(0, script)


async def test_sync_held_back_by_its_budget_is_not_a_sync_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One syncrequest a minute: the second socket's sync waits ~55 s for its budget, which
    must not be reported as ``sync_timeout`` for a request never sent (invariant f)."""
    first = connection(0, *good_path(SNAPSHOT), live_for=2.0, ending="tcp_close")
    second = connection(1, *good_path(SNAPSHOT, sync_wait=90.0))
    script = fixed_script("held-back sync", [first, second], sync_window=(1, 60.0), duration=150)
    await run_script(0, script)


def _sync_then_drop(index: int) -> ConnScript:
    steps = [
        Step("text", "o", 0.01),
        wait("authorize", pause=0.01),
        Step("array", answer("authorize", 200).data, 0.01),
        wait("user/syncrequest", pause=0.01),
        Step("array", answer("sync", 200, SNAPSHOT).data, 0.01),
    ]
    return ConnScript(
        index, steps=tuple(steps), live_for=0.2, ending="tcp_close", label="sync+drop"
    )


async def test_a_server_that_syncs_then_drops_every_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At most CONNECT_ATTEMPTS_PER_MINUTE attempts a minute after the first (invariant e)."""
    script = fixed_script("sync then drop", [], duration=400, fallback=_sync_then_drop)
    report = await run_script(0, script)
    assert report.attempts >= 3


def _always_failing(index: int) -> ConnScript:
    kinds = ["refused", "reset", "reject_404", "reject_500", "partial_101", "silent", "hang"]
    kind = kinds[index % len(kinds)]
    if kind in ("refused", "reset", "hang"):
        return ConnScript(index, connect=kind, label=kind)
    return ConnScript(index, handshake=kind, label=kind)


async def test_every_connection_fails(autojump_clock: trio.testing.MockClock) -> None:
    assert CONNECT_ATTEMPTS_PER_MINUTE == 6
    script = fixed_script("every connection fails", [], duration=600, fallback=_always_failing)
    await run_script(0, script)


@pytest.mark.parametrize(
    "rest",
    [
        RestAnswer("penalty", "-5"),
        RestAnswer("penalty", '"soon"'),
        RestAnswer("penalty", '"NaN"'),
        RestAnswer("penalty", "1" + "0" * 400),
        RestAnswer("expiry", "naive"),
        RestAnswer("expiry", "date_only"),
    ],
    ids=["p-time negative", "p-time text", "p-time NaN", "p-time huge", "no zone", "date only"],
)
async def test_hostile_token_answer(
    rest: RestAnswer, autojump_clock: trio.testing.MockClock
) -> None:
    """A token answer of any shape: a typed error, a retry or a stop by policy, never a raw
    ValueError, TypeError or OverflowError out of open_engine (invariant a)."""
    script = fixed_script(
        f"token answer {rest.describe()}",
        [staying_good(0)],
        rest={"auth/accesstokenrequest": (rest,)},
    )
    await run_script(0, script)


# ------------------------------------------------------------------------------------------ soak


@pytest.mark.soak
def test_soak_hostile_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    """10,000 scripts; prints each failure class with the seeds that show it."""
    classes: Counter[str] = Counter()
    examples: dict[str, list[int]] = {}
    profiles: Counter[str] = Counter()
    started = time.monotonic()
    for seed in SOAK_SEEDS:
        clock = trio.testing.MockClock(autojump_threshold=0)
        report = trio.run(check_script, seed, clock=clock)
        profiles[report.script.profile] += 1
        if not report.ok:
            label = report.failure_class()
            classes[label] += 1
            examples.setdefault(label, []).append(seed)
    elapsed = time.monotonic() - started
    summary = [f"{len(SOAK_SEEDS)} hostile scripts in {elapsed:.0f} s; profiles {dict(profiles)}"]
    for label, count in classes.most_common():
        summary.append(f"  {count:5}  {label}  (seeds {examples[label][:4]})")
    with capsys.disabled():
        print("\n" + "\n".join(summary))
    if classes:
        raise HostileFailure(
            "\n".join(summary) + "\nreplay one with run_script(seed); see tests/engine/hostile.py"
        )
