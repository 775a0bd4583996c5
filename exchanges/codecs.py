"""Frame decoders shared by connectors whose exchanges compress what they send.

A compressed frame is untrusted input: a few kilobytes of gzip can inflate to gigabytes.
Every inflate here stops at a hard cap (`settings.max_inflated_bytes`) instead of trusting
the sender, and raises `ValueError` so the session puts the frame on the DLQ.
"""

from __future__ import annotations

import zlib

__all__ = ["inflate_gzip"]

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
