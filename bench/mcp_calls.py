"""Benchmark: a tool call through Argus's MCP client layer against the bare SDK.

Baseline: the official SDK's ClientSession over stdio to the demo server, calls awaited
in a loop on one event loop. Measured: ``tools.mcp.operations.call_tool`` from a plain
thread (what a Celery worker or a view does), which hands the call to the pooled session
on the pool's loop and waits. Also: a fresh session per call (what Argus avoids by
pooling). Reported as ratios to the baseline, measured in the same run.

    python bench/mcp_calls.py [--calls 300]
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "argus.settings")
os.environ.setdefault("ARGUS_DATA_DIR", tempfile.mkdtemp(prefix="argus-bench-"))

import django  # noqa: E402

django.setup()

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

from tools.mcp import operations  # noqa: E402
from tools.mcp.connection import ConnectionSpec  # noqa: E402
from tools.mcp.pool import get_pool  # noqa: E402

COMMAND = [sys.executable, "-m", "tools.demo_server", "--transport", "stdio"]


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def sdk_baseline(calls: int) -> list[float]:
    parameters = StdioServerParameters(command=COMMAND[0], args=COMMAND[1:], cwd=str(ROOT))
    async with stdio_client(parameters) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.call_tool("echo", {"text": "warm"})
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            await session.call_tool("echo", {"text": "x"})
            samples.append(time.perf_counter() - started)
        return samples


def spec() -> ConnectionSpec:
    return ConnectionSpec(
        server_id=1, config_version=1, name="demo", transport="stdio", timeout_s=30,
        command=COMMAND[0], args=tuple(COMMAND[1:]), cwd=str(ROOT),
    )  # fmt: skip


def argus_pooled(calls: int) -> list[float]:
    target = spec()
    operations.call_tool(target, "echo", {"text": "warm"})
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        operations.call_tool(target, "echo", {"text": "x"})
        samples.append(time.perf_counter() - started)
    return samples


def fresh_sessions(calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        operations.test_connection(spec())
        samples.append(time.perf_counter() - started)
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    calls = parser.parse_args().calls
    baseline = p50_ms(asyncio.run(sdk_baseline(calls)))
    pooled = p50_ms(argus_pooled(calls))
    fresh = p50_ms(fresh_sessions(max(3, calls // 60)))
    get_pool().close_all()
    print(f"SDK session, same loop (baseline): p50 {baseline:.2f} ms")
    print(f"Argus pooled call from a thread:   p50 {pooled:.2f} ms  ratio {pooled / baseline:.2f}")
    print(f"fresh session per call:            p50 {fresh:.2f} ms  ratio {fresh / baseline:.1f}")


if __name__ == "__main__":
    main()
