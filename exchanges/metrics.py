"""The metrics registry of the process, moved out of exchanges/publisher.py unchanged."""

from __future__ import annotations

__all__ = ["metrics"]


class _Metrics:
    """Process-wide counters, exported by the `/metrics/` view in Prometheus text format."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + value

    def get(self, name: str, **labels: str) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every counter of `name` that has these labels (and maybe others)."""
        wanted = set(labels.items())
        return sum(value for (n, have), value in self.counters.items()
                   if n == name and wanted <= set(have))

    def render(self) -> str:
        lines = []
        for (name, labels), value in sorted(self.counters.items()):
            text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


metrics = _Metrics()
