"""TLS for the client side of every connection to a scheduler (the clients, the CLI, the
executor): which CA to trust, an optional client certificate for mutual TLS, and the name to
expect on the server's certificate.

    tls = ClientTLS(ca=Path("ca.pem"))                                   # server TLS
    tls = ClientTLS(ca=Path("ca.pem"), cert=Path("me.pem"), key=Path("me.key"))   # mTLS
    channel = open_channel("sched:50051", options, tls)

Files are read when a channel is opened, so a rotated client certificate is used by the next
connection. `ClientTLS()` (no CA) trusts the system's roots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


class TLSConfigError(ValueError):
    """A TLS option cannot be used (a file missing, a certificate without its key)."""


@dataclass(frozen=True, slots=True)
class ClientTLS:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TLSConfigError(
                "a client certificate needs its key: give both --tls-cert and --tls-key"
            )
        for what, path in (
            ("--tls-ca", self.ca),
            ("--tls-cert", self.cert),
            ("--tls-key", self.key),
        ):
            if path is not None and not Path(path).is_file():
                raise TLSConfigError(f"{what} {path}: no such file")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca),
            private_key=_read(self.key),
            certificate_chain=_read(self.cert),
        )

    def options(self) -> list[tuple[str, Any]]:
        """Channel options: the server name to verify, when it differs from the address."""
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


def _read(path: Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def open_channel(
    target: str,
    options: Sequence[tuple[str, Any]],
    tls: ClientTLS | None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A channel to `target`: TLS when `tls` is given, plaintext otherwise; `interceptors` (the
    client spans of jobsched/tracing.py) only when given."""
    chain = list(interceptors) or None
    if tls is None:
        return grpc.aio.insecure_channel(target, options=list(options), interceptors=chain)
    return grpc.aio.secure_channel(
        target, tls.credentials(), options=[*options, *tls.options()], interceptors=chain
    )


def client_tls_of(
    *,
    enabled: bool = False,
    ca: Path | str | None = None,
    cert: Path | str | None = None,
    key: Path | str | None = None,
    server_name: str | None = None,
) -> ClientTLS | None:
    """ClientTLS from command-line options: None (plaintext) unless `enabled` or a file or a
    server name is given."""
    if not (enabled or ca or cert or key or server_name):
        return None
    return ClientTLS(
        ca=Path(ca) if ca else None,
        cert=Path(cert) if cert else None,
        key=Path(key) if key else None,
        server_name=server_name or None,
    )


# The options' environment variables, for the configuration loader's `env` of each program.
TLS_ENV = {
    "tls": "JOBSCHED_TLS",
    "tls_ca": "JOBSCHED_TLS_CA",
    "tls_cert": "JOBSCHED_TLS_CERT",
    "tls_key": "JOBSCHED_TLS_KEY",
    "tls_server_name": "JOBSCHED_TLS_SERVER_NAME",
}


def add_tls_options(parser: Any) -> None:
    """--tls, --tls-ca, --tls-cert, --tls-key, --tls-server-name (an argparse parser)."""
    group = parser.add_argument_group("TLS (to schedulers that serve TLS)")
    group.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS, trusting the system's CAs (implied by the other --tls-* "
        "options; env JOBSCHED_TLS)",
    )
    group.add_argument(
        "--tls-ca", metavar="FILE", help="CA certificates (PEM) to trust (env JOBSCHED_TLS_CA)"
    )
    group.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="client certificate (PEM) for mutual TLS (env JOBSCHED_TLS_CERT)",
    )
    group.add_argument(
        "--tls-key", metavar="FILE", help="its private key (PEM) (env JOBSCHED_TLS_KEY)"
    )
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the server's certificate must carry, when it is not the address's "
        "host (env JOBSCHED_TLS_SERVER_NAME)",
    )


def tls_from_args(args: Any) -> ClientTLS | None:
    """The ClientTLS that `add_tls_options`'s parsed values ask for (TLSConfigError if bad)."""
    return client_tls_of(
        enabled=args.tls,
        ca=args.tls_ca,
        cert=args.tls_cert,
        key=args.tls_key,
        server_name=args.tls_server_name,
    )
