"""Percentiles of latency samples, and the figures collected over repetitions."""

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


@dataclass(slots=True)
class Figure:
    """One reported quantity and its value in every repetition."""

    measurement: str
    name: str
    unit: str
    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


class Figures:
    """The figures in the order they were first recorded."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Figure] = {}

    def add(self, measurement: str, name: str, unit: str, value: float) -> None:
        key = (measurement, name)
        if key not in self._by_key:
            self._by_key[key] = Figure(measurement, name, unit)
        self._by_key[key].runs.append(value)

    def __iter__(self) -> Iterator[Figure]:
        return iter(self._by_key.values())
