"""The seeded price process of the simulated market, sans-I/O: its invariants over many seeds
and minutes, on tick sizes other than the world's 0.25."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from trio_tradovate.sim import SimConfig
from trio_tradovate.sim._market import Instrument, Market, price

EPOCH = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
CRUDE = Instrument(contract_id=1, name="CLZ6", tick_size=0.01, reference_price=61.37)
NOTE = Instrument(contract_id=2, name="ZNZ6", tick_size=1 / 64, reference_price=112.5)


def market(seed: int, interval: float = 1.0) -> Market:
    return Market(
        seed=seed, instruments=[CRUDE, NOTE], epoch=EPOCH, history_days=1, interval=interval
    )


@pytest.mark.parametrize("seed", range(6))
def test_minute_paths_hold_their_summary(seed: int) -> None:
    m = market(seed, interval=0.5)
    for contract in (1, 2):
        proc = m.process(contract)
        for minute in range(0, 1500, 37):
            summary = proc.minute(minute)
            steps = proc.steps_of(minute)
            prices = [s.price for s in steps]
            assert len(steps) == 120
            assert prices[0] == summary.open
            assert prices[-1] == summary.close
            assert (max(prices), min(prices)) == (summary.high, summary.low)
            assert all(abs(b - a) <= 1 for a, b in itertools.pairwise(prices))
            assert sum(s.size for s in steps) == summary.volume
            assert all(s.size >= 1 and s.ask == s.bid + 1 for s in steps)
            assert all(s.price in (s.bid, s.ask) for s in steps)
            assert proc.minute(minute + 1).open == summary.close  # bars join up


def test_quotes_are_on_each_contracts_own_tick_size() -> None:
    m = market(1)
    g = m.step_at(EPOCH.timestamp())
    for contract, tick in ((1, 0.01), (2, 1 / 64)):
        quote = m.quote(contract, g)
        for entry in quote["entries"].values():
            if "price" in entry:
                ticks = entry["price"] / tick
                assert abs(ticks - round(ticks)) < 1e-6
        spread = quote["entries"]["Offer"]["price"] - quote["entries"]["Bid"]["price"]
        assert spread == pytest.approx(tick)
        assert m.dom(contract, g)["offers"][0]["price"] == quote["entries"]["Offer"]["price"]


def test_same_seed_same_values_regardless_of_what_was_asked_first() -> None:
    first, second = market(4), market(4)
    g = first.step_at(EPOCH.timestamp())
    late = first.quote(1, g)
    first.quote(1, g - 5000)  # asking about the past must not change the future
    second.quote(1, g - 5000)
    assert second.quote(1, g) == late
    assert first.quote(1, g + 100) == second.quote(1, g + 100)
    assert market(5).quote(1, g) != late


def test_prices_are_rounded_to_clean_multiples() -> None:
    assert price(6137, 0.01) == 61.37
    assert price(7200, 1 / 64) == 112.5


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"md_step_interval": 0.7}, "md_step_interval"),
        ({"md_step_interval": 2.0}, "md_step_interval"),
        ({"md_step_interval": 0}, "md_step_interval"),
        ({"md_history_days": -1}, "md_history_days"),
        ({"md_max_elements": 0}, "md_max_elements"),
    ],
)
def test_bad_market_settings_fail_fast(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimConfig(**settings)  # type: ignore[arg-type]
