"""Runaway guards: call budgets and loop detection, as atomic counters in Redis.

The counters live in the Redis every process shares (the server of ``REDIS_URL``, or the
embedded broker), so workers on several machines count together. Each check is one
Lua script: it reads every counter a call is subject to and increments all of them
only when none would pass its cap, so concurrent calls can never overshoot a budget and
a refused call consumes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from argus.broker import redis_client

PREFIX = "argus:guard:"
HOUR = 3600
DAY = 86400
# Per-execution counters outlive any execution (its timeout is far shorter).
EXECUTION_TTL = 7 * DAY

# KEYS: counters; ARGV: cap and time-to-live of each, in order (cap -1: no cap).
# Returns 0 when every counter was incremented, else the 1-based index of the first
# counter that is at its cap (nothing incremented).
_TAKE = """
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[2 * i - 1])
  if cap >= 0 and tonumber(redis.call('GET', key) or '0') >= cap then
    return i
  end
end
for i, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('EXPIRE', key, tonumber(ARGV[2 * i]))
end
return 0
"""

# KEYS[1]: the execution's last call; ARGV: signature, time-to-live. Returns how many
# calls in a row (this one included) had this signature.
_REPEAT = """
local last = redis.call('HGET', KEYS[1], 'signature')
local count = 1
if last == ARGV[1] then
  count = redis.call('HINCRBY', KEYS[1], 'count', 1)
else
  redis.call('HSET', KEYS[1], 'signature', ARGV[1], 'count', 1)
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return count
"""


@functools.cache
def _redis():
    """One client per process (its connection pool notices a fork)."""
    return redis_client()


@dataclass(frozen=True)
class Budget:
    """One counter a call is subject to: what it counts, its cap, its window."""

    key: str
    cap: int | None
    ttl: int
    label: str


def hour_bucket(now=None) -> int:
    return int((now or timezone.now()).timestamp()) // HOUR


def day_bucket(now=None) -> int:
    return int((now or timezone.now()).timestamp()) // DAY


def agent_budgets(
    agent_id: int,
    tool_id: int,
    execution: str,
    *,
    per_execution: int | None,
    per_hour: int | None,
    per_day: int | None,
    tool_per_execution: int | None,
    tool_per_hour: int | None,
    now=None,
) -> list[Budget]:
    """The counters one tool call of an agent counts against."""
    hour, day = hour_bucket(now), day_bucket(now)
    base = f"{PREFIX}agent:{agent_id}"
    return [
        Budget(
            f"{base}:exec:{execution}", per_execution, EXECUTION_TTL, "tool calls per execution"
        ),
        Budget(f"{base}:hour:{hour}", per_hour, 2 * HOUR, "tool calls per hour"),
        Budget(f"{base}:day:{day}", per_day, 2 * DAY, "tool calls per day"),
        Budget(
            f"{base}:exec:{execution}:tool:{tool_id}",
            tool_per_execution,
            EXECUTION_TTL,
            "calls of this tool per execution",
        ),
        Budget(
            f"{base}:hour:{hour}:tool:{tool_id}",
            tool_per_hour,
            2 * HOUR,
            "calls of this tool per hour",
        ),
    ]


def take(budgets: list[Budget]) -> Budget | None:
    """Count one call against every budget, atomically; the budget at its cap (and
    nothing counted) when one is."""
    arguments: list[Any] = []
    for budget in budgets:
        arguments += [-1 if budget.cap is None else budget.cap, budget.ttl]
    refused = _redis().eval(_TAKE, len(budgets), *[b.key for b in budgets], *arguments)
    return budgets[int(refused) - 1] if refused else None


def used(keys: list[str]) -> list[int]:
    """The current values of counters (0 for those never counted)."""
    values = _redis().mget(keys) if keys else []
    return [int(value or 0) for value in values]


def call_signature(tool_id: int, arguments: Any) -> str:
    """The same tool with the same canonical arguments has the same signature."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{tool_id}\n{canonical}".encode()).hexdigest()


def repeats(agent_id: int, execution: str, signature: str) -> int:
    """Record a call and return how many calls in a row of the execution had its
    signature."""
    key = f"{PREFIX}agent:{agent_id}:exec:{execution}:last"
    return int(_redis().eval(_REPEAT, 1, key, signature, EXECUTION_TTL))
