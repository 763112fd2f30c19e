"""Argus's deterministic demo MCP server, for tests, demos and trying Argus out.

Every answer is a function of the arguments (and, for ``needs_env``, of the
environment), so tests can assert on it. It needs neither Django nor any setting:
``python -m tools.demo_server --transport stdio`` starts with nothing but ``PATH``,
which is how Argus spawns stdio servers. ``python manage.py demo-mcp-server`` runs the
same server.

Network transports print exactly one line to stdout once they listen (see
``announce``); in stdio mode stdout carries the protocol only and logs go to stderr.
"""

import argparse
import hashlib
import logging
import operator
import os
import random
import socket
import sys
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal

import anyio
import uvicorn
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import NotificationOptions
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.applications import Starlette

from tools.mcp.websocket import LOOPBACK_HOSTS, websocket_server

logger = logging.getLogger(__name__)

NAME = "argus-demo"
VERSION = "1.0.0"
INSTRUCTIONS = (
    "Deterministic demo tools for exercising Argus: echo and arithmetic, fixed fake "
    "weather, slow, failing, large and progress-reporting calls. Nothing here touches "
    "the outside world."
)
TRANSPORTS = ("stdio", "http", "sse", "websocket")
REVISIONS = (1, 2)
REVISION_VARIABLE = "ARGUS_DEMO_REVISION"

MAX_DELAY_MS = 600_000
MAX_PAYLOAD_KB = 4096
MAX_PROGRESS_STEPS = 100
PROGRESS_STEP_SECONDS = 0.02
# Sessions told about catalog changes: the most recent ones, so the list stays bounded.
REMEMBERED_SESSIONS = 64
# A session whose transport stalls must not hold up reconfigure for the others.
NOTIFY_TIMEOUT = 2.0

READONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
# Tools that answer in prose return text only; the others add structured content too.
TEXT = {"structured_output": False}

Operation = Literal["add", "subtract", "multiply", "divide"]
OPERATIONS: dict[str, Callable[[float, float], float]] = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.truediv,
}
CONDITIONS = (
    "sunny",
    "partly cloudy",
    "cloudy",
    "fog",
    "light rain",
    "heavy rain",
    "snow",
    "windy",
)
PAYLOAD_LINE = "Argus demo payload: the quick brown fox jumps over the lazy dog 0123456789.\n"

README = """# Argus demo MCP server

A deterministic MCP server for exercising Argus: every tool answers the same way for the
same arguments. `reconfigure` switches the tool catalog between revisions and announces
the change with `notifications/tools/list_changed`.
"""


class DemoConfigurationError(ValueError):
    """The demo server was asked for a transport or revision it does not have."""


class CannotListenError(Exception):
    """The demo server cannot listen on the address it was given."""


class Weather(BaseModel):
    """A made-up but stable weather report."""

    city: str
    conditions: str
    temperature_c: int
    humidity_percent: int
    wind_kph: int


class EnvironmentVariable(BaseModel):
    """Whether a variable is set, and how long its value is; never the value itself."""

    name: str
    is_set: bool
    length: int


class ServerStats(BaseModel):
    """What this server process has done so far."""

    pid: int
    revision: int
    calls: int = Field(description="tools/call requests received, this one included")
    cancelled_slow_operations: int


def echo(text: Annotated[str, Field(description="The text to send back.")]) -> str:
    return text


def echo_upper(text: Annotated[str, Field(description="The text to send back.")]) -> str:
    """Return the given text in upper case."""
    return text.upper()


def calculate(
    operation: Annotated[Operation, Field(description="The arithmetic operation to apply.")],
    a: Annotated[float, Field(description="The left operand.")],
    b: Annotated[float, Field(description="The right operand.")],
) -> float:
    """Apply an arithmetic operation to two numbers: a + b, a - b, a * b or a / b."""
    if operation == "divide" and b == 0:
        raise ToolError("cannot divide by zero (b is 0)")
    return OPERATIONS[operation](a, b)


def get_weather(
    city: Annotated[str, Field(min_length=1, max_length=100, description="The city's name.")],
) -> Weather:
    """Report the weather in a city. The values are made up but always the same for a
    city (case and surrounding spaces do not matter)."""
    name = city.strip()
    digest = hashlib.sha256(name.lower().encode()).digest()
    return Weather(
        city=name,
        conditions=CONDITIONS[digest[0] % len(CONDITIONS)],
        temperature_c=digest[1] % 46 - 10,
        humidity_percent=20 + digest[2] % 76,
        wind_kph=digest[3] % 61,
    )


def random_failure(
    rate: Annotated[
        float, Field(ge=0, le=1, description="Probability of failing, from 0 (never) to 1.")
    ] = 0.5,
    seed: Annotated[
        int, Field(description="Seed of the draw: the same seed, the same outcome.")
    ] = 0,
) -> str:
    """Fail with the given probability, deterministically: the seed decides the draw."""
    draw = random.Random(seed).random()  # noqa: S311 - a reproducible draw, not a secret
    if draw < rate:
        raise ToolError(f"random failure: seed {seed} drew {draw:.4f}, below the rate {rate}")
    return f"success: seed {seed} drew {draw:.4f}, not below the rate {rate}"


def always_fail() -> str:
    """Always fail by raising an error (the result has isError set)."""
    raise ToolError("always_fail failed, as it always does")


def tool_error() -> CallToolResult:
    """Return a result that reports an error itself (isError set), without raising."""
    return CallToolResult(
        content=[TextContent(type="text", text="tool_error reports an error, as it always does")],
        is_error=True,
    )


def needs_env(
    name: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
            max_length=255,
            description="Name of the environment variable.",
        ),
    ],
) -> EnvironmentVariable:
    """Report whether an environment variable is set in the server process, and the
    length of its value. The value itself is never returned."""
    value = os.environ.get(name)
    return EnvironmentVariable(name=name, is_set=value is not None, length=len(value or ""))


def large_payload(
    kb: Annotated[
        int,
        Field(ge=0, le=MAX_PAYLOAD_KB, description=f"Size in KiB, at most {MAX_PAYLOAD_KB}."),
    ],
) -> str:
    """Return kb KiB of plain text (one repeated line)."""
    size = kb * 1024
    return (PAYLOAD_LINE * (size // len(PAYLOAD_LINE) + 1))[:size]


async def progress(
    ctx: Context,
    steps: Annotated[
        int, Field(ge=1, le=MAX_PROGRESS_STEPS, description="How many steps to report.")
    ] = 5,
) -> str:
    """Work through a number of short steps, sending a progress notification after each
    (when the caller asked for progress)."""
    for step in range(1, steps + 1):
        await anyio.sleep(PROGRESS_STEP_SECONDS)
        await ctx.report_progress(step, steps, f"step {step} of {steps}")
    return f"completed {steps} steps"


def summarize(text: Annotated[str, Field(description="The text to summarize.")]) -> str:
    """Ask for a short summary of a text."""
    return f"Summarize the following text in at most three sentences.\n\n{text}"


def readme() -> str:
    return README


class DemoServer:
    """The demo MCP server and what it counts: calls, cancellations, its catalog revision."""

    def __init__(self, revision: int = 1):
        self.calls = 0
        self.cancelled = 0
        self.revision = 0
        self._sessions: deque[ServerSession] = deque(maxlen=REMEMBERED_SESSIONS)
        self.mcp = MCPServer(
            NAME, version=VERSION, instructions=INSTRUCTIONS, middleware=[self._observe]
        )
        _advertise_tool_list_changes(self.mcp)
        self.apply_revision(revision)
        self._add_tools()
        self.mcp.resource(
            "demo://readme",
            name="readme",
            title="About the demo server",
            description="What the demo server is for.",
            mime_type="text/markdown",
        )(readme)
        self.mcp.prompt(title="Summarize a text")(summarize)

    def _add_tools(self) -> None:
        add = self.mcp.add_tool
        add(calculate, title="Calculate", annotations=READONLY)
        add(get_weather, title="Weather in a city", annotations=READONLY)
        add(self.slow_operation, title="Slow operation", annotations=READONLY, **TEXT)
        add(random_failure, title="Random failure", annotations=READONLY, **TEXT)
        add(always_fail, title="Always fail", annotations=READONLY, **TEXT)
        add(tool_error, title="Tool error", annotations=READONLY, **TEXT)
        add(needs_env, title="Environment variable check", annotations=READONLY)
        add(large_payload, title="Large payload", annotations=READONLY, **TEXT)
        add(progress, title="Progress", annotations=READONLY, **TEXT)
        add(
            self.server_stats,
            title="Server statistics",
            # Read-only, but the counts grow with every call.
            annotations=READONLY.model_copy(update={"idempotent_hint": False}),
        )
        add(
            self.reconfigure,
            title="Reconfigure the demo server",
            annotations=ToolAnnotations(
                read_only_hint=False,
                destructive_hint=False,
                idempotent_hint=True,
                open_world_hint=False,
            ),
            **TEXT,
        )

    def apply_revision(self, revision: int) -> None:
        """Switch the tool catalog to ``revision`` (1 or 2).

        Raises:
            DemoConfigurationError: ``revision`` is not a known revision.
        """
        if revision not in REVISIONS:
            raise DemoConfigurationError(
                f"unknown revision {revision}; the revisions are {REVISIONS}"
            )
        if revision == self.revision:
            return
        if self.revision:
            self.mcp.remove_tool("echo")
        description = "Return the given text unchanged."
        if revision == 2:
            description += " (revision 2)"
            self.mcp.add_tool(echo_upper, title="Echo in upper case", annotations=READONLY, **TEXT)
        elif self.revision == 2:
            self.mcp.remove_tool("echo_upper")
        self.mcp.add_tool(echo, title="Echo", description=description, annotations=READONLY, **TEXT)
        self.revision = revision

    async def slow_operation(
        self,
        delay_ms: Annotated[
            int, Field(ge=0, le=MAX_DELAY_MS, description="How long to take, in milliseconds.")
        ],
    ) -> str:
        """Take delay_ms milliseconds before answering. Cancelling the request
        (notifications/cancelled) stops it at once."""
        try:
            await anyio.sleep(delay_ms / 1000)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            logger.info("slow_operation(%d ms) cancelled", delay_ms)
            raise
        return f"finished after {delay_ms} ms"

    def server_stats(self) -> ServerStats:
        """Report this server process's id, catalog revision, tools/call requests received
        so far (this one included) and cancelled slow_operation calls."""
        return ServerStats(
            pid=os.getpid(),
            revision=self.revision,
            calls=self.calls,
            cancelled_slow_operations=self.cancelled,
        )

    async def reconfigure(
        self,
        ctx: Context,
        revision: Annotated[
            int, Field(ge=min(REVISIONS), le=max(REVISIONS), description="The revision to use.")
        ],
    ) -> str:
        """Switch the tool catalog to another revision (2 changes echo's description and
        adds echo_upper), then tell connected clients that the tool list changed."""
        self.apply_revision(revision)
        # Clients of the 2026 protocol hear of it on their subscriptions/listen streams,
        # handshake-era clients by a notification on their session.
        await ctx.notify_tools_changed()
        for session in list(self._sessions):
            with anyio.move_on_after(NOTIFY_TIMEOUT):
                await session.send_tool_list_changed()
        return f"tool catalog revision {revision} is active"

    async def _observe(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """Middleware: count tool calls and remember sessions to tell of catalog changes."""
        if ctx.method == "tools/call":
            self.calls += 1
        elif ctx.method == "initialize":
            # Remembered before the client's initialize() returns, so no later call of
            # another client's can outrun it.
            self._sessions.append(ctx.session)
        return await call_next(ctx)


def _advertise_tool_list_changes(server: MCPServer) -> None:
    """Make the handshake on every transport advertise ``tools.listChanged``.

    The SDK's HTTP and SSE apps build the initialize result from the low-level server's
    default options, which claim no list changes; ``reconfigure`` does send them, and
    clients decide from the capability whether to expect them.
    """
    lowlevel = server._lowlevel_server
    build_options = lowlevel.create_initialization_options

    def create_initialization_options(
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return build_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )

    lowlevel.create_initialization_options = create_initialization_options


def revision_from_environment() -> int:
    """The catalog revision to start with: ``ARGUS_DEMO_REVISION``, 1 when unset.

    Raises:
        DemoConfigurationError: The variable holds something other than a known revision.
    """
    raw = os.environ.get(REVISION_VARIABLE, "").strip()
    if not raw:
        return 1
    if raw not in {str(revision) for revision in REVISIONS}:
        raise DemoConfigurationError(
            f"{REVISION_VARIABLE} must be one of {', '.join(map(str, REVISIONS))}, not {raw!r}"
        )
    return int(raw)


def transport_security(host: str) -> TransportSecuritySettings:
    """Host/Origin checks for the HTTP transports: loopback names only on a loopback
    bind (a DNS-rebinding guard), none on other binds, whose Host names vary."""
    if host not in LOOPBACK_HOSTS:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = ["127.0.0.1", "localhost", "[::1]"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*hosts, *(f"{name}:*" for name in hosts)],
        allowed_origins=[
            *(f"http://{name}" for name in hosts),
            *(f"http://{name}:*" for name in hosts),
        ],
    )


def announce(transport: str, url: str) -> None:
    """The one line a network transport prints to stdout once it accepts connections."""
    print(f"Argus demo MCP server ({transport}) listening on {url}", flush=True)


def run(transport: str, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the demo server over ``transport`` until the process is stopped.

    ``stdio`` speaks on stdin/stdout; ``http`` serves streamable HTTP at
    ``http://HOST:PORT/mcp``, ``sse`` at ``http://HOST:PORT/sse`` and ``websocket`` at
    ``ws://HOST:PORT/mcp``. Port 0 picks a free port (the announced URL names it).

    Raises:
        DemoConfigurationError: Unknown transport, or ``ARGUS_DEMO_REVISION`` is invalid.
        CannotListenError: The address cannot be bound (a network transport).
    """
    serve = SERVERS.get(transport)
    if serve is None:
        raise DemoConfigurationError(
            f"unknown transport {transport!r}; use one of {', '.join(TRANSPORTS)}"
        )
    revision = revision_from_environment()
    # Before the server is built, whose own logging set-up would otherwise win. Under
    # Django the project's logging is set up already and this does nothing.
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    demo = DemoServer(revision)
    anyio.run(partial(serve, demo.mcp, host, port))


async def _serve_stdio(server: MCPServer, host: str, port: int) -> None:
    await server.run_stdio_async()


async def _serve_http(server: MCPServer, host: str, port: int) -> None:
    app = server.streamable_http_app(host=host, transport_security=transport_security(host))
    await _serve_asgi(app, "http", host, port, "/mcp")


async def _serve_sse(server: MCPServer, host: str, port: int) -> None:
    app = server.sse_app(host=host, transport_security=transport_security(host))
    await _serve_asgi(app, "sse", host, port, "/sse")


async def _serve_asgi(app: Starlette, transport: str, host: str, port: int, path: str) -> None:
    # Bound here, so a taken port is a clear error rather than uvicorn exiting.
    sock = _bind(host, port)
    config = uvicorn.Config(
        app,
        # Logs go through the root logger to stderr; stdout holds the one announcement.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    listener = uvicorn.Server(config)
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await listener.serve(sockets=[sock])
        finally:
            stopped.set()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(serve)
        while not listener.started:
            if stopped.is_set():
                raise RuntimeError(f"the {transport} server stopped before it listened")
            await anyio.sleep(0.01)
        announce(transport, _url("http", host, sock.getsockname()[1], path))


async def _serve_websocket(server: MCPServer, host: str, port: int) -> None:
    sock = _bind(host, port)
    async with websocket_server(server, host, sock=sock, path="/mcp") as listener:
        announce("websocket", _url("ws", host, sock.getsockname()[1], "/mcp"))
        await listener.serve_forever()


SERVERS = {
    "stdio": _serve_stdio,
    "http": _serve_http,
    "sse": _serve_sse,
    "websocket": _serve_websocket,
}


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``.

    Raises:
        CannotListenError: The name does not resolve or the address cannot be bound.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise CannotListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _url(scheme: str, host: str, port: int, path: str) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{path}"


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, not {port}")
    return port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.demo_server", description=__doc__)
    parser.add_argument("--transport", choices=TRANSPORTS, default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=8765, help="0 picks a free port")
    arguments = parser.parse_args(argv)
    try:
        run(arguments.transport, arguments.host, arguments.port)
    except DemoConfigurationError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except CannotListenError as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")


if __name__ == "__main__":
    main()
