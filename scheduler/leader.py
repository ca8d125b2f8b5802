"""Leader election: a PostgreSQL advisory lock plus a fencing epoch (a start/stop service).

Exactly one replica runs the singleton duties (lease rescue, later cron and retention). Each
replica holds one dedicated asyncpg connection outside the pool (never through a
transaction-mode pooler: the lock belongs to the session), with TCP keepalives and a short
statement timeout set on the server side of that session.

    start ──► FOLLOWER ──── tick: pg_try_advisory_lock(KEY) ─── false ──► leadership.renewed_at
                 ▲              │ true           (one statement with       older than takeover_after?
                 │              │                 the stale check)         yes: pg_terminate_backend
                 │              ▼                                         (the holder's session,
                 │          bump leadership.epoch (same connection)        so its lock goes);
                 │              │ epoch = E, deadline = now + renew_timeout  retry next tick
                 │              ▼
                 │           LEADER ── every renew_interval: probe = renew renewed_at where epoch
                 │              │        is still E, and check this backend still holds the lock
                 │              │        (one autocommit statement)
                 │              │              ── ok ──► deadline = probe start + renew_timeout
                 │              │
                 │              │ probe error or timeout, lock or epoch not ours,
                 │              │ local deadline passed (e.g. the process was stopped), stop()
                 │              ▼
                 └──────── STEP DOWN: close the connection (the server drops the lock
                           with the session), forget E, reconnect as a follower

`is_leader` is true only while the local deadline has not passed, so a leader that was frozen
(SIGSTOP, a long GC pause, a partition) stops acting the moment it wakes, before its next probe.
That alone is not enough (it could be frozen mid-transaction), so every leader-only transaction
starts with `check_epoch` (SELECT epoch ... FOR SHARE): once a new leader has bumped the epoch,
the deposed leader's writes are refused even if it has not noticed yet. The FOR SHARE lock also
makes the new leader's bump wait for any leader-only transaction of the old epoch in flight.

A frozen leader's session looks alive to the server (the kernel still answers TCP), so it would
keep the lock forever: every probe therefore renews leadership.renewed_at (database clock), and
a follower that finds it older than takeover_after (2 x renew_timeout: by then the old leader has
stopped acting on its own deadline, if it runs at all) terminates the holder's session.

The leader probes every renew_interval (default max(tick, renew_timeout / 3): 1.67 s), not
every tick, to keep an idle leader's statements down: a probe that errors steps down at once, so
the spare time before the deadline only absorbs slow probes (the statement timeout is 2 s) and
event-loop lag. A lost lock connection (killed session, server restart) wakes the loop at once
(asyncpg's termination listener), so the leader steps down without waiting for its next probe.
Followers keep probing every tick: that is what bounds the takeover time.

Takeover time: when the leader's process dies or resigns, the server ends its session at once
and a follower takes the lock at its next tick (<= tick). When the leader freezes, or its host
or link dies, a follower takes over after takeover_after + tick (server-side TCP keepalives,
idle 5 s then 3 probes 1 s apart, would end a dead link's session too). Defaults: tick 1 s,
renew_timeout 5 s, so <= 1 s and about 11 s.

`answered_at` is the time.monotonic() of the last statement this connection completed: the
health probe takes it as proof that the database answers (scheduler/api/health.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime

import asyncpg

log = logging.getLogger("jobsched.leader")

# pg_try_advisory_lock key: "jobsched" in ASCII. Advisory locks are per database.
LOCK_KEY = 0x6A6F627363686564

_SESSION_SETTINGS = {
    "application_name": "jobsched-leader",
    "statement_timeout": "2000",  # ms
    "idle_in_transaction_session_timeout": "5000",
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "3",
}

_BUMP_EPOCH = """
INSERT INTO leadership (id, epoch, leader, since, renewed_at, backend_pid)
VALUES (1, 1, $1, now(), now(), pg_backend_pid())
ON CONFLICT (id) DO UPDATE SET epoch = leadership.epoch + 1, leader = $1, since = now(),
    renewed_at = now(), backend_pid = pg_backend_pid()
RETURNING epoch, since
"""

_HOLDS_LOCK = """
EXISTS (SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
          AND ((classid::bigint << 32) | objid::bigint) = $1)
"""

# The leader's probe: renew, but only while the epoch is still ours; no row = deposed.
_PROBE = f"""
UPDATE leadership SET renewed_at = now()
WHERE id = 1 AND epoch = $2 AND backend_pid = pg_backend_pid()
RETURNING {_HOLDS_LOCK}
"""

# A follower's tick, one statement: try the lock and, only when that fails, terminate the
# session of a holder that stopped renewing (the subquery is correlated with the attempt, so it
# never runs once the lock is ours). Returns (got the lock, terminated a stale holder).
_CAMPAIGN = """
WITH attempt AS MATERIALIZED (SELECT pg_try_advisory_lock($2) AS got)
SELECT attempt.got,
       COALESCE((SELECT bool_or(pg_terminate_backend(l.backend_pid)) FROM leadership l
                 WHERE NOT attempt.got
                   AND l.id = 1 AND l.renewed_at < now() - make_interval(secs => $1)
                   AND EXISTS (SELECT 1 FROM pg_locks
                               WHERE locktype = 'advisory' AND pid = l.backend_pid AND granted
                                 AND ((classid::bigint << 32) | objid::bigint) = $2)),
                false)
FROM attempt
"""

# A leader woken this much before its renew is due probes anyway (timer granularity).
_EARLY = 0.01

_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Role(enum.StrEnum):
    FOLLOWER = "follower"
    LEADER = "leader"


class LeaderElector:
    def __init__(
        self,
        dsn: str,
        replica_id: str,
        *,
        tick: float = 1.0,
        renew_timeout: float = 5.0,
        renew_interval: float | None = None,
        connect_timeout: float = 5.0,
        on_change: Callable[[Role], None] = lambda role: None,
        on_database_error: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_database_error` is called when the lock connection fails (the lease rescue waits
        for the store to have answered a while: Database.note_unavailable)."""
        if renew_timeout <= tick:
            raise ValueError("renew_timeout must be longer than tick")
        if renew_interval is None:
            renew_interval = max(tick, renew_timeout / 3)
        if not 0 < renew_interval < renew_timeout:
            raise ValueError("renew_interval must be positive and shorter than renew_timeout")
        # Followers terminate a holder whose renewed_at is older than this: far longer than the
        # leader's renew interval, and than its own renew deadline (it stops acting by then).
        self.takeover_after = 2 * renew_timeout
        self.renew_interval = renew_interval
        self.dsn = dsn
        self.replica_id = replica_id
        self.tick = tick
        self.renew_timeout = renew_timeout
        self.connect_timeout = connect_timeout
        self.on_change = on_change
        self.on_database_error = on_database_error
        self.role = Role.FOLLOWER
        self.epoch: int | None = None
        self.since: datetime | None = None
        self._deadline = 0.0  # time.monotonic() after which this leader stops acting
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._renewed_at = 0.0  # time.monotonic() at the start of the last good probe
        self.answered_at = -math.inf  # time.monotonic() of the last completed statement

    @property
    def is_leader(self) -> bool:
        """Leading and renewed recently enough to act. Leader-only transactions must still
        check the epoch (`scheduler.store.leadership.check_epoch`)."""
        return self.role is Role.LEADER and time.monotonic() < self._deadline

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leader-election")

    async def stop(self) -> None:
        """Resign at once (a follower takes over at its next tick) and stop campaigning."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._step_down("stopped", unlock=True)

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except _CONNECTION_ERRORS as exc:
                self.on_database_error()
                await self._step_down(f"database error: {exc}")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sleep())

    def _sleep(self) -> float:
        """Until the next tick: a follower campaigns every tick; a leader renews every
        renew_interval after its last good probe started (and never past its deadline)."""
        if self.role is not Role.LEADER:
            return self.tick
        now = time.monotonic()
        next_probe = self._renewed_at + self.renew_interval
        return max(0.0, min(next_probe, self._deadline) - now)

    def _connection_lost(self, conn: object) -> None:
        """asyncpg's termination listener: the lock connection closed (killed, the server went
        away): look at it now rather than at the next probe."""
        if conn is self._conn:
            self._wake.set()

    async def _tick(self) -> None:
        if self.role is Role.LEADER and time.monotonic() >= self._deadline:
            # Too long since the last good probe (frozen, or probes too slow): whatever the
            # database thinks, stop acting now.
            await self._step_down("renew deadline passed")
            return
        conn = self._conn
        if self.role is Role.LEADER and (conn is None or conn.is_closed()):
            # The session held the lock: it is gone with the session.
            await self._step_down("lost the lock connection")
            return
        if conn is None or conn.is_closed():
            conn = self._conn = await asyncpg.connect(
                self.dsn, timeout=self.connect_timeout, server_settings=_SESSION_SETTINGS
            )
            conn.add_termination_listener(self._connection_lost)
        if self.role is Role.FOLLOWER:
            row = await conn.fetchrow(_CAMPAIGN, self.takeover_after, LOCK_KEY)
            self.answered_at = time.monotonic()
            assert row is not None
            if not row[0]:
                if row[1]:
                    log.warning(
                        "terminated the session of a leader that stopped renewing",
                        extra={"fields": {"event": "leader.stale_leader_terminated"}},
                    )
                return
            started = time.monotonic()
            row = await conn.fetchrow(_BUMP_EPOCH, self.replica_id)
            assert row is not None
            self.answered_at = time.monotonic()
            self._renewed_at = started
            self._deadline = started + self.renew_timeout
            self.epoch, self.since = int(row[0]), row[1]
            self._set_role(Role.LEADER)
            log.info(
                "elected leader", extra={"fields": {"event": "leader.elected", "epoch": self.epoch}}
            )
            return
        started = time.monotonic()
        if started < self._renewed_at + self.renew_interval - _EARLY:
            return  # woken early (a spurious wake-up): the renew is not due yet
        holds_lock = await conn.fetchval(_PROBE, LOCK_KEY, self.epoch)
        self.answered_at = time.monotonic()
        if not holds_lock:
            await self._step_down("lost the lock or the epoch")
            return
        self._renewed_at = started
        self._deadline = started + self.renew_timeout

    async def _step_down(self, reason: str, *, unlock: bool = False) -> None:
        conn, self._conn = self._conn, None
        was_leader = self.role is Role.LEADER
        self.role = Role.FOLLOWER
        self.epoch = None
        self.since = None
        self._deadline = 0.0
        if conn is not None and not conn.is_closed():
            if unlock and was_leader:
                with contextlib.suppress(*_CONNECTION_ERRORS):
                    await asyncio.wait_for(conn.close(), 2)
            conn.terminate()  # the session ends, and the lock with it
        if was_leader:
            fields = {"event": "leader.stepped_down", "reason": reason}
            log.log(
                logging.INFO if unlock else logging.WARNING,
                "stepped down",
                extra={"fields": fields},
            )
            self._set_role(Role.FOLLOWER)

    def _set_role(self, role: Role) -> None:
        self.role = role
        self.on_change(role)
