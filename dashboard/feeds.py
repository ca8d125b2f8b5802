"""One WatchJob stream per (credential, tenant, job), shared by every viewer of that job who
calls with the same credential: 200 tabs on one job's page cost the scheduler one stream, not
200 (its per-subscriber work was most of the latency at 200 viewers, bench/dashboard_sse.py).

A feed keeps the job's latest snapshot (transitions and progress applied to it), so a viewer
joining late starts from the current state, then gets what follows into its own bounded buffer
(sse.JobBuffer). Viewers with other credentials get feeds of their own, so roles and tenancy
hold as with one stream each. The feed owns its client (a channel of its own: a viewer signing
out does not end the others' stream) and ends, closing it, when the job has ended or its last
viewer left."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from dashboard.flags import DashboardSettings
from dashboard.sse_buffers import JobBuffer, watch_item
from jobsched.async_client import AsyncClient
from jobsched.errors import JobschedError

Key = tuple[str | None, str | None, str]  # (API key, tenant, job id)


class Feed:
    def __init__(self, feeds: Feeds, key: Key, client: AsyncClient) -> None:
        self.feeds, self.key, self.client = feeds, key, client
        self.viewers: set[JobBuffer] = set()
        self.snapshot: dict[str, Any] | None = None
        self.sequence = 0
        self.task: asyncio.Task[None] | None = None

    def join(self, buffer: JobBuffer) -> None:
        if self.snapshot is not None:
            buffer.put("snapshot", dict(self.snapshot), self.sequence)
        self.viewers.add(buffer)

    def _send(self, name: str, data: dict[str, Any], sequence: int | None) -> None:
        for viewer in self.viewers:
            viewer.put(name, data, sequence)

    async def pump(self) -> None:
        try:
            async for item in self.client.raw.watch(self.key[2]):
                name, data = watch_item(item)
                self.sequence = max(self.sequence, item.sequence)
                if name == "snapshot":
                    self.snapshot = data
                elif self.snapshot is not None and name == "transition":
                    self.snapshot["state"] = data["to"]
                    self.snapshot["attempt"] = data["attempt"] or self.snapshot["attempt"]
                elif self.snapshot is not None and name == "progress":
                    self.snapshot["progress"] = data
                self._send(name, data, item.sequence)
            self._send("end", {}, None)
        except JobschedError as err:
            self._send("problem", {"message": err.message, "reason": err.reason}, None)
        finally:
            self.feeds.forget(self)
            for viewer in self.viewers:
                viewer.close()
            await self.client.close()


class Feeds:
    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self._feeds: dict[Key, Feed] = {}

    def __len__(self) -> int:
        return len(self._feeds)

    def join(self, token: str | None, tenant: str | None, job_id: str, buffer: JobBuffer) -> Feed:
        key = (token, tenant or self.settings.tenant, job_id)
        feed = self._feeds.get(key)
        if feed is None:
            client = AsyncClient(
                list(self.settings.schedulers),
                tenant=key[1],
                timeout=self.settings.call_timeout,
                tls=self.settings.tls,
                token=token,
            )
            feed = self._feeds[key] = Feed(self, key, client)
            feed.task = asyncio.create_task(feed.pump())
        feed.join(buffer)
        return feed

    async def leave(self, feed: Feed, buffer: JobBuffer) -> None:
        feed.viewers.discard(buffer)
        if not feed.viewers and feed.task is not None:
            feed.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed.task

    def forget(self, feed: Feed) -> None:
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]

    async def close(self) -> None:
        for feed in list(self._feeds.values()):
            if feed.task is not None:
                feed.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed.task
