"""What Argus does with an MCP server: test it, list its catalog, call a tool.

Each operation exists as a coroutine (``a…``, run on the pool's loop) and as a plain
function that any thread may call. Results are plain data (JSON-ready dicts), so the
callers (services, Celery tasks, the API) never touch the SDK's types.
"""

import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from mcp.client.session import ClientSession

from tools.mcp.connection import ConnectionSpec
from tools.mcp.errors import MCPClientError, RequestTimeout, ServerError
from tools.mcp.pool import SessionPool, describe, get_pool, open_session

# Lets a caller (tests) run operations on a pool of its own instead of the process's.
POOL_OVERRIDE: ContextVar[SessionPool | None] = ContextVar("argus_mcp_pool", default=None)

# A server that keeps handing out cursors is cut off here.
MAX_LIST_PAGES = 100

ProgressCallback = Callable[[float, float | None, str | None], None]


def dump(model) -> Any:
    """An SDK model as JSON-ready data, with the protocol's own field names, and without
    NUL characters (which PostgreSQL cannot store)."""
    return without_nul(model.model_dump(by_alias=True, mode="json", exclude_none=True))


def without_nul(value: Any) -> Any:
    """``value`` with NUL characters removed from every string in it."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value


@dataclass
class ServerInfo:
    """What ``initialize`` returned."""

    name: str = ""
    version: str = ""
    protocol_version: str = ""
    capabilities: dict = field(default_factory=dict)
    instructions: str = ""

    @classmethod
    def from_result(cls, result) -> "ServerInfo":
        info = result.server_info
        return cls(
            name=without_nul(info.name if info else "")[:200],
            version=without_nul(info.version if info else "")[:100],
            protocol_version=without_nul(str(result.protocol_version))[:40],
            capabilities=dump(result.capabilities) if result.capabilities else {},
            instructions=without_nul(result.instructions or ""),
        )


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class

    """The outcome of a connection test; ``timings`` in milliseconds."""

    ok: bool
    timings: dict[str, float] = field(default_factory=dict)
    server: ServerInfo | None = None
    tool_count: int | None = None
    error: str = ""
    reason: str = ""
    # The first page of tools/list, as listed (health checks compare it to the catalog).
    tools: list[dict] | None = field(default=None, repr=False)

    @property
    def latency_ms(self) -> float | None:
        return self.timings.get("total_ms")


@dataclass
class Catalog:
    """Everything a server lists, as the protocol spells it."""

    server: ServerInfo
    tools: list[dict]
    resources: list[dict]
    prompts: list[dict]


@dataclass
class CallResult:
    """A ``tools/call`` answer: the result as sent, and whether it reports an error."""

    result: dict
    is_error: bool
    latency_ms: float


# --- coroutines (on the pool's loop) ------------------------------------------------------
async def atest(spec: ConnectionSpec) -> TestResult:
    """Open a fresh session (never a pooled one), initialize and list tools, with timings.

    Never raises for a server that fails: the result says why.
    """
    started = time.perf_counter()

    def failed(error: str, reason: str, info: ServerInfo | None = None) -> TestResult:
        elapsed = {"total_ms": (time.perf_counter() - started) * 1000}
        return TestResult(
            ok=False, timings=elapsed, server=info, error=spec.redact(error), reason=reason
        )

    try:
        async with open_session(spec) as opened:
            info = ServerInfo.from_result(opened.initialize_result)
            listed = time.perf_counter()
            try:
                with anyio.fail_after(spec.timeout_s):
                    tools = await opened.session.list_tools()
            except TimeoutError:
                return failed(
                    f"tools/list did not answer within {spec.timeout_s:g} s", "timeout", info
                )
            except Exception as exc:
                return failed(f"tools/list failed: {describe(exc)}", "server_error", info)
            done = time.perf_counter()
            return TestResult(
                ok=True,
                timings={
                    **opened.timings,
                    "list_tools_ms": (done - listed) * 1000,
                    "total_ms": (done - started) * 1000,
                },
                server=info,
                tool_count=len(tools.tools),
                tools=[dump(tool) for tool in tools.tools] if not tools.next_cursor else None,
            )
    except MCPClientError as exc:
        return failed(exc.message, exc.reason)


async def _list_all(session: ClientSession, method: str, key: str) -> list[dict]:
    """Every item of a paginated list, following ``nextCursor``."""
    items: list[dict] = []
    cursor = None
    for _page in range(MAX_LIST_PAGES):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await getattr(session, method)(params=params)
        items.extend(dump(item) for item in getattr(page, key))
        cursor = page.next_cursor
        if not cursor:
            return items
    raise ServerError(f"{method} still had more pages after {MAX_LIST_PAGES}; gave up")


async def alist_catalog(spec: ConnectionSpec) -> Catalog:
    """Tools, resources and prompts (each only if the server offers it), all pages."""
    pool = POOL_OVERRIDE.get() or get_pool()

    async def listing(session: ClientSession) -> Catalog:
        with anyio.fail_after(spec.timeout_s * 3):
            capabilities = session.server_capabilities
            tools = await _list_all(session, "list_tools", "tools")
            resources = (
                await _list_all(session, "list_resources", "resources")
                if capabilities is None or capabilities.resources is not None
                else []
            )
            prompts = (
                await _list_all(session, "list_prompts", "prompts")
                if capabilities is None or capabilities.prompts is not None
                else []
            )
        return Catalog(
            server=ServerInfo.from_result(session.initialize_result),
            tools=tools,
            resources=resources,
            prompts=prompts,
        )

    try:
        return await pool.request(spec, listing, retry_lost=True)
    except TimeoutError:
        raise RequestTimeout(f"listing the catalog of {spec.name} took too long") from None


async def acall_tool(
    spec: ConnectionSpec,
    name: str,
    arguments: dict | None,
    *,
    timeout: float | None = None,
    progress: ProgressCallback | None = None,
) -> CallResult:
    """Call a tool on the server's pooled session.

    A timeout cancels the request on the server (MCP's cancellation notification) and
    raises :class:`RequestTimeout`; cancelling the awaiting task does the same.
    """
    pool = POOL_OVERRIDE.get() or get_pool()
    bound = timeout if timeout is not None else spec.timeout_s

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        if progress is not None:
            progress(value, total, message)

    async def call(session: ClientSession) -> CallResult:
        started = time.perf_counter()
        result = await session.call_tool(
            name, arguments or {}, progress_callback=on_progress if progress else None
        )
        data = dump(result)
        return CallResult(
            result=data,
            is_error=bool(data.get("isError")),
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    try:
        return await pool.request(spec, call, timeout=bound)
    except TimeoutError:
        raise RequestTimeout(
            f"{name} did not answer within {bound:g} s; the call was cancelled"
        ) from None


# --- the same from any thread -------------------------------------------------------------
def test_connection(spec: ConnectionSpec) -> TestResult:
    """Open a fresh session, initialize and list tools; never raises for a bad server."""
    return get_pool().run(atest(spec), timeout=spec.timeout_s * 3 + 15)


def list_catalog(spec: ConnectionSpec) -> Catalog:
    """Everything the server lists; raises :class:`MCPClientError`."""
    return get_pool().run(alist_catalog(spec), timeout=spec.timeout_s * 5 + 15)


def call_tool(
    spec: ConnectionSpec,
    name: str,
    arguments: dict | None,
    *,
    timeout: float | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> CallResult:
    """Call a tool; raises :class:`RequestTimeout`, :class:`RequestCancelled` (when
    ``cancel`` is set), :class:`ConnectionLost`, :class:`ServerError` or
    :class:`ConnectFailed`. ``progress`` is called from the pool's thread."""
    bound = timeout if timeout is not None else spec.timeout_s
    return get_pool().run(
        acall_tool(spec, name, arguments, timeout=bound, progress=progress),
        cancel=cancel,
        # Opening a session (bounded by the server's timeout), then the call itself.
        timeout=bound + spec.timeout_s * 2 + 15,
    )
