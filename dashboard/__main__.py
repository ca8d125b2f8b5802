"""`python -m dashboard` / `jobsched dashboard`: serve the dashboard until SIGTERM or SIGINT, then
end its streams and exit 0."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from dashboard.flags import PROGRAM, DashboardSettings, host_port, settings_of
from dashboard.serving import DashboardServer
from jobsched.tls import TLSConfigError

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


async def serve(settings: DashboardSettings, host: str, port: int, log_level: str) -> None:
    server = DashboardServer(settings, host, port, log_level=log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = await server.start()
    print(f"jobsched dashboard on {url}/", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = PROGRAM.resolve(argv).args
    try:
        settings = settings_of(args)
        host, port = host_port(args.listen)
    except (TLSConfigError, argparse.ArgumentTypeError) as err:
        print(f"jobsched dashboard: {err}", file=sys.stderr)
        return 2
    if host not in LOOPBACK and not settings.secure_cookies:
        print(
            f"jobsched dashboard: serving {host} over plain HTTP: put it behind a TLS proxy and "
            "pass --secure-cookies (and --session-secret)",
            file=sys.stderr,
        )
    try:
        asyncio.run(serve(settings, host, port, args.log_level.lower()))
    except OSError as err:
        print(
            f"jobsched dashboard: cannot listen on {args.listen}: {err.strerror}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
