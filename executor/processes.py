"""Spawning a command in a process group of its own, with resource limits, and ending the group.

Each command starts a new session (``start_new_session``), so its process id is also the id of
a process group holding it and everything it starts that does not leave the group itself;
signals go to the whole group (`ProcessGroup`). A process that calls setsid(2) or daemonises
leaves the group: containing those is a cgroup's job (the container's), not this module's.

Resource limits (`Limits`: CPU seconds, address space, open files) are set with setrlimit in
the child before it runs the program. Python's ``preexec_fn`` is not safe in a process with
threads (the executor has several: the child could deadlock on a lock another thread held at
the fork), so a command with limits starts through a small wrapper instead: an isolated Python
(``-I -S``) that sets them and execs the program, keeping the process id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Run as `python -I -S -c WRAPPER cpu memory files program argv...` ("-" for no limit).
WRAPPER = """
import os, resource, sys
for name, value in zip(("CPU", "AS", "NOFILE"), sys.argv[1:4]):
    if value != "-":
        which = getattr(resource, "RLIMIT_" + name)
        hard = resource.getrlimit(which)[1]
        soft = int(value)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        # CPU: SIGXCPU at the limit (catchable), SIGKILL a second later.
        top = soft + 1 if name == "CPU" else soft
        if hard != resource.RLIM_INFINITY:
            top = min(top, hard)
        resource.setrlimit(which, (soft, top))
os.execv(sys.argv[4], sys.argv[5:])
"""


GROUP_POLL = 0.05  # seconds between looks at a stopping group
READ_LIMIT = 64 * 1024  # asyncio's default buffer limit of a pipe's StreamReader


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-attempt resource limits; None means not limited (the executor's own limit holds)."""

    cpu: int | None = None  # CPU seconds (RLIMIT_CPU)
    memory: int | None = None  # bytes of address space (RLIMIT_AS)
    files: int | None = None  # open file descriptors (RLIMIT_NOFILE)

    def narrowed(self, cpu: int | None, memory: int | None, files: int | None) -> Limits:
        """These limits, lowered to a job's where it asks for less; a job asking for more
        than the executor allows gets the executor's (clamped, never widened)."""

        def lower(mine: int | None, theirs: int | None) -> int | None:
            if theirs is None:
                return mine
            return theirs if mine is None else min(mine, theirs)

        return Limits(lower(self.cpu, cpu), lower(self.memory, memory), lower(self.files, files))

    @property
    def any(self) -> bool:
        return any(value is not None for value in (self.cpu, self.memory, self.files))


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's protocol for a Process, also telling when the program itself has exited:
    Process.wait() returns only once its pipes have closed too, which a background process
    holding them delays for as long as it lives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=READ_LIMIT, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


class ProcessGroup:
    """A started command: its process (`stdin`, `stdout`, `stderr` streams), and its process
    group, which every signal goes to."""

    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.process = asyncio.subprocess.Process(transport, protocol, asyncio.get_running_loop())
        self.pid = self.process.pid  # also the group's id

    @property
    def returncode(self) -> int | None:
        """The program's exit status once it has exited (negative: the signal that ended it)."""
        return self.process.returncode

    async def exited(self) -> None:
        """Until the program has exited (its pipes may still be open)."""
        await self._protocol.exited.wait()

    def signal(self, signum: int) -> None:
        """Send `signum` to the group; a group already empty is not an error."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    async def stop(self, grace: float) -> None:
        """SIGTERM to the group, then SIGKILL to what is left of it after `grace` seconds (or
        as soon as it is empty); returns when the program has exited."""
        if self.returncode is not None and not group_exists(self.pid):
            return  # the common case: the program ended and left nothing behind
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self.signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exited(), grace)
        # The rest of the group gets the rest of the grace. They are not our children, so
        # there is nothing to wait on: the group is polled.
        running = group_running
        while loop.time() < deadline and await asyncio.to_thread(running, self.pid):  # noqa: ASYNC110
            await asyncio.sleep(GROUP_POLL)
        self.signal(signal.SIGKILL)
        await self.exited()

    async def close(self) -> None:
        """SIGKILL to the group, wait for the program, close the pipes (a process that left
        the group may still hold them)."""
        self.signal(signal.SIGKILL)
        self._transport.close()
        await self.exited()


async def spawn(
    argv: Sequence[str],
    *,
    executable: str,
    cwd: str,
    env: Mapping[str, str],
    limits: Limits,
    stdin: bool,
) -> ProcessGroup:
    """Start `executable` with `argv` (argv[0] as given) in a new session, stdout and stderr
    piped, stdin piped when `stdin` else /dev/null."""
    program, args = executable, list(argv)
    if limits.any:
        values = ["-" if v is None else str(v) for v in (limits.cpu, limits.memory, limits.files)]
        program, args = sys.executable, [sys.executable, "-I", "-S", "-c", WRAPPER, *values]
        args += [executable, *argv]
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _Protocol(loop),
        args[0],
        *args[1:],
        executable=program,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    return ProcessGroup(transport, protocol)


def group_exists(pgid: int) -> bool:
    """Whether group `pgid` has any process, zombies included."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_running(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs. Zombies do not count: they have ended, and
    reaping the orphans among them is the init process's job (some containers' init does it
    late). Reads /proc where there is one (Linux), else any member counts."""
    if not group_exists(pgid):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
                state, _, pgrp = stat.read().rsplit(b")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(pgrp) == pgid and state not in (b"Z", b"X"):
            return True
    return False


def signal_name(returncode: int) -> str:
    """The name of the signal that ended a process (a negative returncode)."""
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"
