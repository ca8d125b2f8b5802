"""The scheduler's JWT and mTLS identity options (scheduler/auth/options.py): flags,
environment variables and the configuration file reach ServerSettings; combinations that
cannot work are refused with one line naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from scheduler.auth.jwt import DEFAULT_ALGORITHMS, JwtSettings
from scheduler.domain.auth import Role
from scheduler.flags import parse_args, settings_from
from tests.identities import SigningKey, write_jwks

KEY = SigningKey.make("k")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JOBSCHED_CONFIG", "JOBSCHED_AUTH", "JOBSCHED_BOOTSTRAP_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("JWKS", "ISSUER", "AUDIENCE", "LEEWAY", "PERMISSIONS_CLAIM", "ALGORITHMS"):
        monkeypatch.delenv(f"JOBSCHED_JWT_{name}", raising=False)
    monkeypatch.delenv("JOBSCHED_MTLS_IDENTITIES", raising=False)


def jwt_flags(jwks: Path) -> list[str]:
    return ["--auth", "required", "--jwt-jwks", str(jwks), "--jwt-issuer", "https://idp"]


def test_jwt_flags_reach_the_settings(tmp_path: Path) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", KEY)
    settings = settings_from(
        parse_args(
            [
                *jwt_flags(jwks),
                "--jwt-audience",
                "jobsched",
                "--jwt-leeway",
                "5",
                "--jwt-permissions-claim",
                "realm_access.roles",
                "--jwt-algorithm",
                "ES256",
            ]
        )
    )
    assert settings.jwt == JwtSettings(
        jwks=str(jwks),
        issuer="https://idp",
        audience="jobsched",
        leeway=5.0,
        permissions_claim="realm_access.roles",
        algorithms=("ES256",),
    )


def test_jwt_from_the_environment_and_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "jobsched.toml"
    config.write_text(
        '[scheduler]\nauth = "required"\njwt_jwks = "https://idp.example/jwks.json"\n'
        'jwt_issuer = "https://idp.example"\njwt_algorithms = ["RS256", "PS256"]\n'
    )
    monkeypatch.setenv("JOBSCHED_JWT_AUDIENCE", "from-env")
    settings = settings_from(parse_args(["--config", str(config)]))
    assert settings.jwt is not None
    assert (settings.jwt.jwks, settings.jwt.audience) == (
        "https://idp.example/jwks.json",
        "from-env",
    )
    assert settings.jwt.algorithms == ("RS256", "PS256")
    assert settings.jwt.leeway == 30.0
    monkeypatch.delenv("JOBSCHED_JWT_AUDIENCE")
    assert settings_from(parse_args([])).jwt is None


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ([], "an audience is required"),
        (["--jwt-audience", ""], "an audience is required"),
    ],
)
def test_jwt_needs_an_audience(tmp_path: Path, extra: list[str], complaint: str) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", KEY)
    with pytest.raises(ValueError, match=complaint):
        settings_from(parse_args([*jwt_flags(jwks), *extra]))


def test_symmetric_and_none_algorithms_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("HS256", "none"):
        with pytest.raises(SystemExit) as exited:
            parse_args(["--jwt-algorithm", name])
        assert exited.value.code == 2
        assert f"{name!r} is not allowed" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'HS512' is not allowed"):
        JwtSettings(jwks="j.json", issuer="i", audience="a", algorithms=("HS512",))
    assert "none" not in DEFAULT_ALGORITHMS


def test_unusable_jwt_combinations_are_refused(tmp_path: Path) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", KEY)
    with pytest.raises(ValueError, match="--jwt-issuer needs --jwt-jwks"):
        settings_from(parse_args(["--auth", "required", "--jwt-issuer", "https://idp"]))
    with pytest.raises(ValueError, match="need auth required"):
        settings_from(
            parse_args(["--jwt-jwks", str(jwks), "--jwt-issuer", "i", "--jwt-audience", "a"])
        )
    (tmp_path / "bad.json").write_text('{"keys": "no"}')
    with pytest.raises(ValueError, match="not a JSON Web Key Set"):
        settings_from(parse_args([*jwt_flags(tmp_path / "bad.json"), "--jwt-audience", "a"]))
    with pytest.raises(ValueError, match="cannot be read"):
        settings_from(parse_args([*jwt_flags(tmp_path / "absent.json"), "--jwt-audience", "a"]))


def test_mtls_identities_need_mutual_tls_and_reach_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "ids.toml"
    rules.write_text('[[identity]]\nmatch = "spiffe://p/*"\nrole = "executor"\ntenants = ["a"]\n')
    with pytest.raises(ValueError, match="--mtls-identities needs --tls-client-ca"):
        settings_from(parse_args(["--auth", "required", "--mtls-identities", str(rules)]))
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    server.cert_chain_pems[0].write_to_path(tmp_path / "s.pem")
    server.private_key_pem.write_to_path(tmp_path / "s.key")
    tls = ["--tls-cert", str(tmp_path / "s.pem"), "--tls-key", str(tmp_path / "s.key")]
    monkeypatch.setenv("JOBSCHED_MTLS_IDENTITIES", str(rules))
    settings = settings_from(
        parse_args(["--auth", "required", *tls, "--tls-client-ca", str(tmp_path / "ca.pem")])
    )
    [rule] = settings.mtls_identities
    assert (rule.match, rule.role, rule.tenants) == (
        "spiffe://p/*",
        Role.EXECUTOR,
        frozenset({"a"}),
    )
