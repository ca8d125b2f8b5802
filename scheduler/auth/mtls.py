"""mTLS identities: a client certificate (verified by the TLS handshake against --tls-client-ca)
mapped to a principal, its tenants and a role by rules from a TOML file (--mtls-identities):

    [[identity]]
    match = "spiffe://prod/executor-*"   # a pattern: * is any run of characters but "/"
    field = "uri"                        # san (the default: uri, dns or email), uri, dns, email, cn
    role = "executor"
    tenants = ["alpha", "beta"]          # "*" for every tenant
    name = "prod executors"              # optional; the principal's name (default: the match)

The first rule, in file order, that matches one of the certificate's names gives the principal
(kind "certificate", id the name it matched). The subject's common name is looked at only by a
rule that says `field = "cn"`: subject alternative names are the identity of a modern
certificate. A certificate no rule matches is refused (UNAUTHENTICATED, CERTIFICATE_UNKNOWN) when
it is the call's only credential. Names are read from the certificate gRPC hands over
(x509_pem_cert in the call's auth context) with `cryptography`, once per certificate (cached).
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from scheduler.domain.auth import ALL_TENANTS, Principal, Role
from scheduler.domain.errors import Unauthenticated
from scheduler.domain.validation import NAME_PATTERN

FIELDS = ("san", "uri", "dns", "email", "cn")
KIND = "certificate"
CACHE_ENTRIES = 1_000
PEM_PROPERTY = "x509_pem_cert"


class IdentitiesError(ValueError):
    """The identities file cannot be used; the message names the file and the rule."""


@dataclass(frozen=True, slots=True)
class CertificateNames:
    """The names a client certificate carries, by kind."""

    uri: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    email: tuple[str, ...] = ()
    cn: tuple[str, ...] = ()
    not_after: datetime | None = None  # when the certificate expires

    def of(self, field: str) -> tuple[str, ...]:
        if field == "san":
            return self.uri + self.dns + self.email
        names: tuple[str, ...] = getattr(self, field)
        return names

    @classmethod
    def from_pem(cls, pem: bytes) -> CertificateNames:
        cert = x509.load_pem_x509_certificate(pem)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            uri: list[str] = []
            dns: list[str] = []
            email: list[str] = []
        else:
            uri = san.get_values_for_type(x509.UniformResourceIdentifier)
            dns = [name.lower() for name in san.get_values_for_type(x509.DNSName)]
            email = san.get_values_for_type(x509.RFC822Name)
        cn = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        return cls(tuple(uri), tuple(dns), tuple(email), tuple(cn), cert.not_valid_after_utc)


@functools.lru_cache(maxsize=1024)
def _pattern(match: str) -> re.Pattern[str]:
    return re.compile("[^/]*".join(re.escape(part) for part in match.split("*")))


@dataclass(frozen=True, slots=True)
class MtlsIdentity:
    """One rule: certificates with a name matching `match` in `field` are this principal."""

    match: str
    role: Role
    tenants: frozenset[str]
    field: str = "san"
    name: str = ""

    def __post_init__(self) -> None:
        if self.field not in FIELDS:
            raise ValueError(f"field must be one of {', '.join(FIELDS)}")
        if not self.match:
            raise ValueError("match must not be empty")
        if not self.tenants:
            raise ValueError("tenants must name at least one tenant")
        for tenant in self.tenants:
            if tenant != ALL_TENANTS and not NAME_PATTERN.fullmatch(tenant):
                raise ValueError(f"tenant {tenant!r} must match {NAME_PATTERN.pattern}")
        if ALL_TENANTS in self.tenants and len(self.tenants) > 1:
            raise ValueError('tenants: "*" (every tenant) stands alone')

    def matched(self, names: CertificateNames) -> str | None:
        """The certificate's name this rule matches, if any."""
        pattern = _pattern(self.match.lower() if self.field == "dns" else self.match)
        for value in names.of(self.field):
            if pattern.fullmatch(value):
                return value
        return None


def identify(rules: tuple[MtlsIdentity, ...], names: CertificateNames) -> Principal | None:
    """The principal of the first rule matching the certificate, None when none does. It
    expires with the certificate: an executor's stream is ended then (the handshake checked
    the dates only when the connection opened)."""
    for rule in rules:
        matched = rule.matched(names)
        if matched is not None:
            name = rule.name or matched
            return Principal(KIND, matched, name, rule.role, rule.tenants, names.not_after)
    return None


def load_identities(path: Path) -> tuple[MtlsIdentity, ...]:
    """The rules of an identities file (IdentitiesError naming the file and the rule)."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise IdentitiesError(f"{path}: cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise IdentitiesError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"identity"})
    if unknown:
        raise IdentitiesError(f"{path}: unknown key {unknown[0]!r} (rules are [[identity]])")
    entries = data.get("identity", [])
    if not isinstance(entries, list) or not entries:
        raise IdentitiesError(f"{path}: no [[identity]] rules")
    return tuple(_rule(entry, f"{path}: [[identity]] #{i}") for i, entry in enumerate(entries, 1))


def _rule(entry: Any, where: str) -> MtlsIdentity:
    if not isinstance(entry, dict):
        raise IdentitiesError(f"{where}: must be a table")
    unknown = sorted(set(entry) - {"match", "field", "role", "tenants", "name"})
    if unknown:
        raise IdentitiesError(f"{where}: unknown key {unknown[0]!r}")
    for key in ("match", "role", "tenants"):
        if key not in entry:
            raise IdentitiesError(f"{where}: {key} is required")
    roles = {role.value: role for role in Role}
    role = roles.get(str(entry["role"]).lower())
    if role is None:
        raise IdentitiesError(f"{where}: role must be one of {', '.join(roles)}")
    tenants = entry["tenants"]
    if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
        raise IdentitiesError(f"{where}: tenants must be a list of tenant names")
    for key in ("match", "field", "name"):
        if not isinstance(entry.get(key, ""), str):
            raise IdentitiesError(f"{where}: {key} must be a string")
    try:
        return MtlsIdentity(
            match=entry["match"],
            role=role,
            tenants=frozenset(t.lower() for t in tenants),
            field=entry.get("field", "san"),
            name=entry.get("name", ""),
        )
    except ValueError as exc:
        raise IdentitiesError(f"{where}: {exc}") from None


class CertificateAuthenticator:
    """The principal of a call's client certificate, by the rules (cached per certificate)."""

    def __init__(self, rules: tuple[MtlsIdentity, ...], cache_entries: int = CACHE_ENTRIES):
        self.rules = rules
        self.cache_entries = cache_entries
        self._cache: OrderedDict[bytes, Principal | None] = OrderedDict()

    def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal | None:
        """None when the call has no client certificate; CERTIFICATE_UNKNOWN when no rule
        matches the one it has."""
        pem = next(iter(context.auth_context().get(PEM_PROPERTY, ())), None)
        if pem is None:
            return None
        if pem in self._cache:
            principal = self._cache[pem]
            self._cache.move_to_end(pem)
        else:
            principal = identify(self.rules, CertificateNames.from_pem(pem))
            self._cache[pem] = principal
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
        if principal is None:
            raise Unauthenticated(
                "CERTIFICATE_UNKNOWN", "no mTLS identity rule matches the client certificate"
            )
        return principal
