"""A DAG in one call: two downloads, then a merge that waits for both, then a report.

    python examples/dag.py [ADDRESS]     # against `make run` (its executor runs sleep jobs)

`ref` names a job within the batch and `depends_on_refs` the jobs it waits for; the batch is
stored atomically (a cycle or an unknown ref refuses it whole). A job waits (WAITING) until
every dependency SUCCEEDED, and is cancelled if one ends DEAD or CANCELLED.
"""

from __future__ import annotations

import sys

import jobsched
from jobsched.client import job_spec


def main(address: str) -> int:
    with jobsched.Client(address, timeout=10) as client:
        jobs = client.submit_many(
            [
                job_spec("sleep", ref="fetch-a", payload={"seconds": 0.2}),
                job_spec("sleep", ref="fetch-b", payload={"seconds": 0.3}),
                job_spec(
                    "sleep",
                    ref="merge",
                    payload={"seconds": 0.1},
                    depends_on_refs=["fetch-a", "fetch-b"],
                ),
                job_spec("noop", ref="report", depends_on_refs=["merge"]),
            ]
        )
        names = dict(zip(["fetch-a", "fetch-b", "merge", "report"], jobs, strict=True))
        for name, job in names.items():
            print(f"{name} {job.id} {job.state}")
        names["report"].wait(timeout=60)
        finished = {name: client.get(job.id) for name, job in names.items()}
        order = sorted(finished, key=lambda name: finished[name].finished_at)
        print("finished in order: " + " ".join(order))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
