"""`python -m dashboard` / `jobsched dashboard`: serve the dashboard with uvicorn."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from dashboard.app import create_app
from dashboard.flags import PROGRAM, host_port, settings_of
from jobsched.tls import TLSConfigError


def main(argv: list[str] | None = None) -> int:
    args = PROGRAM.resolve(argv).args
    try:
        settings = settings_of(args)
        host, port = host_port(args.listen)
    except (TLSConfigError, argparse.ArgumentTypeError) as err:
        print(f"jobsched dashboard: {err}", file=sys.stderr)
        return 2
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=args.log_level.lower(),
        # Event streams stay open: on shutdown they are ended after this grace.
        timeout_graceful_shutdown=3,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    shown = "[" + host + "]" if ":" in host else host
    print(f"jobsched dashboard on http://{shown}:{port}/", file=sys.stderr, flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
