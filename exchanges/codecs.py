"""Decoding helpers shared by connectors: capped gzip inflation, RFC 3339 timestamps.

A compressed frame is untrusted input: a few kilobytes of gzip can inflate to gigabytes.
Every inflate here stops at a hard cap (`settings.max_inflated_bytes`) instead of trusting
the sender, and raises `ValueError` so the session puts the frame on the DLQ.
"""

from __future__ import annotations

import calendar

import zlib

__all__ = ["inflate_gzip", "rfc3339_epoch"]

_GZIP = 16 + zlib.MAX_WBITS  # wbits for a gzip header and trailer (not raw deflate, not zlib)


def inflate_gzip(data: bytes, cap: int) -> bytes:
    """The decompressed bytes of one gzip member; ValueError if larger than `cap` bytes,
    truncated or corrupt."""
    inflater = zlib.decompressobj(_GZIP)
    try:
        # ask for one byte more than allowed: getting it proves the payload is over the cap
        out = inflater.decompress(data, cap + 1)
    except zlib.error as exc:
        raise ValueError(f"bad gzip data: {exc}") from None
    if len(out) > cap:
        raise ValueError(f"gzip payload inflates beyond {cap} bytes")
    if not inflater.eof:
        raise ValueError("truncated gzip data")
    return out


_SECONDS: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch seconds


def rfc3339_epoch(text: str) -> float:
    """RFC 3339 UTC `2021-04-17T16:43:37.075687Z` -> epoch seconds, without datetime: the
    whole-second part is computed once per second seen, the fraction parsed as it is."""
    head = text[:19]
    seconds = _SECONDS.get(head)
    if seconds is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        seconds = _SECONDS[head] = calendar.timegm((
            int(head[0:4]), int(head[5:7]), int(head[8:10]), int(head[11:13]),
            int(head[14:16]), int(head[17:19])))
    fraction = text[19:].rstrip("Z")
    return seconds + float(fraction) if fraction else float(seconds)
