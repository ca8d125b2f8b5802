"""A raw HTTP/2 peer for the ping flood (fault case 25): it speaks just enough of RFC 9113 to
open a connection (preface, SETTINGS and their ACK) and then send PING frames back to back,
each as soon as the previous one is answered, with no stream and no data, until the server
answers GOAWAY or closes. (Lock-step, not blind: bytes the server has not read when it closes
make its kernel answer RST, which can discard the GOAWAY before this side reads it.)
No HTTP/2 library: the frames are 9-byte headers and fixed payloads."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x4, 0x6, 0x7
ACK = 0x1
ENHANCE_YOUR_CALM = 0xB


def frame(kind: int, flags: int, payload: bytes = b"", stream: int = 0) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


@dataclass(frozen=True, slots=True)
class Goaway:
    error_code: int
    debug: bytes


@dataclass(frozen=True, slots=True)
class FloodResult:
    pings_sent: int
    ping_acks: int
    goaway: Goaway | None  # None: the server closed the connection without one


async def ping_flood(address: str, *, max_pings: int = 10_000, within: float = 10.0) -> FloodResult:
    """One connection that floods PINGs until the server sends it away (or `max_pings`)."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    sent = acks = 0
    goaway: Goaway | None = None
    answered = asyncio.Event()

    async def read() -> None:
        nonlocal acks, goaway
        try:
            while True:
                header = await reader.readexactly(9)
                length = int.from_bytes(header[:3], "big")
                kind, flags = header[3], header[4]
                payload = await reader.readexactly(length)
                if kind == SETTINGS and not flags & ACK:
                    writer.write(frame(SETTINGS, ACK))
                elif kind == PING and flags & ACK:
                    acks += 1
                    answered.set()
                elif kind == GOAWAY:
                    (code,) = struct.unpack(">I", payload[4:8])
                    goaway = Goaway(code, payload[8:])
                    return
        except (OSError, asyncio.IncompleteReadError):
            return  # closed
        finally:
            answered.set()  # the sender stops waiting

    reading = asyncio.create_task(read())
    try:
        writer.write(PREFACE + frame(SETTINGS, 0))
        await writer.drain()
        async with asyncio.timeout(within):
            while sent < max_pings and not reading.done() and not writer.is_closing():
                writer.write(frame(PING, 0, sent.to_bytes(8, "big")))
                sent += 1
                answered.clear()
                try:
                    await writer.drain()
                except OSError:
                    break  # closed by the server
                await answered.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await asyncio.shield(reading)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        writer.transport.abort()
    return FloodResult(sent, acks, goaway)
