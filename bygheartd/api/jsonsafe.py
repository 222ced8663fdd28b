"""JSON from a server, parsed so that nothing but ValueError can come out of it.

`json.loads` raises RecursionError, not ValueError, on a reply nested some thousand levels
deep, and a reply a few hundred levels deep parses but breaks whatever walks it later
(storing it, printing it, `json.dumps`): both are refused here, past MAX_JSON_DEPTH.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "TooDeep", "read_json"]

# No reply of API.md nests deeper than 6 (envelope, list, entry, `result`, take, `metas`).
MAX_JSON_DEPTH = 64


class TooDeep(ValueError):
    """JSON nested deeper than a reply of API.md ever is (or than the parser can go)."""


def _depth_within(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` containers deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def read_json(content: bytes | str) -> Any:
    """JSON from a server; ValueError (TooDeep for nesting) when it cannot be used."""
    try:
        value = json.loads(content)
    except RecursionError:
        raise TooDeep(
            f"the reply is nested too deeply to read (more than {MAX_JSON_DEPTH} levels)"
        ) from None
    if not _depth_within(value, MAX_JSON_DEPTH):
        raise TooDeep(f"the reply is nested more than {MAX_JSON_DEPTH} levels deep")
    return value
