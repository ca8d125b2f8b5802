"""encoded_streams: the changed serializer passes already encoded messages through and encodes
the rest as before; only streaming methods can be changed."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.api.encoded_streams import add_with_encoded_streams, passing_encoded


def test_bytes_pass_through_and_messages_are_encoded() -> None:
    serialize = passing_encoded(job_service_pb2.WatchJobResponse.SerializeToString)
    message = job_service_pb2.WatchJobResponse(sequence=7, progress=job_pb2.Progress(percent=5))
    encoded = message.SerializeToString()
    assert serialize(encoded) is encoded
    assert serialize(message) == encoded


class _Server:
    def __init__(self) -> None:
        self.generic: object = None
        self.registered: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic = handlers

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.registered = handlers


def test_only_the_named_methods_change() -> None:
    server = _Server()
    # The handlers are only looked at, never called.
    servicer: Any = type("Servicer", (job_service_pb2_grpc.JobServiceServicer,), {})
    add_with_encoded_streams(
        job_service_pb2_grpc.add_JobServiceServicer_to_server, servicer, server, ["WatchJob"]
    )
    watch = server.registered["WatchJob"]
    assert watch.response_serializer is not None
    assert watch.response_serializer(b"\x08\x07") == b"\x08\x07"
    status = server.registered["GetJobStatus"]
    assert status.response_serializer is job_service_pb2.GetJobStatusResponse.SerializeToString
    assert server.generic is not None
    with pytest.raises(ValueError, match="streaming"):
        add_with_encoded_streams(
            job_service_pb2_grpc.add_JobServiceServicer_to_server,
            servicer,
            _Server(),
            ["GetJobStatus"],
        )
