"""One private asyncio event loop thread per process, where every MCP session runs.

The ``mcp`` SDK is async (anyio). Engine code is sync and runs on Streamlit's script threads,
the workflow worker's pool threads and the sidecar's; some of those may already have a loop
running, where ``anyio.run`` would refuse. So sessions run on a daemon thread of our own and
callers wait on a ``concurrent.futures.Future``. Child processes started from this loop are
reaped by asyncio's child watcher, whichever thread asked for them.

A caller that gives up (its deadline passed) cancels the task and waits a bounded moment for
the SDK's shielded shutdown — close stdin, SIGTERM the process group, SIGKILL — to finish, so
a hung server is not left running behind a returned call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
SHUTDOWN_GRACE_S = 8.0  # the SDK's stdio shutdown is at most 2 s + 2 s + 2 s

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def _running_loop() -> asyncio.AbstractEventLoop:
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=serve, name="meterbook-mcp-loop", daemon=True).start()
            ready.wait()
            _loop, _pid = loop, os.getpid()
        return _loop


class Abandoned(Exception):
    """The deadline passed before the coroutine finished; it was cancelled."""


def run(make: Callable[[], Awaitable[T]], *, deadline_s: float) -> T:
    """Run ``make()`` on the private loop and wait for its result, at most ``deadline_s`` seconds."""
    loop = _running_loop()

    async def task() -> T:
        return await make()

    future = asyncio.run_coroutine_threadsafe(task(), loop)
    try:
        return future.result(timeout=deadline_s)
    except concurrent.futures.TimeoutError:
        future.cancel()
        concurrent.futures.wait([future], timeout=SHUTDOWN_GRACE_S)
        raise Abandoned() from None
