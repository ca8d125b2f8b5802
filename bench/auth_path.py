"""10b. The authentication path alone, in this process: CredentialAuthenticator.authenticate
(the work the AuthInterceptor adds to a call) for an API key, a JWT and a client certificate,
each already verified once (the cached path), timed over many calls; and a JWT's first check
(its signature), which the cache saves. Round trips on a shared
machine (bench/auth_overhead.py) scatter by more than this costs; this figure does not.

The API key's store is a stand-in holding the one key (after the first call the cache answers
and the store is not asked); the JWT is checked against a real JWKS file and the certificate
against real identity rules, both from bench/auth_credentials.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, cast

from bench.auth_credentials import AUDIENCE, ISSUER, BenchCredentials
from bench.stats import Figures, percentile
from scheduler.api.auth_service import make_key
from scheduler.auth.api_keys import ApiKeyAuthenticator
from scheduler.auth.credentials import CredentialAuthenticator
from scheduler.auth.jwks import JwksKeys, JwksSource
from scheduler.auth.jwt import JwtAuthenticator, JwtSettings
from scheduler.auth.mtls import CertificateAuthenticator, load_identities
from scheduler.domain.auth import ApiKeyRecord, Role
from scheduler.store.api_keys import ApiKeyStore

CALLS = {"full": 20_000, "quick": 2_000}


class _OneKey:
    def __init__(self, record: ApiKeyRecord) -> None:
        self.record = record

    async def by_digest(self, digest: bytes) -> ApiKeyRecord | None:
        return self.record if digest == self.record.digest else None


class _Context:
    """What authenticate() reads of a grpc.aio servicer context."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], pem: bytes | None = None) -> None:
        self.metadata = metadata
        self.auth = {"x509_pem_cert": [pem]} if pem is not None else {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self.auth


async def measure_auth_path(made: BenchCredentials, mode: str, figures: Figures, name: str) -> None:
    now = datetime.now(UTC)
    record, key = make_key("bench", Role.ADMIN, frozenset({"default"}), now)
    api_keys = ApiKeyAuthenticator(cast(ApiKeyStore, _OneKey(record)), lambda: now)
    settings = JwtSettings(jwks=str(made.jwks), issuer=ISSUER, audience=AUDIENCE)
    keys = JwksKeys(JwksSource(settings.jwks), settings.jwks_refresh, settings.jwks_min_refresh)
    await keys.read()
    verifier = JwtAuthenticator(settings, keys)
    credentials = CredentialAuthenticator(
        api_keys, verifier, CertificateAuthenticator(load_identities(made.identities))
    )
    tenant = ("x-jobsched-tenant", "default")
    contexts = {
        "API key": _Context((tenant, ("authorization", f"Bearer {key}"))),
        "JWT": _Context((tenant, ("authorization", f"Bearer {made.token}"))),
        "mTLS identity": _Context((tenant,), made.client_cert),
    }
    calls = CALLS.get(mode, CALLS["quick"])
    for label, context in contexts.items():
        grpc_context = cast(Any, context)
        await credentials.authenticate(grpc_context)  # verified once: the cached path follows
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            await credentials.authenticate(grpc_context)
            samples.append((time.perf_counter() - started) * 1e6)
        figures.add(name, f"authenticate() {label}: p50", "us", percentile(samples, 50))
        figures.add(name, f"authenticate() {label}: p99", "us", percentile(samples, 99))
    # A token never seen before: the signature check (RS256, 2048 bits) the cache saves.
    context = cast(Any, contexts["JWT"])
    samples = []
    for _ in range(calls // 10):
        verifier.forget_all()
        started = time.perf_counter()
        await credentials.authenticate(context)
        samples.append((time.perf_counter() - started) * 1e6)
    figures.add(name, "authenticate() JWT, not cached: p50", "us", percentile(samples, 50))
