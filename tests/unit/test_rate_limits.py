"""Token buckets, the rate limit policy and the bounded bucket table, on a fake clock (the
`now` each call is given): no sleeping."""

from __future__ import annotations

import pytest

from scheduler.domain.rate_limits import (
    DEFAULT_RATE,
    BucketTable,
    RateLimit,
    RateLimitPolicy,
    TokenBucket,
    parse_rate,
)


def test_a_bucket_allows_its_burst_then_refuses_with_the_wait_for_the_next_token() -> None:
    bucket = TokenBucket.full(RateLimit(rate=10, burst=3), now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.1)  # one token every 1/10 s
    assert bucket.take(100.05) == pytest.approx(0.05)  # half a token came meanwhile
    assert bucket.take(100.1) == 0.0
    assert bucket.take(100.1) == pytest.approx(0.1)


def test_a_refused_call_takes_no_token() -> None:
    bucket = TokenBucket.full(RateLimit(rate=1, burst=1), now=0.0)
    assert bucket.take(0.0) == 0.0
    for _ in range(100):
        assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) == 0.0


def test_an_idle_bucket_refills_to_its_burst_and_no_further() -> None:
    bucket = TokenBucket.full(RateLimit(rate=100, burst=5), now=0.0)
    for _ in range(5):
        bucket.take(0.0)
    assert not bucket.is_full(0.0)
    assert bucket.is_full(3600.0)
    assert [bucket.take(3600.0) for _ in range(6)].count(0.0) == 5


def test_time_going_backwards_gives_no_tokens() -> None:
    bucket = TokenBucket.full(RateLimit(rate=1, burst=1), now=10.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(5.0) > 0


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("10", RateLimit(10, 20)),
        ("10/15", RateLimit(10, 15)),
        ("0.2", RateLimit(0.2, 1)),
        (" 5/1 ", RateLimit(5, 1)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_rates_parse(text: str, limit: RateLimit | None) -> None:
    assert parse_rate(text) == limit


@pytest.mark.parametrize("text", ["", "fast", "0", "-1", "10/0", "10/x", "inf", "nan", "1/2/3"])
def test_bad_rates_are_refused_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_rate(text)


def test_the_policy_takes_roles_tenants_and_stream_counts() -> None:
    policy = RateLimitPolicy.parse(
        ["viewer=5/10", "ADMIN=off", "anonymous=50"],
        ["acme=1/2", "free=off"],
        ["viewer=3", "executor=off"],
    )
    assert policy.rate_for("viewer", None) == ("", RateLimit(5, 10))
    assert policy.rate_for("viewer", "other") == ("", RateLimit(5, 10))
    assert policy.rate_for("admin", None) == ("", None)
    assert policy.rate_for("submitter", None) == ("", DEFAULT_RATE)  # untouched: default
    assert policy.rate_for("anonymous", None) == ("", RateLimit(50, 100))
    # A tenant override is a bucket of its own (scope), whatever the role.
    assert policy.rate_for("admin", "acme") == ("acme", RateLimit(1, 2))
    assert policy.rate_for("viewer", "free") == ("free", None)
    assert policy.streams_for("viewer") == 3
    assert policy.streams_for("executor") is None
    assert policy.streams_for("operator") == 100


def test_by_default_anonymous_callers_are_not_limited_and_roles_are() -> None:
    policy = RateLimitPolicy()
    assert not policy.limits_anonymous
    assert RateLimitPolicy.parse(["anonymous=5"]).limits_anonymous
    assert RateLimitPolicy.parse(stream_limits=["anonymous=5"]).limits_anonymous
    assert RateLimitPolicy.parse(tenant_rate_limits=["acme=5"]).limits_anonymous
    assert policy.rate_for("anonymous", None) == ("", None)
    assert policy.streams_for("anonymous") is None
    for role in ("viewer", "submitter", "operator", "admin", "executor"):
        assert policy.rate_for(role, None)[1] == DEFAULT_RATE
        assert policy.streams_for(role) is not None


@pytest.mark.parametrize(
    ("rates", "tenants", "streams", "message"),
    [
        (["root=1"], [], [], "not a role"),
        (["viewer"], [], [], "ROLE=VALUE"),
        (["viewer=fast"], [], [], "RATE"),
        ([], ["=1"], [], "TENANT=VALUE"),
        ([], [], ["viewer=0"], "number of streams"),
        ([], [], ["viewer=many"], "number of streams"),
    ],
)
def test_bad_assignments_are_refused_naming_the_problem(
    rates: list[str], tenants: list[str], streams: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimitPolicy.parse(rates, tenants, streams)


def test_callers_have_buckets_of_their_own() -> None:
    table = BucketTable()
    limit = RateLimit(rate=1, burst=2)
    assert [table.take(("a", ""), limit, 0.0) for _ in range(3)][-1] > 0
    assert table.take(("b", ""), limit, 0.0) == 0.0
    assert table.take(("a", "acme"), limit, 0.0) == 0.0  # another scope of the same caller


def test_full_buckets_are_dropped_so_idle_callers_cost_no_memory() -> None:
    table = BucketTable()
    limit = RateLimit(rate=10, burst=10)
    for caller in range(1000):
        table.take((f"caller-{caller}", ""), limit, 0.0)
    assert len(table) == 1000
    # A second later every one of them is full again: the next call sweeps them out.
    table.take(("late", ""), limit, 1.0)
    assert len(table) == 1


def test_the_table_never_holds_more_than_max_buckets() -> None:
    table = BucketTable(max_buckets=10)
    limit = RateLimit(rate=0.001, burst=1)  # never refills within the test
    for caller in range(100):
        assert table.take((f"caller-{caller}", ""), limit, 0.0) == 0.0
        assert len(table) <= 10
    # The most recent callers are kept, and still limited.
    assert table.take(("caller-99", ""), limit, 0.0) > 0


def test_a_changed_limit_starts_a_new_full_bucket() -> None:
    table = BucketTable()
    assert table.take(("a", ""), RateLimit(1, 1), 0.0) == 0.0
    assert table.take(("a", ""), RateLimit(1, 1), 0.0) > 0
    assert table.take(("a", ""), RateLimit(2, 1), 0.0) == 0.0


def test_waiting_looks_without_taking() -> None:
    table = BucketTable()
    limit = RateLimit(rate=1, burst=1)
    assert table.wait(("a", ""), limit, 0.0) == 0.0  # no bucket: full
    assert table.take(("a", ""), limit, 0.0) == 0.0
    for _ in range(3):
        assert table.wait(("a", ""), limit, 0.5) == pytest.approx(0.5)
    assert table.wait(("a", ""), limit, 1.0) == 0.0
    assert table.take(("a", ""), limit, 1.0) == 0.0
