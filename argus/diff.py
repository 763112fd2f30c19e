"""A structured difference between two JSON values, for people to read.

Used wherever Argus shows what changed: a tool's definition against the accepted one,
an agent's scope against what was approved, a replayed result against the original.
"""

from typing import Any

MISSING = "(absent)"


def json_changes(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """Every leaf that differs, as ``{"path", "before", "after"}`` (``path`` is a JSON
    Pointer; a side that lacks the value shows ``"(absent)"``). Objects are compared
    key by key and lists index by index; anything else as a whole."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for key in sorted(set(before) | set(after), key=str):
            child = f"{path}/{_escape(str(key))}"
            changes += json_changes(before.get(key, MISSING), after.get(key, MISSING), child)
        return changes
    if isinstance(before, list) and isinstance(after, list):
        changes = []
        for index in range(max(len(before), len(after))):
            changes += json_changes(
                before[index] if index < len(before) else MISSING,
                after[index] if index < len(after) else MISSING,
                f"{path}/{index}",
            )
        return changes
    if before == after and type(before) is type(after):
        return []
    return [{"path": path or "/", "before": before, "after": after}]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
