"""Logging setup for every bygheartd process: stderr only, journald-aware, secrets redacted.

Under journald each line carries a `<N>` syslog priority and no timestamp (the journal has
its own); on a terminal lines are readable with timestamps. Nothing ever goes to stdout,
which MCP over stdio owns.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TextIO

from bygheartd.errors import ConfigError
from bygheartd.safetext import visible

__all__ = [
    "NOISY_LOGGERS",
    "SecretRedactingFilter",
    "clear_secrets",
    "is_journal_stream",
    "parse_level",
    "register_secret",
    "setup_logging",
]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Chatty at info (a line per HTTP request, per scheduler run, per MCP message): they would
# drown the daemon's own lines in the journal. `--log-level debug` brings them back.
NOISY_LOGGERS = (
    "httpx",
    "httpcore",
    "uvicorn.access",
    "apscheduler",
    "mcp.server.lowlevel.server",
    # "Terminating session: None" several times per stateless MCP-over-HTTP call.
    "mcp.server.streamable_http",
    "mcp.server.streamable_http_manager",
)

REDACTED = "***"
# Shorter values are not real secrets, and replacing them would mangle every line.
_MIN_SECRET_LENGTH = 4

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def parse_level(name: str) -> int:
    """The logging level for a config or CLI name such as "info" (any case)."""
    level = LEVELS.get(name.strip().lower())
    if level is None:
        raise ConfigError(
            f"unknown log level {name!r}",
            key="log.level",
            hint="use one of " + ", ".join(LEVELS),
        )
    return level


def register_secret(value: str) -> None:
    """Redact `value` from every log line from now on (defence in depth for the API key)."""
    value = value.strip()
    if len(value) < _MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        _secrets.add(value)


def clear_secrets() -> None:
    """Forget every registered secret (tests, and a reload that changes the key)."""
    with _secrets_lock:
        _secrets.clear()


def _redact(text: str) -> str:
    with _secrets_lock:
        # Longest first, so a secret that contains another one is hidden whole.
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class VisibleTextFilter(logging.Filter):
    """A log line's text from servers, song files or plugins (a failure reason, a title)
    cannot drive the terminal or the journal: control characters and bidi overrides are
    shown as escapes. Newlines stay (tracebacks); the message is rendered first."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as usual
            return True
        safe = visible(message)
        if safe != message or record.args:
            record.msg, record.args = safe, None
        return True


class SecretRedactingFilter(logging.Filter):
    """Rewrites a record so that no registered secret survives formatting.

    The message is rendered with its arguments and then redacted (an argument may hold
    the secret: a URL, a header dict, an exception), and so are the traceback and stack
    texts. Every handler that formats the record afterwards sees the redacted version.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        with _secrets_lock:
            if not _secrets:
                return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as usual
            return True
        record.msg = _redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact(record.exc_text)
        if record.stack_info:
            record.stack_info = _redact(record.stack_info)
        return True


# (lowest logging level, syslog priority), highest first.
_SYSLOG_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)


class JournalFormatter(logging.Formatter):
    """`<6>bygheartd.engine: message`, the priority on every line of a traceback too,
    since journald reads each line as its own entry."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self.priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())

    @staticmethod
    def priority(levelno: int) -> int:
        """The syslog priority (2 crit ... 7 debug) of a logging level."""
        for threshold, priority in _SYSLOG_PRIORITIES:
            if levelno >= threshold:
                return priority
        return 7


TERMINAL_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
TERMINAL_DATEFMT = "%Y-%m-%d %H:%M:%S"


def is_journal_stream(stream: TextIO) -> bool:
    """True when `stream` is the journal: $JOURNAL_STREAM ("dev:inode") names its file.

    Comparing the file, not just the variable's presence, keeps a child whose stderr was
    redirected (a shell pipe under a service) from writing `<6>` into a log file.
    """
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False  # io.StringIO and friends have no file
    return expected == f"{st.st_dev}:{st.st_ino}"


class _BygheartdHandler(logging.StreamHandler[TextIO]):
    """Our handler, marked by its class so that setup_logging can replace it."""


def setup_logging(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Send every log record at `level` and above to stderr (or `stream`).

    Idempotent: a second call replaces the handler of the first (a reload that changes the
    level), and leaves other handlers (pytest's, say) alone.
    """
    numeric = parse_level(level)
    target = sys.stderr if stream is None else stream
    if target is sys.stdout or target is sys.__stdout__:
        raise ValueError("bygheartd never logs to stdout (MCP over stdio owns it)")

    handler = _BygheartdHandler(target)
    if is_journal_stream(target):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(TERMINAL_FORMAT, TERMINAL_DATEFMT))
    handler.addFilter(SecretRedactingFilter())
    handler.addFilter(VisibleTextFilter())

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _BygheartdHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)

    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING
        )
