"""gRPC keepalive settings shared by the scheduler and its peers (executors, clients).

Both sides must agree: a client that pings more often than the server permits is sent GOAWAY
("too_many_pings") and loses its streams. So peers ping after KEEPALIVE_TIME_MS of silence and
give up after KEEPALIVE_TIMEOUT_MS without an answer, and the server accepts pings as often as
MIN_PING_INTERVAL_MS, which is below KEEPALIVE_TIME_MS. A peer that pings more often than that
(with nothing else on the connection) gets a strike per ping; past MAX_PING_STRIKES the server
answers GOAWAY (ENHANCE_YOUR_CALM, "too_many_pings") and closes that connection, so a ping flood
costs one connection, not the server (tests/faults/test_floods.py). These detect dead TCP links; the
application-level heartbeats on the Connect stream (every few seconds, both ways) detect
stalled peers and renew leases.
"""

from __future__ import annotations

KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
MIN_PING_INTERVAL_MS = 10_000
# Pings too soon tolerated on one connection before GOAWAY (gRPC core's default, stated here so
# that it is not left to a library upgrade; 0 would mean never).
MAX_PING_STRIKES = 2


def channel_options(*, without_calls: bool = True) -> list[tuple[str, int]]:
    """Keepalive options for a peer's channel (`without_calls`: ping an idle channel too)."""
    return [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", int(without_calls)),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def server_options() -> list[tuple[str, int]]:
    """Keepalive options for the scheduler's server: ping idle peers too, and accept their
    pings at the peers' rate."""
    return [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ("grpc.http2.max_pings_without_data", 0),
    ]
