"""Merging queued stream messages into batches, for both ends of ExecutorService.Connect.

Each message on a stream costs a round of gRPC's Python machinery on both ends, so whatever
waits in an outbox when the writer takes the next message goes out together: runs of
consecutive mergeable messages of one kind become one batch message, everything else keeps
its place. Nothing waits for a batch to fill: a lone message goes out as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import TypeVar

from google.protobuf.message import Message

# At most this many queued messages are merged into the ones sent next.
MAX_BATCH = 1000


M = TypeVar("M", bound=Message)


def take_batch(
    first: M,
    outbox: asyncio.Queue[M | None],
    mergeable: Collection[str],
    merge: Callable[[list[M]], M],
) -> tuple[list[M], bool]:
    """`first` and whatever else `outbox` holds now (up to MAX_BATCH), each run of consecutive
    messages of one `mergeable` kind (the `message` oneof) replaced by `merge(run)` (a run of
    one stays as it is), the order kept; and whether the outbox was closed (None) meanwhile."""
    out: list[M] = []
    run: list[M] = []

    def flush() -> None:
        if run:
            out.append(run[0] if len(run) == 1 else merge(list(run)))
            run.clear()

    closed = False
    message: M | None = first
    taken = 1
    while message is not None:
        kind = message.WhichOneof("message")
        if kind in mergeable:
            if run and run[0].WhichOneof("message") != kind:
                flush()
            run.append(message)
        else:
            flush()
            out.append(message)
        if taken >= MAX_BATCH or outbox.empty():
            break
        message = outbox.get_nowait()
        taken += 1
        closed = message is None
    flush()
    return out, closed
