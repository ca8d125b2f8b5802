"""The synchronous client, as a script or a Flask/Django view would use it:

    python examples/sync_client.py [ADDRESS]     # against `make run` (127.0.0.1:50051)

It submits a short `sleep` job, prints its progress as it runs, waits for the result, and shows
how a failed job surfaces (JobFailedError with the job's error).
"""

from __future__ import annotations

import sys

import jobsched


def main(address: str) -> int:
    with jobsched.Client(address, timeout=10) as client:
        job = client.submit("sleep", {"seconds": 0.5})
        print(f"submitted {job.id} ({job.state})")
        for event in client.watch(job.id):
            if event.kind == "progress" and event.progress is not None:
                print(f"progress {event.progress.percent:.0f}%")
            elif event.kind == "transition":
                print(f"state {event.state}")
        print(f"result {job.wait(timeout=30)!r}")

        # A job that cannot succeed: the sleep handler refuses a negative duration.
        bad = client.submit("sleep", {"seconds": -1}, max_attempts=1)
        try:
            bad.wait(timeout=30)
        except jobsched.JobFailedError as failed:
            print(f"failed {failed.job.state}: {failed.error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
