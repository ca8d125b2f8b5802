"""A command job through the synchronous client. Against an executor that allows the shell:

    jobsched executor --allow-command '/usr/bin/*' --allow-command '/bin/*'
    python examples/command_job.py [ADDRESS]     # default 127.0.0.1:50051

It runs a small shell script as a job (its own working directory, an environment variable of
its own, progress through `::progress` lines, output on both streams), prints its progress,
result and log lines, then shows how an exit code listed as non-retryable ends a job at once.
"""

from __future__ import annotations

import sys

import jobsched

SCRIPT = """
echo "$GREETING from $(basename "$PWD")"
echo "::progress 50 half way"
echo "a warning" >&2
echo "::progress 100 done"
"""


def main(address: str) -> int:
    with jobsched.Client(address, timeout=10) as client:
        job = client.submit(
            "command",
            {"argv": ["sh", "-c", SCRIPT], "cwd": "build", "env": {"GREETING": "hello"}},
        )
        for event in client.watch(job.id):
            if event.kind == "progress" and event.progress is not None:
                print(f"progress {event.progress.percent:.0f}% {event.progress.message}")
        result = job.wait(timeout=30)
        print(f"exit code {result['exit_code']}, stderr {result['stderr_tail']!r}")
        for line in client.logs(job.id):
            print(f"log {line}")

        # Exit code 2 means "bad input" to this script's author: no retry.
        bad = client.submit(
            "command",
            {
                "argv": ["sh", "-c", "echo 'no such input' >&2; exit 2"],
                "non_retryable_exit_codes": [2],
            },
            max_attempts=3,
        )
        try:
            bad.wait(timeout=30)
        except jobsched.JobFailedError as failed:
            print(f"failed {failed.job.state} after attempt {failed.job.attempt}: {failed.error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
