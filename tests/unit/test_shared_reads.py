"""SharedReads: callers of one key at about the same time share a read, a caller never gets a
read that started before it asked, errors reach every caller of the read, and a caller that
gives up does not cancel the read for the others."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.api.shared_reads import SharedReads


class Store:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = asyncio.Event()
        self.version = 0
        self.fail: Exception | None = None

    async def read(self, key: str) -> tuple[str, int]:
        self.started.append(key)
        seen = self.version  # what the read sees is what was there when it started
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return key, seen


async def test_callers_during_a_read_share_the_next_one_which_sees_later_changes() -> None:
    store = Store()
    reads: SharedReads[str, tuple[str, int]] = SharedReads(store.read)
    first = [asyncio.create_task(reads.get("a")) for _ in range(10)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.started == ["a"]  # one read for the ten
    store.version = 1  # a change after the first read started...
    later = [asyncio.create_task(reads.get("a")) for _ in range(10)]  # ...that these ask about
    other = asyncio.create_task(reads.get("b"))
    store.release.set()
    assert {await t for t in first} == {("a", 0)}
    assert {await t for t in later} == {("a", 1)}  # the next read, started after the change
    assert await other == ("b", 1)
    assert sorted(store.started) == ["a", "a", "b"]
    assert reads.reads == 3
    assert len(reads) == 0  # nothing kept once the reads are done


async def test_an_error_reaches_every_caller_and_the_next_read_is_fresh() -> None:
    store = Store()
    reads: SharedReads[str, tuple[str, int]] = SharedReads(store.read)
    store.fail = LookupError("gone")
    callers = [asyncio.create_task(reads.get("a")) for _ in range(3)]
    store.release.set()
    for caller in callers:
        with pytest.raises(LookupError):
            await caller
    store.fail = None
    assert await reads.get("a") == ("a", 0)


async def test_a_caller_that_gives_up_leaves_the_read_to_the_others() -> None:
    store = Store()
    reads: SharedReads[str, tuple[str, int]] = SharedReads(store.read)
    quitter = asyncio.create_task(reads.get("a"))
    stayer = asyncio.create_task(reads.get("a"))
    await asyncio.sleep(0)
    quitter.cancel()
    store.release.set()
    assert await stayer == ("a", 0)
    assert quitter.cancelled()
