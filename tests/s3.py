"""A real S3-compatible server on loopback for the tests: moto's, in a thread of the test
process, on a free port, with a bucket and the AWS variables boto3 reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    def client(self) -> Any:
        return boto3.session.Session().client("s3", endpoint_url=self.endpoint)

    def keys(self) -> list[str]:
        response = self.client().list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in response.get("Contents", []))


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto keeps its buckets per process: a bucket of its own for each test.
    s3 = S3Server(endpoint=f"http://{host}:{port}", bucket=f"jobsched-{uuid.uuid4().hex[:12]}")
    s3.client().create_bucket(Bucket=s3.bucket)
    yield s3
    server.stop()
