"""Coinbase's typed book messages (exchanges/coinbase_messages.py) answer as the untyped path.

The lax decoder reads a price or size text as a float in C: it must be `float(text)` on every
value the feed sends (the recording's, and many random digit strings: exponents, leading
zeros, long mantissas, halfway cases). What it refuses, or reads as a value no level may
have, goes to the untyped path (orjson, `float(text)`), so a bad frame is refused exactly as
before: the same exception and message, the same book dropped. And the whole recording,
typed, publishes exactly what the untyped path publishes.
"""

from __future__ import annotations

import json
import math
import random
from decimal import Decimal, getcontext
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from config.settings import load_settings
from exchanges.codecs import rfc3339_epoch
from exchanges.coinbase import Coinbase
from exchanges.coinbase_messages import Update, decode_message
from exchanges.publisher import Publisher
from replay.recordings import load_recordings
from tests.support import SentMessages


@pytest.fixture(scope="module")
def frames(replays: Path) -> list[tuple[float, str]]:
    return list(load_recordings(replays)["coinbase"].connections[0].received)


def same_float(a: float, b: float) -> bool:
    return (a == b and math.copysign(1.0, a) == math.copysign(1.0, b)) or (a != a and b != b)


def test_every_recorded_price_and_size_decodes_as_float_of_its_text(
        frames: list[tuple[float, str]]) -> None:
    checked = 0
    for _, frame in frames:
        raw = orjson.loads(frame)
        if raw["type"] != "l2update":
            continue
        message = decode_message(frame)
        assert isinstance(message, Update)
        for (side, price, size), (t_side, t_price, t_size) in zip(
                message.changes, raw["changes"], strict=True):
            assert side == t_side
            assert same_float(price, float(t_price)) and same_float(size, float(t_size))
            checked += 2
    # and the snapshots' levels (typed the same way; the connector keeps them untyped)
    decode_levels = msgspec.json.Decoder(list[tuple[float, float]], strict=False).decode
    for _, frame in frames:
        raw = orjson.loads(frame)
        if raw["type"] == "snapshot":
            for side in ("bids", "asks"):
                typed = decode_levels(orjson.dumps(raw[side]))
                for (price, size), (t_price, t_size) in zip(typed, raw[side], strict=True):
                    assert same_float(price, float(t_price)) and same_float(size, float(t_size))
                    checked += 2
    assert checked > 20_000


def random_number_text(rng: random.Random) -> str:
    kind = rng.randrange(4)
    sign = "-" if rng.random() < 0.2 else ""
    if kind == 0:  # plain decimals, leading zeros, long mantissas
        whole = str(rng.randrange(10 ** rng.randrange(1, 25)))
        if rng.random() < 0.2:
            whole = "0" * rng.randrange(1, 4) + whole
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 30)))
        return sign + whole + ("." + digits if digits else "")
    if kind == 1:  # any double, shortest and long forms
        x = abs(rng.uniform(-1, 1) * 10 ** rng.randrange(-300, 300))
        return sign + (repr(x) if rng.random() < 0.5 else f"{x:.{rng.randrange(40)}e}")
    if kind == 2:  # halfway between two doubles, and just off it
        x = rng.uniform(0.5, 2.0) * 2.0 ** rng.randrange(-1000, 1000)
        getcontext().prec = 800
        middle = (Decimal(x) + Decimal(math.nextafter(x, math.inf))) / 2
        text = format(middle, "e")
        return sign + (text if rng.random() < 0.5 else text.replace("e", rng.choice("01") + "e"))
    mantissa = "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 60)))
    point = rng.randrange(len(mantissa) + 1)
    mantissa = (mantissa[:point] or "0") + "." + (mantissa[point:] or "0")
    return sign + mantissa + rng.choice(["e", "E", "e-", "e+", "E-"]) + str(rng.randrange(400))


def test_random_number_texts_decode_as_float_or_are_refused() -> None:
    """msgspec reads a text as float() does, or refuses it (then the untyped path reads it):
    never another number. The one difference, "-0" read as 0.0, is a price no level may
    have (refused either way) or a size that removes a level either way."""
    rng = random.Random(12)
    decode = msgspec.json.Decoder(list[float], strict=False).decode
    compared = 0
    for _ in range(100_000):
        text = random_number_text(rng)
        try:
            [value] = decode(json.dumps([text]))
        except msgspec.ValidationError:
            continue  # the untyped path parses it
        compared += 1
        if text == "-0":
            assert value == 0.0  # the sign aside (see above)
            continue
        assert same_float(value, float(text)), text
    assert compared > 80_000
    assert decode('["-0"]') == [0.0] and float("-0") == -0.0


def connector() -> Coinbase:
    subs = {s: {"book", "trades", "ticker"} for s in ("BTC-USD", "ETH-USD")}
    out = Coinbase(subs, Publisher("coinbase"), load_settings({}))
    out.session = SentMessages()  # type: ignore[assignment]
    return out


def outcome(typed: bool, frames: list[str]) -> list[Any]:
    """What each frame did on a fresh connector: its records, or the exception it raised,
    and the books after it. `typed=False` parses every frame the untyped way."""
    coinbase = connector()
    [stream] = coinbase.connections()
    results: list[Any] = []
    for frame in frames:
        mark = len(coinbase.out.pending)
        try:
            if typed:
                coinbase.on_frame(frame, 1.0, stream)
            else:
                coinbase.on_message(orjson.loads(frame), 1.0, stream)
            result: Any = [(r[0], r[1], r[2]) for r in coinbase.out.pending[mark:]
                           if r[0] != "ws.error"]
        except Exception as exc:  # noqa: BLE001 - the DLQ path: compared by type and text
            result = (type(exc).__name__, str(exc), getattr(exc, "reason", None),
                      getattr(exc, "book", None) is not None)
        books = {s: (b.ready, b.top_bids(50), b.top_asks(50)) for s, b in coinbase.books.items()}
        results.append((result, books))
    return results


SNAPSHOT = {"type": "snapshot", "product_id": "BTC-USD", "bids": [["100.5", "1.25"], ["99", "2"]],
            "asks": [["101", "0.5"], ["102.25", "3"]]}
UPDATE = {"type": "l2update", "product_id": "BTC-USD", "changes": [["buy", "100.75", "1"]],
          "time": "2021-04-17T16:43:42.214623Z"}
BAD_TEXTS = ["true", "", "nan", "NaN", "inf", "-inf", "Infinity", "1e999", "1e400", "-1", "0",
             "-0", "0.0", "abc", " 1.5", "1_0", "+1", ".5", "5.", "0x10", "1.7976931348623159e308"]
BAD_JSON = [True, None, -1, 0, -0.0, 1e308, 2 ** 70, [], {}, 1.5]


def with_value(message: dict, path: tuple, value: Any) -> str:
    document = json.loads(json.dumps(message))
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(document)


@pytest.mark.parametrize("value", BAD_TEXTS + BAD_JSON)
def test_a_bad_value_is_refused_as_by_the_untyped_path(value: Any) -> None:
    number = type(value) in (int, float)
    for path in (("changes", 0, 1), ("changes", 0, 2), ("changes", 0, 0), ("time",),
                 ("product_id",), ("bids", 1, 0), ("bids", 0, 1), ("asks", 1, 1),
                 ("asks", 0, 0)):
        message = UPDATE if path[0] in ("changes", "time") else SNAPSHOT
        frames = [json.dumps(SNAPSHOT), json.dumps(UPDATE), with_value(message, path, value),
                  json.dumps(UPDATE)]
        typed = outcome(True, frames)
        level = path[0] in ("bids", "asks") or path[0] == "changes" and path[2] != 0
        if number and level and isinstance(typed[2][0], list):
            # a JSON number for a level's text, accepted: read as the number its text names
            # (as the untyped path does when pure; compiled, it refused it with a TypeError)
            frames[2] = with_value(message, path, str(value))
        assert typed == outcome(False, frames), (path, value)


def test_frames_off_the_typed_shape_are_parsed_as_before() -> None:
    """A book message with a field more, a level of three values, a key twice, a change
    after a bad one: each goes where the untyped path sends it."""
    update = json.dumps(UPDATE)
    frames = [json.dumps(SNAPSHOT), update,
              update[:-1] + ',"sequence":1e400}',  # an unknown field orjson refuses
              update[:-1] + ',"sequence":5}',  # an unknown field: parsed untyped, applied
              update.replace('"changes"', '"changes":5,"changes"'),  # the last key counts
              with_value(UPDATE, ("changes",), [["sell", "101", "0"], ["buy", "nan", "1"]]),
              json.dumps(SNAPSHOT), with_value(UPDATE, ("changes",), [["sell", "7", "1", "x"]]),
              with_value(SNAPSHOT, ("bids",), [["100", "1", "x"]]),
              with_value(UPDATE, ("changes",), [["sell", "101", "-0"], ["buy", "100", "0"]]),
              '{"type":"l2update",' + "[" * 1000 + "]" * 1000 + "}", "not json", "[]"]
    assert outcome(True, frames) == outcome(False, frames)


def test_the_recording_publishes_the_same_typed_and_untyped(
        frames: list[tuple[float, str]]) -> None:
    def run(typed: bool) -> list[Any]:
        subs: dict[str, set[str]] = {}
        for _, frame in frames:
            product = orjson.loads(frame).get("product_id")
            if product:
                subs[product] = {"book", "trades", "ticker"}
        coinbase = Coinbase(subs, Publisher("coinbase"), load_settings({}))
        coinbase.session = SentMessages()  # type: ignore[assignment]
        [stream] = coinbase.connections()
        for ts, frame in frames:
            if typed:
                coinbase.on_frame(frame, ts, stream)
            else:
                coinbase.on_message(orjson.loads(frame), ts, stream)
        return [(topic, key, orjson.dumps(value)) for topic, key, value, _, _ in
                coinbase.out.pending]

    typed = run(True)
    assert len(typed) > 2_000 and typed == run(False)


def test_exchange_time_is_rfc3339_epoch(frames: list[tuple[float, str]]) -> None:
    """The whole second remembered between messages changes nothing: the same float, or the
    same error, as `rfc3339_epoch` for every form."""
    coinbase = connector()
    texts = [orjson.loads(f).get("time") for _, f in frames]
    texts = [t for t in texts if t]
    odd = ["2021-04-17T16:43:42Z", "2021-04-17T16:43:42.2Z", "2021-04-17T16:43:42.214623ZZ",
           "2021-04-17T16:43:42.21462ZZ", "2021-04-17T16:43:42.214623", "2021-04-17T16:43:42",
           "2021-04-17T16:43:42.2146231Z", "2021-04-17T16:43:42.21_623Z", "2021-04-17T16:43:42.x",
           "2021-04-17T16:43:4", "", "2021-04-17T16:43:42+00:00", "2021-04-17T16:43:42.-14623Z",
           "2021-04-17T16:43:43.000001Z", "1970-01-01T00:00:00.500000Z", "2021-04-17T16:43:42"
           ".1e-10Z", "2021-04-17T16:43:42.inf00Z", "2021-04-17T16:43:42.nan00Z"]
    rng = random.Random(7)
    for text in texts + [t for o in odd for t in (o, texts[0], o, o)] + rng.sample(texts, 500):
        def answer(parse: Any, text: str = text) -> Any:
            try:
                return parse(text)
            except Exception as exc:  # noqa: BLE001 - compared by type and text
                return (type(exc).__name__, str(exc))
        want, got = answer(rfc3339_epoch), answer(coinbase.exchange_time)
        assert got == want or (got != got and want != want), text
