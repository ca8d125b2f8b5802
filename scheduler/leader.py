"""Leader election: a PostgreSQL advisory lock plus a fencing epoch (a start/stop service).

Exactly one replica runs the singleton duties (lease rescue, later cron and retention). Each
replica holds one dedicated asyncpg connection outside the pool (never through a
transaction-mode pooler: the lock belongs to the session), with TCP keepalives and a short
statement timeout set on the server side of that session.

    start ──► FOLLOWER ──── tick: pg_try_advisory_lock(KEY) ─── false ──► leadership.renewed_at
                 ▲              │ true                                   older than takeover_after?
                 │              ▼                                         yes: pg_terminate_backend
                 │          bump leadership.epoch (same connection)       (the holder's session,
                 │              │ epoch = E, deadline = now + renew_timeout  so its lock goes);
                 │              ▼                                          retry next tick
                 │           LEADER ── tick: probe = renew renewed_at where epoch is still E,
                 │              │              and check this backend still holds the lock
                 │              │              ── ok ──► deadline = now + renew_timeout
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

Takeover time: when the leader's process dies or resigns, the server ends its session at once
and a follower takes the lock at its next tick (<= tick). When the leader freezes, or its host
or link dies, a follower takes over after takeover_after + tick (server-side TCP keepalives,
idle 5 s then 3 probes 1 s apart, would end a dead link's session too). Defaults: tick 1 s,
renew_timeout 5 s, so <= 1 s and about 11 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
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

# A follower's check: terminate the session of a holder that stopped renewing.
_TERMINATE_STALE = """
SELECT pg_terminate_backend(l.backend_pid) FROM leadership l
WHERE l.id = 1 AND l.renewed_at < now() - make_interval(secs => $1)
  AND EXISTS (SELECT 1 FROM pg_locks
              WHERE locktype = 'advisory' AND pid = l.backend_pid AND granted
                AND ((classid::bigint << 32) | objid::bigint) = $2)
"""

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
        connect_timeout: float = 5.0,
        on_change: Callable[[Role], None] = lambda role: None,
    ) -> None:
        if renew_timeout <= tick:
            raise ValueError("renew_timeout must be longer than tick")
        self.takeover_after = 2 * renew_timeout
        self.dsn = dsn
        self.replica_id = replica_id
        self.tick = tick
        self.renew_timeout = renew_timeout
        self.connect_timeout = connect_timeout
        self.on_change = on_change
        self.role = Role.FOLLOWER
        self.epoch: int | None = None
        self.since: datetime | None = None
        self._deadline = 0.0  # time.monotonic() after which this leader stops acting
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

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
                await self._step_down(f"database error: {exc}")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick)

    async def _tick(self) -> None:
        if self.role is Role.LEADER and time.monotonic() >= self._deadline:
            # Too long since the last good probe (frozen, or probes too slow): whatever the
            # database thinks, stop acting now.
            await self._step_down("renew deadline passed")
            return
        conn = self._conn
        if conn is None or conn.is_closed():
            conn = self._conn = await asyncpg.connect(
                self.dsn, timeout=self.connect_timeout, server_settings=_SESSION_SETTINGS
            )
        if self.role is Role.FOLLOWER:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                terminated = await conn.fetchval(_TERMINATE_STALE, self.takeover_after, LOCK_KEY)
                if terminated:
                    log.warning(
                        "terminated the session of a leader that stopped renewing",
                        extra={"fields": {"event": "leader.stale_leader_terminated"}},
                    )
                return
            row = await conn.fetchrow(_BUMP_EPOCH, self.replica_id)
            assert row is not None
            self._deadline = time.monotonic() + self.renew_timeout
            self.epoch, self.since = int(row[0]), row[1]
            self._set_role(Role.LEADER)
            log.info(
                "elected leader", extra={"fields": {"event": "leader.elected", "epoch": self.epoch}}
            )
            return
        started = time.monotonic()
        holds_lock = await conn.fetchval(_PROBE, LOCK_KEY, self.epoch)
        if not holds_lock:
            await self._step_down("lost the lock or the epoch")
            return
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
