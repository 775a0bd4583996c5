"""Value checks for what the venues send: a price or size is used only when it means something.

Checked where a value is parsed (the book's setters, the publisher's record builders), so no
record on Kafka carries NaN, infinity, a negative, a meaningless zero or a value of the wrong
type. A rejected value raises `BadValue`, a `ValueError`: the session sends the whole frame to
`ws.dlq` with the reason, publishes nothing of it, and counts the rejection by reason
(`kcs_rejected_values_total{exchange, reason}`).

Hot path: the accepting branch is one type test and one chained comparison.
"""

from __future__ import annotations

import math

__all__ = ["BadValue", "positive", "non_negative", "optional_positive", "optional_non_negative",
           "finite_time", "INF"]

INF = math.inf


class BadValue(ValueError):
    """A value that cannot be published; `reason` is one of nan, infinite, negative, zero,
    type."""

    def __init__(self, what: str, value: object, reason: str) -> None:
        super().__init__(f"bad {what}: {value!r} ({reason})")
        self.reason = reason
        self.book: object = None  # the L2Book it was dropped from, if it was a book level


def _reason(value: object) -> str:
    if type(value) is not float and type(value) is not int or type(value) is bool:
        return "type"
    if value != value:  # type: ignore[comparison-overlap]
        return "nan"
    if value in (INF, -INF):
        return "infinite"
    if value < 0:  # type: ignore[operator]
        return "negative"
    return "zero"


def positive(value: object, what: str = "value") -> float:
    """`value` if it is a finite number above 0 (an int becomes a float), else BadValue."""
    if type(value) is float:
        if 0.0 < value < INF:
            return value
    elif type(value) is int and 0 < value:
        return float(value)  # a huge int cannot become a float: OverflowError, also a DLQ
    elif type(value) is bool:
        raise BadValue(what, value, "type")
    raise BadValue(what, value, _reason(value))


def non_negative(value: object, what: str = "value") -> float:
    """`value` if it is a finite number of 0 or more (a size 0 deletes a book level)."""
    if type(value) is float:
        if 0.0 <= value < INF:
            return value
    elif type(value) is int and 0 <= value:
        return float(value)
    raise BadValue(what, value, _reason(value))


def optional_positive(value: object, what: str = "value") -> float | None:
    """None stays None (the venue did not send it); anything else must be `positive`."""
    return None if value is None else positive(value, what)


def optional_non_negative(value: object, what: str = "value") -> float | None:
    return None if value is None else non_negative(value, what)


def finite_time(value: object, what: str = "ts_event") -> float:
    """A timestamp (epoch seconds): finite and above 0."""
    return positive(value, what)
