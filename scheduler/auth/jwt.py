"""Verifying JWT bearer tokens (PyJWT) against the JWKS (scheduler/auth/jwks.py), with a cache
of verified tokens.

A token is accepted when its header's `alg` is an allowed asymmetric algorithm that fits the
key its `kid` names, its signature verifies, `iss` and `aud` are the configured ones, it has an
`exp` (and `sub`), and `exp`, `nbf` and `iat` hold with `leeway` seconds of clock skew. `none`
and HS* are never allowed: a public key must not double as an HMAC secret. The principal is
`sub` (kind "jwt"); its tenants and roles come from the permissions claim
(scheduler/domain/grants.py), per call.

Verified tokens are cached (at most `cache_entries`, least recently used out) until their
`exp`: a call with a token seen before pays a dictionary lookup, not a signature check.
A change of the key set empties the cache (a key removed stops its tokens at once). Refusals
are UNAUTHENTICATED with a reason the client can act on: CREDENTIAL_MALFORMED, CREDENTIAL_EXPIRED,
JWT_SIGNATURE_INVALID, JWT_ISSUER_INVALID, JWT_AUDIENCE_INVALID, JWT_KEY_UNKNOWN,
JWT_ALGORITHM_NOT_ALLOWED, JWT_NOT_YET_VALID, JWT_CLAIM_MISSING, JWT_CLAIM_INVALID.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from scheduler.auth.jwks import JwksKeys
from scheduler.domain.auth import Principal, Role
from scheduler.domain.errors import Unauthenticated
from scheduler.domain.grants import GrantsError, parse_grants, principal_for

# Asymmetric signatures only: what a JWKS of public keys can verify.
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
DEFAULT_LEEWAY = 30.0
MAX_LEEWAY = 600.0
DEFAULT_PERMISSIONS_CLAIM = "permissions"
DEFAULT_JWKS_REFRESH = 300.0
DEFAULT_JWKS_MIN_REFRESH = 30.0
CACHE_ENTRIES = 10_000
KIND = "jwt"


@dataclass(frozen=True, slots=True)
class JwtSettings:
    """How JWTs are verified (`--jwt-*` flags)."""

    jwks: str  # a file path or an http(s) URL
    issuer: str
    audience: str
    leeway: float = DEFAULT_LEEWAY
    permissions_claim: str = DEFAULT_PERMISSIONS_CLAIM
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    jwks_refresh: float = DEFAULT_JWKS_REFRESH
    # Reading the JWKS again for an unknown kid happens at most this often.
    jwks_min_refresh: float = DEFAULT_JWKS_MIN_REFRESH

    def __post_init__(self) -> None:
        if not self.jwks.strip():
            raise ValueError("JWT: the JWKS (a file or an http(s) URL) is required")
        if not self.issuer.strip():
            raise ValueError("JWT: an issuer is required (--jwt-issuer): tokens must name it")
        if not self.audience.strip():
            raise ValueError(
                "JWT: an audience is required (--jwt-audience): without it a token the identity "
                "provider made for any other service would be accepted"
            )
        if not 0 <= self.leeway <= MAX_LEEWAY:
            raise ValueError(f"JWT: the leeway must be 0 to {MAX_LEEWAY:g} seconds")
        if not self.permissions_claim.strip():
            raise ValueError("JWT: the permissions claim needs a name")
        if not self.algorithms:
            raise ValueError("JWT: at least one algorithm must be allowed")
        for name in self.algorithms:
            if name not in ALGORITHMS:
                raise ValueError(
                    f"JWT: algorithm {name!r} is not allowed (only asymmetric signatures a "
                    f"JWKS can verify: {', '.join(sorted(ALGORITHMS))})"
                )
        if not self.jwks_refresh > 0 or self.jwks_min_refresh < 0:
            raise ValueError("JWT: the JWKS refresh interval must be positive")


@dataclass(frozen=True, slots=True)
class _Verified:
    subject: str
    grants: Mapping[str, Role]
    expires_at: float  # the token's exp (epoch seconds)
    valid_until: datetime  # exp + leeway: when it is refused


_REFUSALS: tuple[tuple[type[Exception], str, str], ...] = (
    # Subclasses before their bases (InvalidSignatureError is a DecodeError).
    (jwt.ExpiredSignatureError, "CREDENTIAL_EXPIRED", "the token has expired"),
    (jwt.ImmatureSignatureError, "JWT_NOT_YET_VALID", "the token is not valid yet (nbf)"),
    (jwt.InvalidIssuedAtError, "JWT_NOT_YET_VALID", "the token was issued in the future (iat)"),
    (jwt.InvalidIssuerError, "JWT_ISSUER_INVALID", "the token's issuer (iss) is not trusted"),
    (jwt.InvalidAudienceError, "JWT_AUDIENCE_INVALID", "the token is not for this audience"),
    (jwt.MissingRequiredClaimError, "JWT_CLAIM_MISSING", "the token lacks a required claim"),
    (jwt.InvalidSignatureError, "JWT_SIGNATURE_INVALID", "the token's signature is not valid"),
    (jwt.InvalidAlgorithmError, "JWT_ALGORITHM_NOT_ALLOWED", "the token's algorithm is refused"),
)


class JwtAuthenticator:
    def __init__(
        self,
        settings: JwtSettings,
        keys: JwksKeys,
        *,
        clock: Callable[[], float] = time.time,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.clock = clock
        self.cache_entries = cache_entries
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        self._required = ["exp", "sub", "iss", "aud"]
        self.verifications = 0  # signature checks made (tests read it to see the cache work)

    def forget_all(self) -> None:
        """Empty the cache (the key set changed)."""
        self._cache.clear()

    def verified_recently(self, token: str) -> bool:
        """Whether `token` is in the cache of verified tokens and not yet expired (a hint for
        the failed-authentication gate, never a grant)."""
        verified = self._cache.get(token)
        return verified is not None and verified.expires_at + self.settings.leeway > self.clock()

    async def authenticate(
        self, token: str, requested_tenant: Callable[[], str | None]
    ) -> Principal:
        """The principal of a call with `token`; `requested_tenant` (the call's
        x-jobsched-tenant) is read only once the token is verified."""
        verified = self._cache.get(token)
        if verified is None:
            verified = await self._verify(token)
            self._cache[token] = verified
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(token)
        if verified.expires_at + self.settings.leeway <= self.clock():
            self._cache.pop(token, None)
            raise Unauthenticated("CREDENTIAL_EXPIRED", "the token has expired")
        return principal_for(
            KIND,
            verified.subject,
            verified.subject,
            verified.grants,
            requested_tenant(),
            verified.valid_until,
        )

    async def _verify(self, token: str) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated(
                "CREDENTIAL_MALFORMED", "the bearer token is neither an API key nor a JWT"
            ) from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.settings.algorithms:
            raise Unauthenticated(
                "JWT_ALGORITHM_NOT_ALLOWED",
                f"the token's algorithm {algorithm!r} is not allowed "
                f"(allowed: {', '.join(self.settings.algorithms)})",
            )
        kid = header.get("kid")
        jwk = await self.keys.find(kid if isinstance(kid, str) else None)
        if jwk is None:
            raise Unauthenticated("JWT_KEY_UNKNOWN", f"no key {kid!r} in the JWKS")
        if jwk.get("alg", algorithm) != algorithm:
            raise Unauthenticated(
                "JWT_ALGORITHM_NOT_ALLOWED", f"key {kid!r} is for {jwk['alg']}, not {algorithm}"
            )
        try:
            key = jwt.PyJWK(jwk, algorithm)
        except jwt.PyJWTError:
            raise Unauthenticated(
                "JWT_ALGORITHM_NOT_ALLOWED", f"key {kid!r} cannot verify {algorithm}"
            ) from None
        self.verifications += 1
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway,
                options={"require": self._required},
            )
        except jwt.PyJWTError as exc:
            raise self._refusal(exc) from None
        return self._verified(claims)

    @staticmethod
    def _refusal(exc: jwt.PyJWTError) -> Unauthenticated:
        for kind, reason, message in _REFUSALS:
            if isinstance(exc, kind):
                return Unauthenticated(reason, message)
        return Unauthenticated("CREDENTIAL_MALFORMED", "the bearer token is not a valid JWT")

    def _verified(self, claims: dict[str, Any]) -> _Verified:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise Unauthenticated("JWT_CLAIM_MISSING", "the token has no subject (sub)")
        expires_at = claims.get("exp")
        if not isinstance(expires_at, int | float):
            raise Unauthenticated("JWT_CLAIM_INVALID", "the token's exp is not a number")
        name = self.settings.permissions_claim
        try:
            grants = parse_grants(claim_value(claims, name), name)
        except GrantsError as exc:
            raise Unauthenticated("JWT_CLAIM_INVALID", str(exc)) from None
        valid_until = datetime.fromtimestamp(float(expires_at) + self.settings.leeway, UTC)
        return _Verified(subject, grants, float(expires_at), valid_until)


def claim_value(claims: Mapping[str, Any], name: str) -> object:
    """The claim `name`; when there is none by that name, a dotted name is a path into nested
    objects (Keycloak's `realm_access.roles`). Namespaced names (`https://x.example/perms`)
    are found whole first."""
    if name in claims:
        return claims[name]
    value: object = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value
