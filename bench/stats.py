"""Percentiles of latency samples, and the figures collected over repetitions (each with the
target of issue 6 it is judged against, if any)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


def percentile(samples: Sequence[float], pct: float) -> float:
    """The `pct` percentile, interpolating linearly between the closest ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Target:
    """A bound a figure must meet: `at_most` (latencies, costs) or at least (throughputs)."""

    limit: float
    at_most: bool

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit

    def describe(self, unit: str) -> str:
        limit = f"{self.limit:,.0f}" if self.limit >= 100 else f"{self.limit:g}"
        return f"{'≤' if self.at_most else '≥'} {limit} {unit}"


def at_most(limit: float) -> Target:
    return Target(limit, at_most=True)


def at_least(limit: float) -> Target:
    return Target(limit, at_most=False)


@dataclass(slots=True)
class Figure:
    """One reported quantity and its value in every repetition."""

    measurement: str
    name: str
    unit: str
    target: Target | None = None
    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def verdict(self) -> str:
        """Whether the median meets the target ("met" or "NOT met"); empty without one."""
        if self.target is None:
            return ""
        return "met" if self.target.met(self.median) else "NOT met"


class Figures:
    """The figures in the order they were first recorded."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Figure] = {}

    def add(
        self, measurement: str, name: str, unit: str, value: float, target: Target | None = None
    ) -> None:
        key = (measurement, name)
        if key not in self._by_key:
            self._by_key[key] = Figure(measurement, name, unit, target)
        self._by_key[key].runs.append(value)

    def __iter__(self) -> Iterator[Figure]:
        """Grouped by measurement (in the order measurements first appear), then in order."""
        order = {m: i for i, m in enumerate(dict.fromkeys(k[0] for k in self._by_key))}
        return iter(sorted(self._by_key.values(), key=lambda f: order[f.measurement]))

    def __len__(self) -> int:
        return len(self._by_key)
