"""The scheduler's TLS: a certificate and key to serve with, and for mutual TLS the CA whose
client certificates are required. The files are read again, without dropping a connection,
when they change on disk or when `reload()` is called (the process does on SIGHUP): gRPC asks
for the configuration at each new handshake, and existing connections and streams keep theirs.

A new pair that cannot be used (unreadable, not PEM, a key that does not match) is refused
with an error log line, and the previous one stays in use.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc

log = logging.getLogger("jobsched.tls")


class TLSError(ValueError):
    """The TLS files cannot be used."""


@dataclass(frozen=True, slots=True)
class ServerTLS:
    cert: Path
    key: Path
    client_ca: Path | None = None  # mutual TLS: clients must present a certificate it signed

    def load(self) -> grpc.ServerCertificateConfiguration:
        """The files as a gRPC configuration; TLSError naming the file when one is unusable."""
        for path in (self.cert, self.key, self.client_ca):
            if path is not None and not path.is_file():
                raise TLSError(f"TLS: {path}: no such file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            raise TLSError(
                f"TLS: {self.cert} and {self.key} are not a certificate and its key: {exc}"
            ) from None
        client_ca = None
        if self.client_ca is not None:
            try:
                client_ca = self.client_ca.read_bytes()
                context.load_verify_locations(cadata=client_ca.decode())
            except (ssl.SSLError, OSError, UnicodeDecodeError) as exc:
                raise TLSError(f"TLS: {self.client_ca} holds no CA certificate: {exc}") from None
        return grpc.ssl_server_certificate_configuration(
            [(self.key.read_bytes(), self.cert.read_bytes())], root_certificates=client_ca
        )


@dataclass(eq=False)
class ReloadingCredentials:
    """Server credentials whose certificates follow the files (see the module's docstring)."""

    tls: ServerTLS
    reloads: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _forced: bool = False
    _seen: tuple[float, ...] = ()

    def credentials(self) -> grpc.ServerCredentials:
        initial = self.tls.load()  # a bad pair at start is an error, not a log line
        self._seen = self._stamps()
        return grpc.dynamic_ssl_server_credentials(
            initial,
            # gRPC documents None as "keep the current configuration"; its stubs omit it.
            self._fetch,  # type: ignore[arg-type]
            require_client_authentication=self.tls.client_ca is not None,
        )

    def reload(self) -> None:
        """Read the files again before the next handshake (SIGHUP)."""
        with self._lock:
            self._forced = True

    def _stamps(self) -> tuple[float, ...]:
        paths = [self.tls.cert, self.tls.key] + ([self.tls.client_ca] if self.tls.client_ca else [])
        stamps = []
        for path in paths:
            try:
                stamps.append(os.stat(path).st_mtime)
            except OSError:
                stamps.append(-1.0)
        return tuple(stamps)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration, or None to keep it."""
        stamps = self._stamps()
        with self._lock:
            if not self._forced and stamps == self._seen:
                return None
            self._forced = False
            self._seen = stamps
        try:
            configuration = self.tls.load()
        except TLSError as exc:
            log.error(
                "TLS files not reloaded; the previous certificate stays in use",
                extra={"fields": {"event": "tls.reload_failed", "reason": str(exc)}},
            )
            return None
        self.reloads += 1
        log.info(
            "TLS certificate reloaded",
            extra={"fields": {"event": "tls.reloaded", "cert": str(self.tls.cert)}},
        )
        return configuration
