"""The per-process session pool: warm MCP sessions shared by every caller of a process.

All sessions live on one event loop run by a daemon thread of the process. Callers in
any thread (Celery worker threads, Django views) hand it coroutines and wait for the
result; async callers await them (:meth:`SessionPool.arun`). So the SDK's sessions,
which belong to the loop that opened them, are only ever touched on their own loop.

- one session per server (MCP multiplexes concurrent requests on one session);
- at most ``ARGUS_MCP_POOL_SIZE`` sessions: the least recently used idle one is closed
  to make room, and a caller waits (bounded) when every session is busy;
- sessions idle for ``ARGUS_MCP_IDLE_SECONDS`` are closed;
- a session found dead (its process exited, its connection dropped) is reopened
  once, transparently; a request already sent when the connection died fails with
  :class:`ConnectionLost` instead (a tool call might have run, so it is not repeated);
- a session of an older configuration version is retired when a newer spec arrives,
  and :meth:`invalidate` retires one at once.

The pool is per process and survives fork: a forked child (a prefork Celery worker)
starts its own loop on first use.
"""

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from django.conf import settings
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, Implementation

import argus
from tools.mcp.connection import ConnectionSpec
from tools.mcp.errors import (
    ConnectFailed,
    ConnectionLost,
    MCPClientError,
    PoolExhausted,
    RequestCancelled,
    ServerError,
)
from tools.mcp.transports import StderrTail, open_transport

logger = logging.getLogger(__name__)

CLIENT_INFO = Implementation(name="argus", version=getattr(argus, "__version__", "0"))
TOOLS_CHANGED = "notifications/tools/list_changed"
# How long a caller waits for a pooled session to free up when the pool is full.
ACQUIRE_WAIT_SECONDS = 10.0


def first_error(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (task groups wrap what failed inside)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """A readable one-line description of a transport or protocol failure."""
    exc = first_error(exc)
    if isinstance(exc, MCPClientError):
        return exc.message
    if isinstance(exc, MCPError):
        return f"MCP error {exc.error.code}: {exc.error.message}"
    name = type(exc).__name__
    text = str(exc).strip()
    return f"{name}: {text}" if text else name


def dispatcher_closed(session: ClientSession) -> bool:
    """Whether the session's connection has ended (the SDK keeps this flag private)."""
    return bool(getattr(getattr(session, "_dispatcher", None), "_closed", False))


class PooledSession:
    """One open session, run as a task on the pool's loop until asked to stop."""

    def __init__(self, spec: ConnectionSpec, on_notification: Callable[[int, str], None] | None):
        self.spec = spec
        self.on_notification = on_notification
        self.session: ClientSession | None = None
        self.initialize_result = None
        self.error: MCPClientError | None = None
        self.timings: dict[str, float] = {}
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.finished = asyncio.Event()
        self.in_use = 0
        self.retired = False
        self.last_used = time.monotonic()
        self.opened_at = time.monotonic()
        self._scope: anyio.CancelScope | None = None
        self.task: asyncio.Task | None = None
        self.stderr = StderrTail() if spec.transport == "stdio" else None

    @property
    def alive(self) -> bool:
        return (
            self.session is not None
            and not self.finished.is_set()
            and not dispatcher_closed(self.session)
        )

    def _stderr_hint(self) -> str:
        text = self.stderr.text() if self.stderr is not None else ""
        return f"; the server wrote: {text[-800:]}" if text else ""

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            if not self.ready.is_set():
                # A transport failure while opening: report it now, not at the deadline.
                self.error = self._redacted(
                    ConnectFailed(f"could not connect: {describe(message)}")
                )
                if self._scope is not None:
                    self._scope.cancel()
            else:
                logger.warning(
                    "MCP server %s: transport error: %s",
                    self.spec.name,
                    self.spec.redact(describe(message)),
                )
            return
        method = getattr(message, "method", None)
        if method and self.on_notification is not None:
            try:
                self.on_notification(self.spec.server_id, method)
            except Exception:
                logger.exception("handling %s from server %s failed", method, self.spec.name)

    async def run(self) -> None:
        """Open, initialize, then hold the session open until ``stop`` is set."""
        timeout = self.spec.timeout_s
        started = time.perf_counter()
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
                self._scope = scope
                async with open_transport(self.spec, self.stderr) as (read, write):
                    connected = time.perf_counter()
                    async with ClientSession(
                        read, write, message_handler=self._on_message, client_info=CLIENT_INFO
                    ) as session:
                        result = await session.initialize()
                        done = time.perf_counter()
                        self.timings = {
                            "connect_ms": (connected - started) * 1000,
                            "initialize_ms": (done - connected) * 1000,
                        }
                        self.session = session
                        self.initialize_result = result
                        scope.deadline = math.inf
                        self.ready.set()
                        await self.stop.wait()
            if not self.ready.is_set() and self.error is None:
                self.error = self._redacted(
                    ConnectFailed(
                        f"no answer to initialize within {timeout:g} s{self._stderr_hint()}",
                        reason="timeout",
                    )
                )
        except Exception as exc:
            if self.error is None:
                self.error = self._redacted(self._opening_error(exc))
            if self.ready.is_set():
                logger.info(
                    "MCP session to %s ended: %s",
                    self.spec.name,
                    self.spec.redact(describe(exc)),
                )
        finally:
            self.finished.set()
            self.ready.set()
            if self.stderr is not None:
                self.stderr.close()

    def _redacted(self, error: MCPClientError) -> MCPClientError:
        """The error with the server's secret values taken out of its message: servers
        and HTTP libraries quote what they were given."""
        error.message = self.spec.redact(error.message)
        error.args = (error.message,)
        return error

    def _opening_error(self, exc: BaseException) -> MCPClientError:
        leaf = first_error(exc)
        if isinstance(leaf, MCPClientError):
            return leaf
        if isinstance(leaf, MCPError) and leaf.error.code == CONNECTION_CLOSED:
            return ConnectFailed(
                "the server closed the connection during initialize"
                f"{self._stderr_hint() or ' (it may have crashed)'}",
                reason="crashed",
            )
        if isinstance(leaf, MCPError):
            return ConnectFailed(f"initialize failed: {describe(leaf)}", reason="refused")
        return ConnectFailed(f"could not connect: {describe(leaf)}{self._stderr_hint()}")

    async def close(self) -> None:
        self.stop.set()
        with anyio.move_on_after(10):
            await self.finished.wait()


@contextlib.asynccontextmanager
async def open_session(
    spec: ConnectionSpec, on_notification: Callable[[int, str], None] | None = None
) -> AsyncIterator[PooledSession]:
    """The one way a session is opened: transport, ``initialize`` (bounded by the
    spec's timeout), timings. Yields the open session (``.session``,
    ``.initialize_result``, ``.timings``) and closes it on exit.

    Raises :class:`ConnectFailed` (or another :class:`MCPClientError`) with a readable
    reason when the session cannot be opened. Runs on the caller's event loop; the pool
    uses it for its warm sessions, ``test`` for a fresh one.
    """
    opened = await start_session(spec, on_notification)
    try:
        yield opened
    finally:
        await opened.close()


async def start_session(
    spec: ConnectionSpec, on_notification: Callable[[int, str], None] | None
) -> PooledSession:
    """Open a session that stays open until its ``close()``; raises like ``open_session``."""
    opened = PooledSession(spec, on_notification)
    opened.task = asyncio.get_running_loop().create_task(opened.run())
    try:
        await opened.ready.wait()
    except BaseException:
        # The caller gave up while the session was opening: it must not live on unowned.
        opened.task.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(15):
            await opened.finished.wait()
        raise
    if opened.error is not None or opened.session is None:
        await opened.finished.wait()
        raise opened.error or ConnectFailed("the session ended while opening")
    return opened


class SessionPool:
    """Warm sessions for this process; see the module docstring."""

    def __init__(self, max_sessions: int | None = None, idle_seconds: float | None = None):
        self.max_sessions = max_sessions or settings.ARGUS_MCP_POOL_SIZE
        self.idle_seconds = idle_seconds or settings.ARGUS_MCP_IDLE_SECONDS
        self.on_notification: Callable[[int, str], None] | None = None
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[int, PooledSession] = {}
        self._openers: dict[int, asyncio.Lock] = {}
        self._freed: asyncio.Condition | None = None
        self._closing: set[asyncio.Task] = set()
        self._reaper: asyncio.Task | None = None
        self.stats = {"opened": 0, "reused": 0, "restarted": 0, "closed_idle": 0, "evicted": 0}

    # --- the loop thread ----------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._sessions = {}
                self._openers = {}
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def serve():
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    self._reaper = loop.create_task(self._reap_forever())
                    loop.run_forever()

                threading.Thread(target=serve, daemon=True, name="mcp-pool").start()
                started.wait()
                self._loop = loop
            return self._loop

    def submit(self, coroutine: Awaitable) -> concurrent.futures.Future:
        """Schedule ``coroutine`` on the pool's loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._ensure_loop())

    def run(
        self,
        coroutine: Awaitable,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ):
        """Run ``coroutine`` on the pool's loop and wait for it from this thread.

        Setting ``cancel`` cancels it (the server is told) and raises
        :class:`RequestCancelled` at once; ``timeout`` is a last-resort bound on the
        wait (operations carry their own, tighter, timeouts).
        """
        future = self.submit(coroutine)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return future.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                if cancel is not None and cancel.is_set():
                    future.cancel()
                    raise RequestCancelled("cancelled by the caller") from None
                if deadline is not None and time.monotonic() > deadline:
                    future.cancel()
                    raise RequestCancelled("gave up waiting for the MCP pool") from None
            except concurrent.futures.CancelledError:
                raise RequestCancelled("cancelled") from None

    async def arun(self, coroutine: Awaitable):
        """Await ``coroutine`` run on the pool's loop, from any other event loop."""
        future = self.submit(coroutine)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    # --- sessions (called on the pool's loop) ----------------------------------------
    def _notify(self, server_id: int, method: str) -> None:
        if self.on_notification is not None:
            self.on_notification(server_id, method)

    async def _make_room(self) -> None:
        """Close the least recently used idle session, or wait for one to free up."""
        deadline = time.monotonic() + ACQUIRE_WAIT_SECONDS
        while len(self._sessions) >= self.max_sessions:
            idle = [p for p in self._sessions.values() if p.in_use == 0]
            if idle:
                victim = min(idle, key=lambda p: p.last_used)
                self._sessions.pop(victim.spec.server_id, None)
                self.stats["evicted"] += 1
                await victim.close()
                continue
            if self._freed is None:
                self._freed = asyncio.Condition()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolExhausted(
                    f"all {self.max_sessions} pooled MCP sessions are busy; "
                    "raise ARGUS_MCP_POOL_SIZE or try again"
                )
            async with self._freed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), remaining)

    async def acquire(self, spec: ConnectionSpec) -> PooledSession:
        """A live session for ``spec``'s server, opened if needed (the caller releases it)."""
        opener = self._openers.setdefault(spec.server_id, asyncio.Lock())
        async with opener:
            current = self._sessions.get(spec.server_id)
            if current is not None and current.spec.config_version > spec.config_version:
                spec = current.spec  # a caller with an older configuration: use the newer
            if current is not None and current.spec.config_version < spec.config_version:
                self._retire(current)
                current = None
            if current is not None and not current.alive:
                self._sessions.pop(spec.server_id, None)
                self.stats["restarted"] += 1
                self._retire(current)
                current = None
            if current is None:
                await self._make_room()
                current = await start_session(spec, self._notify)
                self._sessions[spec.server_id] = current
                self.stats["opened"] += 1
            else:
                self.stats["reused"] += 1
            current.in_use += 1
            current.last_used = time.monotonic()
            return current

    async def release(self, pooled: PooledSession) -> None:
        pooled.in_use -= 1
        pooled.last_used = time.monotonic()
        if pooled.retired and pooled.in_use == 0:
            await pooled.close()
        if self._freed is not None:
            async with self._freed:
                self._freed.notify_all()

    def _retire(self, pooled: PooledSession) -> None:
        """Take a session out of the pool; it closes once its last request ends."""
        if self._sessions.get(pooled.spec.server_id) is pooled:
            del self._sessions[pooled.spec.server_id]
        pooled.retired = True
        if pooled.in_use == 0:
            # asyncio only keeps weak references to tasks: hold the closing one.
            closing = asyncio.get_running_loop().create_task(pooled.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def request(
        self,
        spec: ConnectionSpec,
        operation: Callable[[ClientSession], Awaitable],
        *,
        retry_lost: bool = False,
        timeout: float | None = None,
    ):
        """Run ``operation(session)`` on the server's pooled session.

        Getting the session is bounded by the server's own timeout; ``timeout`` bounds
        the operation (``TimeoutError``, after MCP's cancellation is sent). A session
        found dead before the request is replaced transparently. When the connection
        dies during the request, it is retried once on a new session only if
        ``retry_lost`` (safe for listing, never for tool calls). Error messages never
        carry the server's secret values.
        """
        for attempt in (1, 2):
            pooled = await self.acquire(spec)
            try:
                with anyio.fail_after(timeout if timeout is not None else math.inf):
                    return await operation(pooled.session)
            except MCPError as exc:
                if exc.error.code != CONNECTION_CLOSED:
                    raise ServerError(
                        spec.redact(str(exc.error.message)), code=exc.error.code
                    ) from None
                self._retire(pooled)
                if not (retry_lost and attempt == 1):
                    raise ConnectionLost(
                        f"the connection to {spec.name} was lost before it answered"
                    ) from None
            finally:
                await self.release(pooled)
        raise AssertionError("unreachable")

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, max(self.idle_seconds / 4, 0.05)))
            try:
                await self.reap()
            except Exception:
                logger.exception("closing idle MCP sessions failed")

    async def reap(self) -> None:
        """Close sessions idle for longer than the idle bound, and dead ones."""
        now = time.monotonic()
        for pooled in list(self._sessions.values()):
            idle = pooled.in_use == 0 and now - pooled.last_used > self.idle_seconds
            if idle or (pooled.in_use == 0 and not pooled.alive):
                self._sessions.pop(pooled.spec.server_id, None)
                self.stats["closed_idle"] += 1 if idle else 0
                await pooled.close()

    # --- management (any thread) ---------------------------------------------------------
    def invalidate(self, server_id: int) -> None:
        """Retire the server's session (its configuration changed or it was deleted)."""
        if self._loop is None or self._pid != os.getpid():
            return

        async def retire():
            pooled = self._sessions.get(server_id)
            if pooled is not None:
                self._retire(pooled)

        self.submit(retire()).result(timeout=15)

    def close_all(self) -> None:
        """Close every session (tests, process exit)."""
        if self._loop is None or self._pid != os.getpid():
            return

        async def close():
            sessions, self._sessions = list(self._sessions.values()), {}
            for pooled in sessions:
                pooled.retired = True
                await pooled.close()

        with contextlib.suppress(Exception):
            self.submit(close()).result(timeout=30)

    def snapshot(self) -> list[dict]:
        """The open sessions, for diagnostics and tests."""
        if self._loop is None or self._pid != os.getpid():
            return []

        async def describe_all():
            return [
                {
                    "server_id": p.spec.server_id,
                    "config_version": p.spec.config_version,
                    "in_use": p.in_use,
                    "alive": p.alive,
                    "idle_s": time.monotonic() - p.last_used,
                }
                for p in self._sessions.values()
            ]

        return self.submit(describe_all()).result(timeout=5)


_pool: SessionPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> SessionPool:
    """This process's pool."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = SessionPool()
            atexit.register(_pool.close_all)
        return _pool
