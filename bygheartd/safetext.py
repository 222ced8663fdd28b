"""Text from a server, a song file or a plugin, made safe to show on a terminal or in a log.

Such text is data, never instructions to the terminal: escape sequences (clear screen, an
OSC 52 clipboard write, an OSC 8 hyperlink, colours), C1 controls and bidi overrides are
shown as visible escapes (`\\x1b`, `\\u202e`) instead of being interpreted.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the invisible bidi and direction
# marks that can make a line read differently from what it holds.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, one_line: bool = False) -> str:
    """`text` with every control character shown as an escape (`one_line`: newlines and
    tabs too, for a table cell or a log line)."""
    pattern = _UNSAFE_LINE if one_line else _UNSAFE
    return pattern.sub(_visible, text)
