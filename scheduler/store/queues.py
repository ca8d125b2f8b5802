"""Statements on queue settings (QueueService)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.queues import QueueSettings
from scheduler.domain.retry import RetryOverrides
from scheduler.domain.waiting import ExecutorView
from scheduler.store.database import Database

_COLUMNS = """name, default_max_attempts, default_timeout, retry_initial_backoff,
    retry_multiplier, retry_max_backoff, retry_jitter, updated_at, paused, max_concurrency,
    retention"""


def _settings(row: Row[Any]) -> QueueSettings:
    m = row._mapping
    return QueueSettings(
        name=m["name"],
        default_max_attempts=m["default_max_attempts"],
        default_timeout=m["default_timeout"],
        retry=RetryOverrides(
            initial=m["retry_initial_backoff"],
            multiplier=m["retry_multiplier"],
            maximum=m["retry_max_backoff"],
            jitter=m["retry_jitter"],
        ),
        updated_at=m["updated_at"],
        paused=m["paused"],
        max_concurrency=m["max_concurrency"],
        retention=m["retention"],
    )


_SELECT = text(f"SELECT {_COLUMNS} FROM queues WHERE tenant = :tenant AND name = :name")
_LOCK = text(f"SELECT {_COLUMNS} FROM queues WHERE tenant = :tenant AND name = :name FOR UPDATE")
_ENSURE = text("""
INSERT INTO queues (tenant, name, updated_at) VALUES (:tenant, :name, :now)
ON CONFLICT (tenant, name) DO NOTHING
""")
_UPDATE = text(f"""
UPDATE queues SET default_max_attempts = :default_max_attempts,
    default_timeout = :default_timeout, retry_initial_backoff = :initial,
    retry_multiplier = :multiplier, retry_max_backoff = :maximum, retry_jitter = :jitter,
    max_concurrency = :max_concurrency, paused = :paused, retention = :retention,
    updated_at = :now
WHERE tenant = :tenant AND name = :name
RETURNING {_COLUMNS}
""")


class QueueStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, tenant: str, name: str) -> QueueSettings:
        """The queue's settings; empty ones for a queue never configured."""
        async with self.db.read() as conn:
            row = (await conn.execute(_SELECT, {"tenant": tenant, "name": name})).first()
        return QueueSettings(name=name) if row is None else _settings(row)

    async def update(
        self,
        tenant: str,
        name: str,
        change: Callable[[QueueSettings], QueueSettings],
        now: datetime,
    ) -> QueueSettings:
        """Apply `change` to the current settings under a row lock (concurrent updates of
        different fields do not lose each other's changes) and store the result."""
        async with self.db.transaction() as conn:
            return await _update(conn, tenant, name, change, now)


async def _update(
    conn: AsyncConnection,
    tenant: str,
    name: str,
    change: Callable[[QueueSettings], QueueSettings],
    now: datetime,
) -> QueueSettings:
    await conn.execute(_ENSURE, {"tenant": tenant, "name": name, "now": now})
    current = _settings((await conn.execute(_LOCK, {"tenant": tenant, "name": name})).one())
    updated = change(current)
    row = (
        await conn.execute(
            _UPDATE,
            {
                "tenant": tenant,
                "name": name,
                "default_max_attempts": updated.default_max_attempts,
                "default_timeout": updated.default_timeout,
                "initial": updated.retry.initial,
                "multiplier": updated.retry.multiplier,
                "maximum": updated.retry.maximum,
                "jitter": updated.retry.jitter,
                "max_concurrency": updated.max_concurrency,
                "paused": updated.paused,
                "retention": updated.retention,
                "now": now,
            },
        )
    ).one()
    return _settings(row)


# Facts for the waiting reasons of one job: its queue's settings, how many of the queue's jobs
# run, and the executors of every live replica. One statement. The running jobs matter only
# against a concurrency limit: they are counted for a limited queue only, and at most limit + 1
# of them (enough to tell "at the limit" from "over it"), through ix_jobs_running_queue, so the
# cost is bounded by the limit, not by the queue's running jobs.
_WAITING_FACTS = text(f"""
SELECT (SELECT row_to_json(q) FROM (SELECT {_COLUMNS} FROM queues
                                    WHERE tenant = :tenant AND name = :name) q) AS settings,
       (SELECT CASE WHEN q.max_concurrency IS NOT NULL THEN
                 (SELECT count(*) FROM (SELECT FROM jobs
                                        WHERE state = 'running' AND tenant = :tenant
                                          AND queue = :name
                                        LIMIT q.max_concurrency + 1) AS counted) END
          FROM queues q WHERE q.tenant = :tenant AND q.name = :name) AS running,
       (SELECT coalesce(jsonb_agg(e), '[]'::jsonb)
          FROM scheduler_replicas r, jsonb_array_elements(r.executors) e
         WHERE r.last_seen_at >= :live_since) AS executors
""")

_QUEUE_COUNTS = text("""
SELECT queue, state::text, type, count(*), min(created_at)
FROM jobs
WHERE tenant = :tenant AND state IN ('waiting', 'scheduled', 'queued', 'running')
GROUP BY queue, state, type
""")
_ALL_SETTINGS = text(f"SELECT {_COLUMNS} FROM queues WHERE tenant = :tenant")
_EXECUTORS = text("""
SELECT coalesce(jsonb_agg(e), '[]'::jsonb)
FROM scheduler_replicas r, jsonb_array_elements(r.executors) e
WHERE r.last_seen_at >= :live_since
""")


def _executor_views(value: Any) -> list[ExecutorView]:
    items = json.loads(value) if isinstance(value, str) else value
    return [
        ExecutorView(
            job_types=tuple(e["job_types"]),
            queues=tuple(e["queues"]),
            capacity=int(e["capacity"]),
            running=int(e["running"]),
            draining=bool(e.get("draining", False)),
        )
        for e in items or []
    ]


def _settings_from_json(name: str, value: Any) -> QueueSettings:
    if value is None:
        return QueueSettings(name=name)
    m = json.loads(value) if isinstance(value, str) else value

    def interval(text_value: Any) -> timedelta | None:
        return None if text_value is None else _parse_interval(str(text_value))

    return QueueSettings(
        name=m["name"],
        default_max_attempts=m["default_max_attempts"],
        default_timeout=interval(m["default_timeout"]),
        retry=RetryOverrides(
            initial=interval(m["retry_initial_backoff"]),
            multiplier=m["retry_multiplier"],
            maximum=interval(m["retry_max_backoff"]),
            jitter=m["retry_jitter"],
        ),
        updated_at=datetime.fromisoformat(m["updated_at"]),
        paused=bool(m["paused"]),
        max_concurrency=m["max_concurrency"],
        retention=interval(m["retention"]),
    )


def _parse_interval(value: str) -> timedelta:
    """row_to_json renders an interval as e.g. "00:00:05", "1 day 02:00:00" or "00:00:00.5"."""
    days = 0
    if "day" in value:
        count, _, value = value.partition(" day")
        days = int(count)
        value = value.lstrip("s").strip() or "00:00:00"
    hours, minutes, seconds = value.split(":")
    return timedelta(days=days, hours=int(hours), minutes=int(minutes), seconds=float(seconds))


_EVERY_TENANTS_SETTINGS = text(f"SELECT tenant, {_COLUMNS} FROM queues")


async def all_queue_settings(conn: AsyncConnection) -> dict[tuple[str, str], QueueSettings]:
    """Every stored queue's settings, by (tenant, name) (the queue-depth gauges)."""
    return {
        (str(r.tenant), str(r.name)): _settings(r)
        for r in await conn.execute(_EVERY_TENANTS_SETTINGS)
    }


async def live_executors(conn: AsyncConnection, live_since: datetime) -> list[ExecutorView]:
    """The executors connected to the replicas seen since `live_since`."""
    return _executor_views(
        (await conn.execute(_EXECUTORS, {"live_since": live_since})).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class WaitingFacts:
    settings: QueueSettings
    # The queue's RUNNING jobs, counted only when it has a max_concurrency (None otherwise), and
    # then only up to max_concurrency + 1: a value above the limit means "more than the limit".
    running: int | None
    executors: list[ExecutorView]


@dataclass(frozen=True, slots=True)
class QueueCounts:
    settings: QueueSettings
    by_state: dict[str, int]
    # (state, type) -> count, for the waiting reasons of QUEUED jobs
    by_state_and_type: dict[tuple[str, str], int]
    oldest_waiting: datetime | None


class QueueReads:
    """Reads for waiting reasons and ListQueues."""

    def __init__(self, db: Database, live_within: timedelta) -> None:
        self.db = db
        self.live_within = live_within

    async def waiting_facts(self, tenant: str, queue: str, now: datetime) -> WaitingFacts:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    _WAITING_FACTS,
                    {"tenant": tenant, "name": queue, "live_since": now - self.live_within},
                )
            ).one()
        return WaitingFacts(
            settings=_settings_from_json(queue, row[0]),
            running=None if row[1] is None else int(row[1]),
            executors=_executor_views(row[2]),
        )

    async def queue_counts(
        self, tenant: str, now: datetime
    ) -> tuple[list[QueueCounts], list[ExecutorView]]:
        async with self.db.transaction() as conn:
            counts = (await conn.execute(_QUEUE_COUNTS, {"tenant": tenant})).all()
            settings = {
                r[0]: _settings(r) for r in await conn.execute(_ALL_SETTINGS, {"tenant": tenant})
            }
            executors = _executor_views(
                (
                    await conn.execute(_EXECUTORS, {"live_since": now - self.live_within})
                ).scalar_one()
            )
        queues: dict[str, QueueCounts] = {}
        for name in sorted({r[0] for r in counts} | set(settings)):
            queues[name] = QueueCounts(
                settings=settings.get(name, QueueSettings(name=name)),
                by_state={},
                by_state_and_type={},
                oldest_waiting=None,
            )
        for queue, state, job_type, count, oldest in counts:
            entry = queues[queue]
            entry.by_state[state] = entry.by_state.get(state, 0) + int(count)
            entry.by_state_and_type[(state, job_type)] = int(count)
            if state != "running" and (
                entry.oldest_waiting is None or oldest < entry.oldest_waiting
            ):
                queues[queue] = entry = QueueCounts(
                    entry.settings, entry.by_state, entry.by_state_and_type, oldest
                )
        return list(queues.values()), executors
