"""An upload's bytes on their way in: hashed and counted as they arrive, kept in a temporary file
(in memory up to 8 MiB) until the whole artifact has been received and checked, so that nothing
is stored before its checksum matches."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator
from types import TracebackType
from typing import IO, Self

from scheduler.domain.artifacts import CHUNK_BYTES, ArtifactLimits

IN_MEMORY_BYTES = 8 * CHUNK_BYTES


class Spool:
    def __init__(self, limits: ArtifactLimits) -> None:
        self.limits = limits
        self.size = 0
        self._hash = hashlib.sha256()
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES)  # noqa: SIM115

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType
    ) -> None:
        self.file.close()

    async def write(self, data: bytes) -> None:
        """Add `data`; ArtifactTooLarge past the per-artifact limit (nothing is kept then)."""
        self.limits.check_artifact(self.size + len(data))
        self.size += len(data)
        if len(data) < 64 * 1024:
            self._write(data)
        else:  # hashing and writing a large chunk would hold the event loop
            await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        self._hash.update(data)
        self.file.write(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def rewind(self) -> IO[bytes]:
        self.file.seek(0)
        return self.file

    async def chunks(self, size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The content from the start, in chunks of `size` (the last one shorter)."""
        file = self.rewind()
        while data := await asyncio.to_thread(file.read, size):
            yield data
