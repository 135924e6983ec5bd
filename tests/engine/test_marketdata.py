"""Market-data parsers: md, chart and clock pushes into typed frozen values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import orjson
import pytest

from trio_tradovate.errors import RemoteProtocolError
from trio_tradovate.marketdata import (
    ENTRY_KINDS,
    Dom,
    Histogram,
    Quote,
    parse_chart,
    parse_clock,
    parse_md,
)

T0 = "2026-12-07T14:30:00.000Z"


def test_quote_keeps_every_entries_kind() -> None:
    entries = {kind: {"price": 100.0 + i, "size": float(i)} for i, kind in enumerate(ENTRY_KINDS)}
    entries["EmptyBook"] = {}
    entries["SomethingNew"] = {"size": 3}
    [quote], errors = parse_md({"quotes": [{"contractId": 7, "timestamp": T0, "entries": entries}]})
    assert errors == []
    assert isinstance(quote, Quote)
    assert set(quote.entries) == set(ENTRY_KINDS) | {"SomethingNew"}
    assert quote.bid is not None
    assert quote.bid.price == 100.0
    assert quote.offer is not None
    assert quote.offer.size == 1.0
    assert quote.entries["EmptyBook"].price is None
    assert quote.entries["SomethingNew"].size == 3.0
    assert quote.timestamp == datetime(2026, 12, 7, 14, 30, tzinfo=UTC)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quote.contract_id = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        quote.entries["Bid"] = quote.entries["Offer"]  # type: ignore[index]


def test_dom_and_histogram() -> None:
    dom = {
        "contractId": 7,
        "timestamp": T0,
        "bids": [{"price": 99.75, "size": 10}, {"price": 99.5, "size": 4}],
        "offers": [{"price": 100.0, "size": 2}],
    }
    hist = {
        "contractId": 7,
        "timestamp": T0,
        "tradeDate": {"year": 2026, "month": 12, "day": 7},
        "base": 100.0,
        "items": {"-2": 5, "0": 12.5, "3": 1},
        "refresh": True,
    }
    values, errors = parse_md({"doms": [dom], "histograms": [hist]})
    assert errors == []
    parsed_dom, parsed_hist = values
    assert isinstance(parsed_dom, Dom)
    assert isinstance(parsed_hist, Histogram)
    assert [level.price for level in parsed_dom.bids] == [99.75, 99.5]
    assert parsed_dom.offers[0].size == 2.0
    assert dict(parsed_hist.items) == {-2: 5.0, 0: 12.5, 3: 1.0}
    assert parsed_hist.trade_date == "2026-12-07"
    assert parsed_hist.refresh


def test_one_bad_element_keeps_the_good_ones() -> None:
    good = {"contractId": 7, "timestamp": T0, "entries": {}}
    values, errors = parse_md({"quotes": [good, {"contractId": "x"}, 5, good]})
    assert len(values) == 2
    assert len(errors) == 2
    assert all(isinstance(e, RemoteProtocolError) for e in errors)


@pytest.mark.parametrize(
    "data",
    [None, [], "md", {}, {"quotes": 3}, {"doms": [{"contractId": 1, "timestamp": "nope"}]}],
)
def test_malformed_md_payloads_are_errors_not_crashes(data: object) -> None:
    values, errors = parse_md(data)
    assert values == []
    assert errors


def test_tick_chart_rebuilt_from_compact_form() -> None:
    # EX-11's compact form: prices relative to bp in ticks, times relative to bt in ms.
    packet = {
        "id": 31,
        "s": "db",
        "td": 20261207,
        "bp": 18000,  # 4500.00 at a 0.25 tick size
        "bt": 1_796_000_000_000,
        "ts": 0.25,
        "tks": [
            {"t": 0, "p": 0, "s": 2, "b": -1, "a": 0, "bs": 10, "as": 7, "id": 1001},
            {"t": 250, "p": 3, "s": 1, "b": 2, "a": 3, "id": 1002},
        ],
    }
    [chart], errors = parse_chart({"charts": [packet]})
    assert errors == []
    first, second = chart.ticks
    assert (first.id, first.price, first.bid, first.ask) == (1001, 4500.0, 4499.75, 4500.0)
    assert (first.bid_size, first.ask_size, first.size) == (10.0, 7.0, 2.0)
    assert second.price == 4500.75
    assert (second.timestamp - first.timestamp).total_seconds() == 0.25
    assert first.timestamp == datetime.fromtimestamp(1_796_000_000, UTC)
    assert chart.trade_date == 20261207


def test_bars_and_end_of_history() -> None:
    bar = {
        "timestamp": T0,
        "open": 1,
        "high": 3,
        "low": 0.5,
        "close": 2,
        "upVolume": 10,
        "downVolume": 4,
        "upTicks": 3,
        "downTicks": 2,
        "bidVolume": 5,
        "offerVolume": 9,
    }
    packets, errors = parse_chart(
        {"charts": [{"id": 5, "td": 1, "bars": [bar]}, {"id": 5, "eoh": True}]}
    )
    assert errors == []
    bars, eoh = packets
    assert bars.bars[0].close == 2.0
    assert bars.bars[0].offer_volume == 9.0
    assert eoh.eoh
    assert eoh.subscription_id == 5


@pytest.mark.parametrize(
    "chart",
    [
        {"id": "x", "bars": []},
        {"id": 1},
        {"id": 1, "bars": [{"timestamp": T0, "open": "1", "high": 1, "low": 1, "close": 1}]},
        {"id": 1, "bp": 1, "bt": 0, "ts": 0, "tks": []},
        {"id": 1, "bp": 1, "bt": 0, "ts": 0.25, "tks": [{"t": 0, "s": 1, "id": 1}]},
        {"id": 1, "bp": 1, "bt": 10**20, "ts": 0.25, "tks": [{"t": 0, "p": 0, "s": 1, "id": 1}]},
    ],
)
def test_malformed_chart_packets(chart: object) -> None:
    packets, errors = parse_chart({"charts": [chart]})
    assert packets == []
    assert len(errors) == 1


def test_clock_d_is_a_json_string() -> None:
    tick = parse_clock(orjson.dumps({"t": "2019-08-26T16:43:08.599Z", "s": 20}).decode())
    assert tick.speed == 20
    assert not tick.throttled
    assert tick.time.year == 2019
    assert parse_clock('{"t":"2019-08-26T16:43:08.599Z","s":0}').throttled
    assert parse_clock({"t": T0, "s": 1}).speed == 1  # an object is read leniently
    for bad in ["{", '"x"', '{"t": 1, "s": 1}', 7, '{"t":"2019-08-26T16:43:08Z"}']:
        with pytest.raises(RemoteProtocolError):
            parse_clock(bad)
