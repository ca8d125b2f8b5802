"""The peer ratios of `make bench` (bench/pgqueuer_peer.py): each pairs the right two medians."""

from __future__ import annotations

import pytest

from bench.pgqueuer_peer import PEER_ENQUEUE, PEER_START, PEER_THROUGHPUT, RATIOS, add_ratios
from bench.stats import Figures


def _ratio(figures: Figures, name: str) -> float:
    (figure,) = [f for f in figures if f.measurement == RATIOS and f.name == name]
    return figure.median


def test_ratios_pair_each_jobsched_median_with_the_peers() -> None:
    figures = Figures()
    one = "Throughput: 2,000 no-op jobs, 1 scheduler, 1 executor of capacity 100"
    four = "Throughput: 2,000 no-op jobs, 1 scheduler, 4 executors of capacity 100"
    for value in (900.0, 1_000.0, 1_100.0):
        figures.add(one, "first claim to last result", "jobs/s", value)
    figures.add(four, "first claim to last result", "jobs/s", 500.0)
    figures.add("SubmitJobs: 5,000 jobs in batches of 1,000", "throughput", "jobs/s", 3_000.0)
    figures.add("Enqueue-to-start: SubmitJob at 200 jobs/s", "start latency p50", "ms", 6.0)
    figures.add("Enqueue-to-start: SubmitJob at 200 jobs/s", "start latency p99", "ms", 20.0)
    figures.add(PEER_THROUGHPUT, "2,000 no-op jobs, one worker, batch 100", "jobs/s", 4_000.0)
    figures.add(PEER_ENQUEUE, "batches of 1,000", "jobs/s", 12_000.0)
    figures.add(PEER_START, "start latency p50", "ms", 3.0)
    figures.add(PEER_START, "start latency p99", "ms", 40.0)

    notes = add_ratios(figures)

    assert _ratio(figures, "throughput, 1 scheduler + 1 executor") == pytest.approx(0.25)
    assert _ratio(figures, "throughput, 1 scheduler + 4 executors") == pytest.approx(0.125)
    assert _ratio(figures, "batch enqueue (SubmitJobs)") == pytest.approx(0.25)
    assert _ratio(figures, "enqueue-to-start p50") == pytest.approx(2.0)
    assert _ratio(figures, "enqueue-to-start p99") == pytest.approx(0.5)
    # The 2-replica topology was not measured: no ratio, and a note says so.
    assert not [f for f in figures if f.name == "throughput, 2 replicas + 4 executors"]
    assert notes == [
        "Ratios to PgQueuer not computed (a measurement not run): "
        "throughput, 2 replicas + 4 executors"
    ]
