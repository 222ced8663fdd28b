"""JSON from a server, parsed so that nothing but ValueError can come out of it.

`json.loads` raises RecursionError, not ValueError, on a reply nested some thousand levels
deep, and a reply a few hundred levels deep parses but breaks whatever walks it later
(storing it, printing it, `json.dumps`): both are refused here, past MAX_JSON_DEPTH.

Python's `json` also reads the bare tokens `NaN`, `Infinity` and `-Infinity` (not JSON) and
turns a number too large for a float (`1e999`) into infinity. No reply of API.md carries
such a value, strict JSON cannot hold one (SQLite's `json_extract` and PostgreSQL's `json`
refuse the row, a browser's `JSON.parse` the sidecar), and arithmetic on it raises: each one
is read as null here, the one place replies are decoded, and named in `nulled` when the
caller passes a list, so that what it records can say the server sent one.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "TooDeep", "nulled_note", "read_json"]

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


def read_json(content: bytes | str, *, nulled: list[str] | None = None) -> Any:
    """JSON from a server; ValueError (TooDeep for nesting) when it cannot be used.

    A number that is not finite (`NaN`, `Infinity`, `-Infinity`, `1e999`) reads as None;
    its text is appended to `nulled` when given."""
    found: list[str] = [] if nulled is None else nulled

    def constant(token: str) -> None:
        found.append(token)

    def number(token: str) -> float | None:
        value = float(token)
        if math.isfinite(value):
            return value
        found.append(token if len(token) <= 24 else token[:21] + "...")
        return None

    try:
        value = json.loads(content, parse_constant=constant, parse_float=number)
    except RecursionError:
        raise TooDeep(
            f"the reply is nested too deeply to read (more than {MAX_JSON_DEPTH} levels)"
        ) from None
    if not _depth_within(value, MAX_JSON_DEPTH):
        raise TooDeep(f"the reply is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def nulled_note(where: str, nulled: list[str]) -> str:
    """What a record says of the numbers `read_json` read as null: "`result` held 2 numbers
    JSON has no place for (NaN, 1e999): read as null"."""
    shown = ", ".join(dict.fromkeys(nulled[:5]))
    count = len(nulled)
    plural = "s" if count != 1 else ""
    return f"{where} held {count} number{plural} JSON has no place for ({shown}): read as null"
