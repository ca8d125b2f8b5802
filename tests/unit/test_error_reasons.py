"""One ErrorInfo reason per kind of refusal, and the metadata that saves clients from parsing
messages (the domain error tree of scheduler/domain/errors.py)."""

from __future__ import annotations

from google.rpc import error_details_pb2, status_pb2

from scheduler.api.interceptors import to_rich_status
from scheduler.domain import errors


def every_error_class() -> list[type[errors.JobschedError]]:
    found: list[type[errors.JobschedError]] = []
    pending: list[type[errors.JobschedError]] = [errors.JobschedError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == errors.__name__:  # not the test's own subclasses
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def info_of(exc: errors.JobschedError) -> error_details_pb2.ErrorInfo:
    rich = to_rich_status(exc, "req-1")
    [(_, raw)] = [m for m in rich.trailing_metadata if m[0] == "grpc-status-details-bin"]
    parsed = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    assert parsed.details[0].Unpack(info)
    return info


def test_every_kind_of_error_has_a_reason_of_its_own() -> None:
    classes = every_error_class()
    assert len(classes) > 20
    reasons = [cls.reason for cls in classes]
    repeated = sorted({r for r in reasons if reasons.count(r) > 1})
    assert repeated == []


def test_a_violation_gives_its_field_and_limit() -> None:
    exc = errors.InvalidArgument(
        [
            errors.FieldViolation("job.priority", "must be in [0, 100]", limit="[0, 100]"),
            errors.FieldViolation("job.type", "is required"),
        ]
    )
    info = info_of(exc)
    assert dict(info.metadata) == {
        "field": "job.priority",
        "limit": "[0, 100]",
        "request_id": "req-1",
    }


def test_a_reused_key_gives_the_job_that_holds_it() -> None:
    info = info_of(errors.IdempotencyKeyReused("used", job_id="j-1", key="k"))
    assert info.reason == "IDEMPOTENCY_KEY_REUSED"
    assert dict(info.metadata) == {"job_id": "j-1", "idempotency_key": "k", "request_id": "req-1"}


def test_size_limits_give_the_limit() -> None:
    info = info_of(errors.ArtifactTooLarge("too big", limit=1024))
    assert (info.reason, info.metadata["limit"]) == ("ARTIFACT_TOO_LARGE", "1024")


def test_internal_errors_give_no_metadata_beyond_the_request_id() -> None:
    class Leaky(errors.JobschedError):
        @property
        def metadata(self) -> dict[str, str]:
            return {"sql": "SELECT secret"}

    assert dict(info_of(Leaky()).metadata) == {"request_id": "req-1"}
