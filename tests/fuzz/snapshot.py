"""Row counts and a checksum of every table of the fuzz database, to prove that a refused call
wrote nothing.

Every table of the public schema is compared (a table added by a migration is included without
a change here) except the bookkeeping that background loops rewrite while nobody calls:

- `leadership`: the elected replica renews its row (renewed_at, and epoch on winning) every
  leader tick;
- `scheduler_replicas`: each replica records its presence (last_seen) every presence interval;
- `audit_events`: the audit log records every mutating call whatever its outcome, a refused
  one included (issue 16: who tried to cancel what, and was told no); that row is the one thing
  a refused mutation writes, by design (tests/e2e/test_audit.py checks it is exactly one).

The first two are written by no RPC. Everything else stays put between calls because the fuzz server
runs on a frozen clock with no executor able to claim work (tests/fuzz/conftest.py).
"""

from __future__ import annotations

from sqlalchemy import text

from scheduler.store.database import Database

BOOKKEEPING = frozenset({"leadership", "scheduler_replicas", "audit_events"})


async def tables(db: Database) -> list[str]:
    async with db.read() as conn:
        rows = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        )
        return [name for (name,) in rows if name not in BOOKKEEPING]


def checksum_query(names: list[str]) -> str:
    """One statement: (table, rows, md5 of all its rows as text in a stable order) per table."""
    parts = [
        f"SELECT '{name}' AS name, count(*) AS rows, "
        f"md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) AS sum "
        f'FROM "{name}" t'
        for name in names
    ]
    return " UNION ALL ".join(parts)


class Snapshots:
    """Takes snapshots of the same tables (listed once)."""

    def __init__(self, db: Database, names: list[str]) -> None:
        self.db = db
        self.names = names
        self.query = text(checksum_query(names))

    @classmethod
    async def of(cls, db: Database) -> Snapshots:
        return cls(db, await tables(db))

    async def take(self) -> dict[str, tuple[int, str]]:
        async with self.db.read() as conn:
            rows = await conn.execute(self.query)
            return {name: (int(count), digest) for name, count, digest in rows}


def changed(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> list[str]:
    """The tables whose rows differ, with their counts before -> after."""
    return [
        f"{name}: {before[name][0]} -> {after[name][0]} rows"
        for name in before
        if before[name] != after.get(name)
    ]
