"""The keepalive settings of the peers and of the server must agree, or the server answers the
peers' pings with GOAWAY (too_many_pings) and their streams drop."""

from __future__ import annotations

from jobsched import keepalive
from jobsched.client import JobschedClient
from scheduler.server import SERVER_OPTIONS


def test_peers_ping_no_more_often_than_the_server_permits() -> None:
    server = dict(SERVER_OPTIONS)
    peer = dict(keepalive.channel_options())
    assert peer["grpc.keepalive_time_ms"] >= server["grpc.http2.min_ping_interval_without_data_ms"]
    assert peer["grpc.keepalive_timeout_ms"] < peer["grpc.keepalive_time_ms"]
    assert server["grpc.keepalive_permit_without_calls"] == 1  # executors' streams may idle


def test_the_server_sends_a_ping_flooder_away() -> None:
    server = dict(SERVER_OPTIONS)
    assert server["grpc.http2.min_ping_interval_without_data_ms"] > 0
    # 0 would tolerate any number of pings too soon.
    assert 0 < server["grpc.http2.max_ping_strikes"] <= 5


async def test_the_client_pings_no_more_often_than_the_server_permits() -> None:
    server = dict(SERVER_OPTIONS)
    client = JobschedClient("127.0.0.1:1")
    try:
        options = dict(client.channel_options)
        interval = server["grpc.http2.min_ping_interval_without_data_ms"]
        assert options["grpc.keepalive_time_ms"] >= interval
    finally:
        await client.close()
