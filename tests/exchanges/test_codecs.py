"""exchanges.codecs: gzip inflate with a hard cap on the decompressed size."""

from __future__ import annotations

import gzip
import os

import pytest

from exchanges.codecs import inflate_gzip


def test_inflates_a_gzip_member_exactly():
    payload = b'{"ping":1492420473027}' * 50
    assert inflate_gzip(gzip.compress(payload), 10_000) == payload
    assert inflate_gzip(gzip.compress(payload), len(payload)) == payload  # cap is inclusive


def test_refuses_a_payload_over_the_cap_without_inflating_it_all():
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KB
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="beyond 1000 bytes"):
        inflate_gzip(bomb, 1000)
    payload = os.urandom(2000)
    with pytest.raises(ValueError, match="beyond 1999 bytes"):
        inflate_gzip(gzip.compress(payload), len(payload) - 1)


def test_truncated_and_corrupt_input_raise_value_error():
    data = gzip.compress(b'{"ch":"market.btcusdt.trade.detail"}' * 20)
    with pytest.raises(ValueError, match="truncated"):
        inflate_gzip(data[: len(data) // 2], 10_000)
    with pytest.raises(ValueError, match="bad gzip"):
        inflate_gzip(b"not gzip at all", 10_000)
    with pytest.raises(ValueError, match="bad gzip"):
        inflate_gzip(b'{"ping":1}', 10_000)  # plain JSON is not accepted as gzip
