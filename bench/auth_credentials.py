"""The credentials measurement 10 (bench/auth_overhead.py) makes for itself, in a temporary
directory: a CA with a server certificate (127.0.0.1) and a client certificate
(DNS executor.bench.example) for mutual TLS, the rules mapping that certificate to a principal,
and an RSA signing key with its JWKS and one JWT signed by it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://idp.bench.example"
AUDIENCE = "jobsched-bench"
CLIENT_NAME = "executor.bench.example"


@dataclass(frozen=True, slots=True)
class BenchCredentials:
    ca: Path
    cert: Path
    key: Path
    client_cert: bytes
    client_key: bytes
    identities: Path
    jwks: Path
    token: str

    @classmethod
    def make(cls, directory: Path) -> BenchCredentials:
        ca = trustme.CA(organization_name="jobsched bench")
        server = ca.issue_cert("127.0.0.1")
        client = ca.issue_cert(CLIENT_NAME)
        paths = {name: directory / name for name in ("ca.pem", "server.pem", "server.key")}
        ca.cert_pem.write_to_path(paths["ca.pem"])
        server.cert_chain_pems[0].write_to_path(paths["server.pem"])
        server.private_key_pem.write_to_path(paths["server.key"])
        identities = directory / "identities.toml"
        identities.write_text(
            f'[[identity]]\nmatch = "{CLIENT_NAME}"\nfield = "dns"\nrole = "admin"\n'
            'tenants = ["default"]\n'
        )
        signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(signing.public_key(), as_dict=True)
        jwks = directory / "jwks.json"
        jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "bench", "alg": "RS256"}]}))
        now = int(time.time())
        token = jwt.encode(
            {
                "sub": "bench",
                "iss": ISSUER,
                "aud": AUDIENCE,
                "iat": now,
                "exp": now + 86400,
                "permissions": ["default:admin"],
            },
            signing,
            algorithm="RS256",
            headers={"kid": "bench"},
        )
        return cls(
            ca=paths["ca.pem"],
            cert=paths["server.pem"],
            key=paths["server.key"],
            client_cert=client.cert_chain_pems[0].bytes(),
            client_key=client.private_key_pem.bytes(),
            identities=identities,
            jwks=jwks,
            token=token,
        )

    def mtls_server_args(self) -> list[str]:
        return [
            *("--tls-cert", str(self.cert), "--tls-key", str(self.key)),
            *("--tls-client-ca", str(self.ca)),
        ]

    def jwt_args(self) -> list[str]:
        return ["--jwt-jwks", str(self.jwks), "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE]

    def channel(self, address: str) -> grpc.aio.Channel:
        """A mutual-TLS channel presenting the client certificate."""
        credentials = grpc.ssl_channel_credentials(
            self.ca.read_bytes(), self.client_key, self.client_cert
        )
        return grpc.aio.secure_channel(address, credentials)
