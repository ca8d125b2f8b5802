"""mTLS identity rules (scheduler/auth/mtls.py): which certificate names a rule matches, the
principal of the first matching rule, the names read from a certificate, and the rules file's
errors naming the file and the rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from scheduler.auth.mtls import (
    CertificateNames,
    IdentitiesError,
    MtlsIdentity,
    identify,
    load_identities,
)
from scheduler.domain.auth import Role
from tests.identities import issue_client_cert

EXECUTORS = MtlsIdentity("spiffe://prod/executor-*", Role.EXECUTOR, frozenset({"alpha"}), "uri")


def test_a_star_matches_within_one_path_segment() -> None:
    assert EXECUTORS.matched(CertificateNames(uri=("spiffe://prod/executor-7",)))
    assert not EXECUTORS.matched(CertificateNames(uri=("spiffe://prod/executor-7/evil",)))
    assert not EXECUTORS.matched(CertificateNames(uri=("spiffe://staging/executor-7",)))
    assert not EXECUTORS.matched(CertificateNames(uri=("xspiffe://prod/executor-7",)))


def test_a_rule_looks_only_at_its_field_and_the_cn_only_when_asked() -> None:
    names = CertificateNames(dns=("exec.example.com",), cn=("spiffe://prod/executor-7",))
    assert not EXECUTORS.matched(names)  # a CN that looks like a SPIFFE id is not one
    san = MtlsIdentity("*.example.com", Role.VIEWER, frozenset({"alpha"}))
    assert san.matched(names) == "exec.example.com"
    cn = MtlsIdentity("spiffe://prod/*", Role.VIEWER, frozenset({"alpha"}), "cn")
    assert cn.matched(names) == "spiffe://prod/executor-7"


def test_the_first_matching_rule_gives_the_principal() -> None:
    viewers = MtlsIdentity("*", Role.VIEWER, frozenset({"beta"}), "uri", name="anyone")
    names = CertificateNames(uri=("spiffe://prod/executor-1",))
    principal = identify((EXECUTORS, viewers), names)
    assert principal is not None
    assert (principal.kind, principal.id, principal.name) == (
        "certificate",
        "spiffe://prod/executor-1",
        "spiffe://prod/executor-1",
    )
    assert (principal.role, principal.tenants) == (Role.EXECUTOR, frozenset({"alpha"}))
    other = identify((EXECUTORS, viewers), CertificateNames(uri=("urn:x",)))
    assert other is not None
    assert (other.name, other.role) == ("anyone", Role.VIEWER)
    assert identify((EXECUTORS,), CertificateNames(dns=("a.example",))) is None


def test_names_are_read_from_a_certificate(tmp_path: Path) -> None:
    cert = issue_client_cert(
        trustme.CA(),
        tmp_path,
        "c",
        uri=["spiffe://prod/executor-1"],
        dns=["Exec.Example.com"],
        email=["ops@example.com"],
        cn="exec-1",
    )
    names = CertificateNames.from_pem(cert.cert.read_bytes())
    assert names.not_after is not None
    assert names == CertificateNames(
        uri=("spiffe://prod/executor-1",),
        dns=("exec.example.com",),
        email=("ops@example.com",),
        cn=("exec-1",),
        not_after=names.not_after,
    )
    assert timedelta(hours=23) < names.not_after - datetime.now(UTC) <= timedelta(days=1)
    principal = identify((EXECUTORS,), names)
    assert principal is not None
    assert principal.expires_at == names.not_after  # its stream ends with the certificate


def test_a_rules_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ids.toml"
    path.write_text(
        '[[identity]]\nmatch = "spiffe://prod/executor-*"\nfield = "uri"\nrole = "executor"\n'
        'tenants = ["Alpha"]\n\n[[identity]]\nmatch = "admin@ops.example"\nrole = "admin"\n'
        'tenants = ["*"]\nname = "ops"\n'
    )
    assert load_identities(path) == (
        EXECUTORS,
        MtlsIdentity("admin@ops.example", Role.ADMIN, frozenset({"*"}), "san", "ops"),
    )


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "no [[identity]] rules"),
        ("[identity]\nmatch = 'x'\n", "no [[identity]] rules"),
        ("[[identities]]\nmatch = 'x'\n", "unknown key 'identities'"),
        ("[[identity]]\nrole = 'viewer'\ntenants = ['a']\n", "#1: match is required"),
        ("[[identity]]\nmatch = 'x'\nrole = 'root'\ntenants = ['a']\n", "#1: role must be"),
        ("[[identity]]\nmatch = 'x'\nrole = 'viewer'\ntenants = 'a'\n", "#1: tenants must be"),
        ("[[identity]]\nmatch = 'x'\nrole = 'viewer'\ntenants = []\n", "#1: tenants must name"),
        (
            "[[identity]]\nmatch = 'x'\nrole = 'viewer'\ntenants = ['a']\nfield = 'ip'\n",
            "#1: field must be",
        ),
        (
            "[[identity]]\nmatch = 'x'\nrole = 'viewer'\ntenants = ['a']\nsubject = 'y'\n",
            "#1: unknown key 'subject'",
        ),
        ("[[identity]]\nmatch = 'x'\nrole = 'viewer'\ntenants = ['*', 'a']\n", "stands alone"),
        ("not toml = = ", "not valid TOML"),
    ],
)
def test_a_bad_rules_file_is_an_error_naming_it(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "ids.toml"
    path.write_text(text)
    with pytest.raises(IdentitiesError) as raised:
        load_identities(path)
    assert str(raised.value).startswith(str(path))
    assert complaint in str(raised.value)
