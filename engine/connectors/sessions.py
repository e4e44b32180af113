"""Kept-open stdio sessions, so the tool calls of a chat turn or a workflow reuse one server process.

Starting a stdio server is a process spawn plus the MCP handshake: ~0.8 s for a small Python
server, seconds for an ``npx`` package; a call on an open session is about a millisecond. So the
toolbox checks a session out of this pool, keyed by the connection and everything that reaches
the child (command, arguments, environment — a changed credential opens a new process and the
old one idles out), and hands it back after the call. Remote (HTTP) servers keep a session per
call (``client``): there is no process to start, and a hosted server may expire sessions.

- A session serves one call at a time; concurrent callers each get a process of their own.
- It is closed once idle for ``IDLE_S``, when more than ``MAX_IDLE`` sit idle (oldest first), after
  ``MAX_AGE_S`` or ``MAX_STDERR_BYTES`` of the server's log (no slow leak, no endless temp file), and
  at once after any failure but a tool's own error: after a timeout or a dying server its state is
  in doubt, so the next call starts afresh.
- One idle for more than ``PROBE_AFTER_S`` is probed with a tool listing before it gets a call,
  since its server may have exited meanwhile; a failed probe opens a new one. A tool call itself is
  never retried: the tool may already have acted.
- ``close_all`` (the sidecar's shutdown, the interpreter's exit) closes them the SDK's way: close
  stdin, SIGTERM the process group, SIGKILL.

Everything here runs on the private loop (``engine.connectors.loop``), one thread, so the pool
needs no lock. Each session is owned by one task that opens the ``mcp.Client`` and later leaves
it, because anyio's cancel scopes must be exited by the task that entered them; callers only send
requests through it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import anyio
from mcp import Client

from engine.connectors import client, loop

log = logging.getLogger(__name__)

T = TypeVar("T")
IDLE_S = 300.0
PROBE_AFTER_S = 30.0
PROBE_TIMEOUT_S = 5.0
MAX_IDLE = 8
MAX_AGE_S = 3600.0
MAX_STDERR_BYTES = 1 << 20
REAP_EVERY_S = 30.0
Scope = tuple[int, int]  # (workspace id, connection id): no sharing of a process across connections


@dataclass(eq=False)
class _Session:
    key: tuple
    spec: client.ServerSpec
    errlog: IO[bytes] = field(default_factory=tempfile.TemporaryFile)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    client: Client | None = None
    owner: asyncio.Task | None = None
    last_used: float = 0.0
    opened_at: float = field(default_factory=time.monotonic)


_idle: dict[tuple, list[_Session]] = {}  # key → idle sessions, the most recently used last
_state: dict[str, Any] = {"pid": None, "reaper": None, "atexit": False}
_closing: set[asyncio.Task] = set()  # closes started in the background, kept so they are not collected


def call_tool(scope: Scope, spec: client.ServerSpec, name: str, arguments: dict[str, Any], *,
              timeout_s: float) -> client.CallResult:
    """``client.call_tool``, on a kept-open session when the server is a stdio child."""
    if spec.transport != "stdio":
        return client.call_tool(spec, name, arguments, timeout_s=timeout_s)
    return _sync(spec, timeout_s, lambda: _on_session(scope, spec, lambda c: client.call_on(c, name, arguments, timeout_s),
                                                      timeout_s))


def list_tools(scope: Scope, spec: client.ServerSpec) -> list[client.ToolInfo]:
    """``client.list_tools``, on a kept-open session when the server is a stdio child."""
    if spec.transport != "stdio":
        return client.list_tools(spec)
    return _sync(spec, spec.start_timeout_s, lambda: _on_session(scope, spec, client.list_on, spec.start_timeout_s))


def open_count() -> int:
    """Idle sessions held now (busy ones are their callers')."""
    return loop.run(_count, deadline_s=10)


def close_all() -> int:
    """Close every idle session and wait for its process to go; the number closed."""
    return loop.run(_close_all, deadline_s=loop.SHUTDOWN_GRACE_S * 2)


# --- on the loop ------------------------------------------------------------------------------


def _sync(spec: client.ServerSpec, call_timeout_s: float, make: Callable[[], Awaitable[T]]) -> T:
    try:
        return loop.run(make, deadline_s=spec.start_timeout_s + call_timeout_s + 15)
    except loop.Abandoned:
        raise client.timed_out(spec, "call", call_timeout_s) from None


async def _on_session(scope: Scope, spec: client.ServerSpec, work: Callable[[Client], Awaitable[T]],
                      call_timeout_s: float) -> T:
    session = await _checkout(scope, spec, call_timeout_s)
    since = client.stderr_size(session.errlog)
    try:
        with anyio.fail_after(call_timeout_s):
            result = await work(session.client)
    except BaseException as exc:  # noqa: BLE001 - every failure of a foreign server becomes words
        said = client.stderr_tail(session.errlog, since)
        await _close(session)
        if isinstance(exc, (KeyboardInterrupt, SystemExit, anyio.get_cancelled_exc_class())):
            raise
        raise client.failure(spec, exc, "call", call_timeout_s, [], said) from None
    _checkin(session)
    return result


async def _checkout(scope: Scope, spec: client.ServerSpec, call_timeout_s: float) -> _Session:
    _forget_after_fork()
    key = (scope, spec.command, spec.args, tuple(sorted(spec.env.items())))
    idle = _idle.get(key, [])
    while idle:
        session = idle.pop()
        if session.closed.is_set():
            await _close(session)
            continue
        if time.monotonic() - session.last_used > PROBE_AFTER_S and not await _answers(session):
            await _close(session)
            continue
        return session
    return await _open(key, spec, call_timeout_s)


async def _answers(session: _Session) -> bool:
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            await session.client.list_tools(cache_mode="bypass")
        return True
    except Exception as exc:  # noqa: BLE001 - any failure means: do not trust it with a call
        log.info("A kept-open %s session did not answer its probe (%s); starting a new one",
                 session.spec.label, type(exc).__name__)
        return False


async def _open(key: tuple, spec: client.ServerSpec, call_timeout_s: float) -> _Session:
    session = _Session(key, spec)
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    session.owner = asyncio.create_task(_own(session, ready), name=f"mcp-session {spec.label}")
    try:
        await asyncio.wait_for(asyncio.shield(ready), spec.start_timeout_s)
    except BaseException as exc:  # noqa: BLE001
        said = client.stderr_tail(session.errlog)
        await _close(session)
        if isinstance(exc, (KeyboardInterrupt, SystemExit, asyncio.CancelledError)):
            raise
        if isinstance(exc, TimeoutError):
            raise client.timed_out(spec, "start", call_timeout_s) from None
        raise client.failure(spec, exc, "start", call_timeout_s, [], said) from None
    if not _state["atexit"]:
        atexit.register(close_all)
        _state["atexit"] = True
    return session


async def _own(session: _Session, ready: asyncio.Future) -> None:
    """Open the client, keep it until told to stop, leave it: all in this one task."""
    try:
        async with contextlib.AsyncExitStack() as stack:
            transport = client.stdio_transport(session.spec, session.errlog)
            session.client = await stack.enter_async_context(client.new_client(session.spec, transport))
            ready.set_result(None)
            await session.stop.wait()
    except BaseException as exc:  # noqa: BLE001 - reported through ``ready``, or only logged once in use
        if not ready.done():
            ready.set_exception(exc)
        elif not isinstance(exc, asyncio.CancelledError):
            log.info("A kept-open %s session ended with %s", session.spec.label, type(exc).__name__)
    finally:
        session.closed.set()
        if not ready.done():
            ready.set_exception(RuntimeError("the session ended before it was ready"))


def _checkin(session: _Session) -> None:
    session.last_used = time.monotonic()
    if (session.last_used - session.opened_at > MAX_AGE_S
            or client.stderr_size(session.errlog) > MAX_STDERR_BYTES):
        _background_close(session)  # a long-lived or chatty server starts afresh: no slow leak, no huge log
        return
    _idle.setdefault(session.key, []).append(session)
    everyone = sorted((s for group in _idle.values() for s in group), key=lambda s: s.last_used)
    for oldest in everyone[:max(0, len(everyone) - MAX_IDLE)]:
        _drop(oldest)
        _background_close(oldest)
    reaper = _state["reaper"]
    if reaper is None or reaper.done():
        _state["reaper"] = asyncio.get_running_loop().create_task(_reap(), name="mcp-session reaper")


def _background_close(session: _Session) -> None:
    task = asyncio.get_running_loop().create_task(_close(session))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def _drop(session: _Session) -> None:
    group = _idle.get(session.key, [])
    if session in group:
        group.remove(session)
    if not group:
        _idle.pop(session.key, None)


async def _close(session: _Session) -> None:
    _drop(session)
    session.stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(session.closed.wait()), loop.SHUTDOWN_GRACE_S)
    except TimeoutError:
        if session.owner is not None:
            session.owner.cancel()
        await asyncio.wait([asyncio.ensure_future(session.closed.wait())], timeout=loop.SHUTDOWN_GRACE_S)
    finally:
        session.errlog.close()


async def _reap() -> None:
    while _idle:
        await asyncio.sleep(min(REAP_EVERY_S, IDLE_S))
        cutoff = time.monotonic() - IDLE_S
        stale = [s for group in _idle.values() for s in group if s.last_used < cutoff]
        for session in stale:
            await _close(session)


async def _count() -> int:
    _forget_after_fork()
    return sum(len(group) for group in _idle.values())


async def _close_all() -> int:
    _forget_after_fork()
    reaper = _state["reaper"]
    if reaper is not None:
        reaper.cancel()  # nothing left to reap; the next check-in starts one with the current timings
        _state["reaper"] = None
    everyone = [s for group in _idle.values() for s in group]
    await asyncio.gather(*(_close(s) for s in everyone))
    return len(everyone)


def _forget_after_fork() -> None:
    """A forked child has a new private loop; the parent's sessions are not its to use or close."""
    if _state["pid"] != os.getpid():
        _idle.clear()
        _state.update(pid=os.getpid(), reaper=None)
