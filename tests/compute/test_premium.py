"""The premium and BBO functions against a brute-force computation from raw records.

`reference_premium` and `reference_bbo` recompute everything from the list of trades and
books (dicts shaped like records.Trade / records.OrderBook), with no shared code; the e2e
test uses them too.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from compute import bbo, premium

KOREAN = ("upbit", "bithumb", "coinone", "korbit")


# --- brute force -------------------------------------------------------------------------

def is_book(record: dict[str, Any]) -> bool:
    return "bids" in record


def latest_by_market(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """market -> {"book": newest book, "trade": newest trade} (newest ts_recv; ties: later)."""
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        market = f"{record['exchange']}:{record['symbol']}"
        kind = "book" if is_book(record) else "trade"
        slot = out.setdefault(market, {})
        if kind not in slot or record["ts_recv"] >= slot[kind]["ts_recv"]:
            slot[kind] = record
    return out


def ref_price(entry: dict[str, Any] | None) -> tuple[float, str] | None:
    if not entry:
        return None
    book = entry.get("book")
    if book is not None and book["bids"] and book["asks"]:
        return (book["bids"][0][0] + book["asks"][0][0]) / 2.0, "book"
    if entry.get("trade") is not None:
        return entry["trade"]["price"], "trade"
    return None


def reference_premium(records: list[dict[str, Any]], rate_market: str = "upbit:USDT-KRW",
                      reference: str = "binance") -> dict[str, dict[str, Any]]:
    """asset -> {"rate", "krw": {K: price}, "global": {G: (market, price)},
    "premium": {K: {G: ratio}}, "headline": {K: ratio}} for every asset that has one."""
    latest = latest_by_market(records)
    rate = ref_price(latest.get(rate_market))
    if rate is None:
        return {}
    result: dict[str, dict[str, Any]] = {}
    assets = {m.split(":")[1].split("-")[0] for m in latest}
    for asset in sorted(assets):
        krw, glob = {}, {}
        for market, entry in latest.items():
            exchange, symbol = market.split(":")
            base, quote = symbol.split("-")
            price = ref_price(entry)
            if base != asset or price is None:
                continue
            if exchange in KOREAN and quote == "KRW":
                krw[exchange] = price[0]
        for market, entry in latest.items():
            exchange, symbol = market.split(":")
            base, quote = symbol.split("-")
            price = ref_price(entry)
            if base != asset or price is None or exchange in KOREAN:
                continue
            # USDT first; USD only when the exchange has no priced USDT market of the asset
            if quote == "USDT" or (quote == "USD" and ref_price(
                    latest.get(f"{exchange}:{asset}-USDT")) is None):
                glob[exchange] = (market, price[0])
        if not krw or not glob:
            continue
        table = {k: {g: kp / (gp * rate[0]) for g, (_, gp) in glob.items()}
                 for k, kp in krw.items()}
        result[asset] = {"rate": rate[0], "krw": krw, "global": glob, "premium": table,
                         "headline": {k: row[reference] for k, row in table.items()
                                      if reference in row}}
    return result


def reference_bbo(records: list[dict[str, Any]], max_age: float
                  ) -> dict[str, dict[str, dict[str, Any]]]:
    """asset -> quote currency -> best bid/ask over the books fresh at the asset's clock."""
    clock: dict[str, float] = {}
    for record in records:
        asset = record["symbol"].split("-")[0]
        clock[asset] = max(clock.get(asset, 0.0), record["ts_recv"])
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for market, entry in latest_by_market(records).items():
        book = entry.get("book")
        exchange, symbol = market.split(":")
        asset, quote = symbol.split("-")
        if book is None or clock[asset] - book["ts_recv"] > max_age:
            continue
        if not book["bids"] and not book["asks"]:
            continue
        row = result.setdefault(asset, {}).setdefault(quote, {
            "bid": None, "bid_size": None, "bid_exchange": None,
            "ask": None, "ask_size": None, "ask_exchange": None, "exchanges": []})
        row["exchanges"] = sorted([*row["exchanges"], exchange])
        if book["bids"]:
            price, size = book["bids"][0]
            best = (row["bid"], row["bid_size"], row["bid_exchange"])
            if best[0] is None or (price, size) > (best[0], best[1]) or (
                    (price, size) == (best[0], best[1]) and exchange < best[2]):
                row.update(bid=price, bid_size=size, bid_exchange=exchange)
        if book["asks"]:
            price, size = book["asks"][0]
            best = (row["ask"], row["ask_size"], row["ask_exchange"])
            if best[0] is None or price < best[0] or (price == best[0] and size > best[1]) or (
                    (price, size) == (best[0], best[1]) and exchange < best[2]):
                row.update(ask=price, ask_size=size, ask_exchange=exchange)
    for quotes in result.values():
        for row in quotes.values():
            row["crossed"] = (row["bid"] is not None and row["ask"] is not None
                              and row["bid"] >= row["ask"])
    return result


def assert_close(actual: float, expected: float, rel: float = 1e-9) -> None:
    assert actual == pytest.approx(expected, rel=rel, abs=0.0), (actual, expected)


def assert_premium_matches(value: dict[str, Any] | None, ref: dict[str, Any] | None) -> None:
    """A premium record (table value / topic value) equals the brute-force reference."""
    if ref is None:
        assert value is None
        return
    assert value is not None
    assert_close(value["rate"]["price"], ref["rate"])
    assert {k: leg["price"] for k, leg in value["krw"].items()} == pytest.approx(ref["krw"],
                                                                              rel=1e-9)
    assert {g: (leg["market"], leg["price"]) for g, leg in value["global"].items()} == {
        g: (m, pytest.approx(p, rel=1e-9)) for g, (m, p) in ref["global"].items()}
    assert set(value["premium"]) == set(ref["premium"])
    for k, row in ref["premium"].items():
        assert set(value["premium"][k]) == set(row)
        for g, ratio in row.items():
            assert_close(value["premium"][k][g], ratio)
    assert set(value["headline"]) == set(ref["headline"])
    for k, ratio in ref["headline"].items():
        assert_close(value["headline"][k], ratio)


# --- feeding the functions like the agents do -----------------------------------------------

def to_update(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the rekey agent forwards it (one record per update here)."""
    market = f"{record['exchange']}:{record['symbol']}"
    if is_book(record):
        bids, asks = record["bids"], record["asks"]
        return {"m": market, "b": [bids[0][0] if bids else None, bids[0][1] if bids else None,
                                   asks[0][0] if asks else None, asks[0][1] if asks else None,
                                   record["ts_recv"]]}
    return {"m": market, "t": [record["price"], record["ts_recv"]]}


class Folded:
    """The per-asset state the cross-exchange agent keeps, built by the module's functions."""

    def __init__(self, rate_market: str = "upbit:USDT-KRW") -> None:
        self.rate_market = rate_market
        self.assets: dict[str, dict[str, Any]] = {}
        self.rate: dict[str, Any] = {}

    def apply(self, record: dict[str, Any]) -> str:
        update = to_update(record)
        asset = premium.market_parts(update["m"])[1]
        state = self.assets.setdefault(asset, {"markets": {}, "clock": 0.0})
        if premium.apply_update(state["markets"].setdefault(update["m"], {}), update):
            state["clock"] = max(state["clock"], record["ts_recv"])
        if update["m"] == self.rate_market:
            premium.apply_update(self.rate, update)
        return asset

    def premium(self, asset: str, reference: str = "binance") -> dict[str, Any] | None:
        return premium.compute_premium(asset, self.assets[asset]["markets"], self.rate or None,
                                       self.rate_market, reference)

    def bbo(self, asset: str, max_age: float) -> dict[str, Any] | None:
        state = self.assets[asset]
        return bbo.compute_bbo(asset, state["markets"], state["clock"], max_age)


def book(exchange: str, symbol: str, ts: float, bid: float | None, ask: float | None,
         bid_size: float = 1.0, ask_size: float = 1.0) -> dict[str, Any]:
    return {"exchange": exchange, "symbol": symbol, "ts_event": ts - 0.01, "ts_recv": ts,
            "bids": [[bid, bid_size], [bid - 1.0, 2.0]] if bid is not None else [],
            "asks": [[ask, ask_size], [ask + 1.0, 2.0]] if ask is not None else [],
            "sequence": None}


def trade(exchange: str, symbol: str, ts: float, price: float) -> dict[str, Any]:
    return {"exchange": exchange, "symbol": symbol, "ts_event": ts - 0.01, "ts_recv": ts,
            "price": price, "amount": 0.5, "side": 1, "trade_id": f"{exchange}{ts}"}


MARKETS = {
    # market: reference price
    "upbit:BTC-KRW": 80_000_000.0, "bithumb:BTC-KRW": 80_100_000.0,
    "coinone:BTC-KRW": 79_900_000.0, "upbit:ETH-KRW": 4_000_000.0,
    "bithumb:ETH-KRW": 4_010_000.0, "upbit:USDT-KRW": 1_370.0, "bithumb:USDT-KRW": 1_372.0,
    "binance:BTC-USDT": 57_000.0, "binance:ETH-USDT": 2_900.0, "okx:BTC-USDT": 57_010.0,
    "coinbase:BTC-USD": 56_990.0, "coinbase:BTC-USDT": 57_005.0, "kraken:BTC-USD": 56_980.0,
    "kraken:ETH-USD": 2_899.0, "binance:XRP-USDT": 0.5, "upbit:BTC-USDT": 57_100.0,
}


def random_records(seed: int, n: int = 600) -> list[dict[str, Any]]:
    """Books and trades of MARKETS with strictly increasing receive times, some one-sided."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    ts = 1_700_000_000.0
    for _ in range(n):
        market = rng.choice(list(MARKETS))
        exchange, symbol = market.split(":")
        mid = MARKETS[market] * (1.0 + rng.uniform(-0.01, 0.01))
        tick = MARKETS[market] * 0.0003
        ts += rng.uniform(0.001, 2.0)
        if rng.random() < 0.6:
            side = rng.random()
            bid = None if side < 0.05 else round(mid - tick, 6)
            ask = None if 0.05 <= side < 0.1 else round(mid + tick, 6)
            records.append(book(exchange, symbol, ts, bid, ask, rng.choice([0.5, 1.0, 2.0]),
                                rng.choice([0.5, 1.0, 2.0])))
        else:
            records.append(trade(exchange, symbol, ts, round(mid, 6)))
    return records


# --- tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_premium_equals_brute_force(seed: int) -> None:
    records = random_records(seed)
    folded = Folded()
    checked = 0
    for i, record in enumerate(records):
        folded.apply(record)
        if i % 7 and i != len(records) - 1:
            continue
        expected = reference_premium(records[: i + 1])
        for asset in folded.assets:
            value = folded.premium(asset)
            assert_premium_matches(value, expected.get(asset))
            checked += value is not None
    assert checked > 100
    final = reference_premium(records)
    assert set(final) == {"BTC", "ETH"}  # XRP: no KRW market; USDT: no global market
    assert set(final["BTC"]["krw"]) == {"upbit", "bithumb", "coinone"}
    assert set(final["BTC"]["global"]) == {"binance", "okx", "coinbase", "kraken"}


@pytest.mark.parametrize("seed", [4, 5])
def test_bbo_equals_brute_force(seed: int) -> None:
    records = random_records(seed)
    folded = Folded()
    stale_seen = 0
    for i, record in enumerate(records):
        folded.apply(record)
        if i % 5:
            continue
        expected = reference_bbo(records[: i + 1], max_age=30.0)
        for asset in folded.assets:
            value = folded.bbo(asset, 30.0)
            if asset not in expected:
                assert value is None
                continue
            assert value["quotes"] == expected[asset], (i, asset)
            books = sum(1 for m, q in folded.assets[asset]["markets"].items() if "book_ts" in q)
            stale_seen += books > sum(len(r["exchanges"]) for r in value["quotes"].values())
    assert stale_seen > 0  # the random walk leaves some books stale at times


def test_redelivered_and_older_updates_change_nothing() -> None:
    records = random_records(7, n=200)
    once, twice = Folded(), Folded()
    for record in records:
        once.apply(record)
    rng = random.Random(7)
    for record in records:
        twice.apply(record)
        twice.apply(rng.choice(records[: records.index(record) + 1]))  # an old one again
    assert once.assets == twice.assets and once.rate == twice.rate


def test_rate_missing_then_from_trade_then_from_book() -> None:
    folded = Folded()
    folded.apply(book("upbit", "BTC-KRW", 1.0, 79_000_000.0, 79_000_100.0))
    folded.apply(book("binance", "BTC-USDT", 2.0, 57_000.0, 57_001.0))
    folded.apply(trade("bithumb", "USDT-KRW", 2.5, 1_400.0))  # not the rate market
    assert folded.premium("BTC") is None
    folded.apply(trade("upbit", "USDT-KRW", 3.0, 1_380.0))
    value = folded.premium("BTC")
    assert value["rate"] == {"market": "upbit:USDT-KRW", "price": 1_380.0, "source": "trade"}
    assert_close(value["premium"]["upbit"]["binance"], 79_000_050.0 / (57_000.5 * 1_380.0))
    folded.apply(book("upbit", "USDT-KRW", 4.0, 1_381.0, 1_382.0))
    value = folded.premium("BTC")
    assert value["rate"]["source"] == "book" and value["rate"]["price"] == 1_381.5
    assert_close(value["headline"]["upbit"], 79_000_050.0 / (57_000.5 * 1_381.5))
    assert value["ts"] == 4.0


def test_configurable_rate_market_and_reference() -> None:
    folded = Folded(rate_market="bithumb:USDT-KRW")
    folded.apply(trade("upbit", "BTC-KRW", 1.0, 80_000_000.0))
    folded.apply(trade("okx", "BTC-USDT", 2.0, 57_000.0))
    folded.apply(trade("upbit", "USDT-KRW", 3.0, 1_300.0))
    assert folded.premium("BTC") is None
    folded.apply(trade("bithumb", "USDT-KRW", 4.0, 1_400.0))
    value = folded.premium("BTC")
    assert_close(value["premium"]["upbit"]["okx"], 80_000_000.0 / (57_000.0 * 1_400.0))
    assert value["headline"] == {}  # binance, the default reference, has no BTC market
    assert folded.premium("BTC", reference="okx")["headline"] == {
        "upbit": value["premium"]["upbit"]["okx"]}


def test_usd_and_usdt_markets() -> None:
    folded = Folded()
    folded.apply(trade("upbit", "USDT-KRW", 0.5, 1_400.0))
    folded.apply(trade("upbit", "BTC-KRW", 1.0, 80_000_000.0))
    folded.apply(trade("kraken", "BTC-USD", 1.0, 56_000.0))  # USD only: counts as USDT
    folded.apply(trade("coinbase", "BTC-USD", 1.0, 56_100.0))
    folded.apply(book("coinbase", "BTC-USDT", 1.5, 57_000.0, None))  # one-sided, no trade
    value = folded.premium("BTC")
    assert value["global"]["kraken"]["market"] == "kraken:BTC-USD"
    assert value["global"]["coinbase"]["market"] == "coinbase:BTC-USD"  # USDT has no price
    folded.apply(trade("coinbase", "BTC-USDT", 2.0, 57_100.0))
    value = folded.premium("BTC")
    assert value["global"]["coinbase"] == {"market": "coinbase:BTC-USDT", "price": 57_100.0,
                                           "source": "trade"}
    assert_close(value["premium"]["upbit"]["coinbase"], 80_000_000.0 / (57_100.0 * 1_400.0))
    assert_close(value["premium"]["upbit"]["kraken"], 80_000_000.0 / (56_000.0 * 1_400.0))
    # a KRW market on a global exchange, or a USDT market on a Korean one, is no leg
    folded.apply(trade("upbit", "BTC-USDT", 3.0, 58_000.0))
    assert set(folded.premium("BTC")["global"]) == {"kraken", "coinbase"}


def test_several_korean_exchanges() -> None:
    folded = Folded()
    folded.apply(book("upbit", "USDT-KRW", 0.1, 1_399.0, 1_401.0))
    for i, (exchange, price) in enumerate([("upbit", 81e6), ("bithumb", 80.5e6),
                                           ("coinone", 80.7e6), ("korbit", 80.9e6)]):
        folded.apply(trade(exchange, "BTC-KRW", 1.0 + i, price))
    folded.apply(book("binance", "BTC-USDT", 5.0, 57_000.0, 57_002.0))
    folded.apply(book("okx", "BTC-USDT", 5.0, 57_010.0, 57_012.0))
    value = folded.premium("BTC")
    assert list(value["premium"]) == ["bithumb", "coinone", "korbit", "upbit"]
    for exchange, price in [("upbit", 81e6), ("bithumb", 80.5e6), ("korbit", 80.9e6)]:
        assert_close(value["headline"][exchange], price / (57_001.0 * 1_400.0))
        assert_close(value["premium"][exchange]["okx"], price / (57_011.0 * 1_400.0))


def test_bbo_stale_books_and_ties() -> None:
    folded = Folded()
    folded.apply(book("upbit", "BTC-KRW", 100.0, 80_000_000.0, 80_010_000.0, 1.0, 1.0))
    folded.apply(book("bithumb", "BTC-KRW", 110.0, 80_000_000.0, 80_020_000.0, 2.0, 1.0))
    folded.apply(book("coinone", "BTC-KRW", 120.0, 80_005_000.0, 80_010_000.0, 1.0, 1.0))
    folded.apply(book("binance", "BTC-USDT", 125.0, 57_000.0, 57_001.0))
    row = folded.bbo("BTC", 30.0)["quotes"]["KRW"]
    assert (row["bid"], row["bid_exchange"]) == (80_005_000.0, "coinone")
    assert (row["ask"], row["ask_exchange"]) == (80_010_000.0, "coinone")  # tie: name order
    assert row["exchanges"] == ["bithumb", "coinone", "upbit"] and not row["crossed"]
    assert folded.bbo("BTC", 30.0)["quotes"]["USDT"]["bid_exchange"] == "binance"
    # a trade moves the asset's clock: upbit (100) is then more than 30 s old
    folded.apply(trade("binance", "BTC-USDT", 131.0, 57_000.0))
    row = folded.bbo("BTC", 30.0)["quotes"]["KRW"]
    assert row["exchanges"] == ["bithumb", "coinone"]
    assert (row["ask"], row["ask_exchange"]) == (80_010_000.0, "coinone")
    folded.apply(book("coinone", "BTC-KRW", 150.0, 80_030_000.0, 80_040_000.0))
    row = folded.bbo("BTC", 30.0)["quotes"]["KRW"]
    assert row["exchanges"] == ["coinone"]  # bithumb (110) is stale at 150
    folded.apply(book("bithumb", "BTC-KRW", 151.0, 80_050_000.0, 80_060_000.0, 3.0, 1.0))
    row = folded.bbo("BTC", 30.0)["quotes"]["KRW"]
    assert (row["bid"], row["bid_size"], row["bid_exchange"]) == (80_050_000.0, 3.0, "bithumb")
    assert (row["ask"], row["ask_exchange"]) == (80_040_000.0, "coinone")
    assert row["crossed"]
    # equal price: the larger size wins
    folded.apply(book("upbit", "BTC-KRW", 156.0, 80_050_000.0, 80_040_000.0, 5.0, 9.0))
    row = folded.bbo("BTC", 30.0)["quotes"]["KRW"]
    assert (row["bid_exchange"], row["ask_exchange"], row["ask_size"]) == ("upbit", "upbit", 9.0)
    # the USDT book of 125 is stale at 156 and leave the BBO
    assert set(folded.bbo("BTC", 30.0)["quotes"]) == {"KRW"}


def test_change_detection_ignores_ts() -> None:
    folded = Folded()
    folded.apply(trade("upbit", "USDT-KRW", 0.5, 1_400.0))
    folded.apply(trade("upbit", "BTC-KRW", 1.0, 80_000_000.0))
    folded.apply(book("binance", "BTC-USDT", 2.0, 57_000.0, 57_002.0))
    before = folded.premium("BTC")
    folded.apply(book("binance", "BTC-USDT", 3.0, 57_000.0, 57_002.0, bid_size=7.0))
    after = folded.premium("BTC")
    assert after["ts"] == 3.0 and before["ts"] == 2.0
    assert not premium.premium_changed(before, after)
    folded.apply(book("binance", "BTC-USDT", 4.0, 57_000.0, 57_004.0))
    assert premium.premium_changed(before, folded.premium("BTC"))
    assert premium.premium_changed(None, before) and not premium.premium_changed(None, None)
    b1 = folded.bbo("BTC", 30.0)
    folded.apply(trade("upbit", "BTC-KRW", 5.0, 80_000_000.0))
    assert not bbo.bbo_changed(b1, folded.bbo("BTC", 30.0))
