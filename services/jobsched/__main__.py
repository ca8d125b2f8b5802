"""`python -m jobsched`: the `jobsched` command (jobsched/cli)."""

from jobsched.cli import main

raise SystemExit(main())
