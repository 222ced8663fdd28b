"""Logging setup: journald detection on a real file, formats, levels, secret redaction."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from bygheartd.errors import ConfigError
from bygheartd.logs import (
    NOISY_LOGGERS,
    clear_secrets,
    is_journal_stream,
    parse_level,
    register_secret,
    setup_logging,
)

SECRET = "bgh_live_4f9a8c7e2d1b"
log = logging.getLogger("bygheartd.test")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the root logger, the noisy loggers and the secrets as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)
    clear_secrets()


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[TextIO]:
    """A real file to log into: it has a device and an inode, like the journal's socket."""
    with open(tmp_path / "stderr.log", "w+", encoding="utf-8") as file:
        yield file


def as_journal(stream: TextIO, monkeypatch: pytest.MonkeyPatch) -> None:
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")


def lines(stream: TextIO) -> list[str]:
    stream.flush()
    stream.seek(0)
    return stream.read().splitlines()


TERMINAL_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (\w+) +(\S+): (.*)$")


def test_journal_stream_is_detected_when_it_names_the_stderr_file(
    stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_journal(stream, monkeypatch)
    assert is_journal_stream(stream)


def test_journal_stream_naming_another_file_is_not_the_journal(
    stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
    assert not is_journal_stream(stream)


def test_journal_lines_carry_syslog_priorities_and_no_timestamps(
    stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_journal(stream, monkeypatch)
    setup_logging("debug", stream=stream)
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert lines(stream) == [
        "<7>bygheartd.test: d",
        "<6>bygheartd.test: i",
        "<4>bygheartd.test: w",
        "<3>bygheartd.test: e",
        "<2>bygheartd.test: c",
    ]


def test_journal_tracebacks_keep_the_priority_on_every_line(
    stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_journal(stream, monkeypatch)
    setup_logging(stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    written = lines(stream)
    assert written[0] == "<3>bygheartd.test: failed"
    assert written[-1] == "<3>RuntimeError: boom"
    assert all(line.startswith("<3>") for line in written)


def test_terminal_lines_are_readable_with_timestamps(stream: TextIO) -> None:
    setup_logging(stream=stream)
    log.warning("disk %s", "full")
    (line,) = lines(stream)
    match = TERMINAL_LINE.match(line)
    assert match is not None, line
    assert match.groups() == ("WARNING", "bygheartd.test", "disk full")


def test_a_stale_journal_stream_gives_the_terminal_format(
    stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    setup_logging(stream=stream)
    log.info("hello")
    (line,) = lines(stream)
    assert TERMINAL_LINE.match(line), line


def test_records_below_the_level_are_dropped(stream: TextIO) -> None:
    setup_logging("warning", stream=stream)
    log.info("quiet")
    log.warning("loud")
    assert [line.rsplit(": ", 1)[1] for line in lines(stream)] == ["loud"]


def test_calling_setup_twice_does_not_duplicate_lines(stream: TextIO) -> None:
    setup_logging(stream=stream)
    setup_logging(stream=stream)
    log.info("once")
    assert len(lines(stream)) == 1


def test_a_second_setup_applies_the_new_level(stream: TextIO) -> None:
    setup_logging("info", stream=stream)
    setup_logging("error", stream=stream)
    log.warning("dropped")
    log.error("kept")
    assert [line.rsplit(": ", 1)[1] for line in lines(stream)] == ["kept"]


def test_noisy_libraries_are_quiet_at_info(stream: TextIO) -> None:
    setup_logging("info", stream=stream)
    logging.getLogger("httpx").info("HTTP Request: GET /v1/query")
    logging.getLogger("apscheduler.executors.default").info("Running job")
    logging.getLogger("httpx").warning("retrying")
    assert [line.rsplit(": ", 1)[1] for line in lines(stream)] == ["retrying"]


def test_noisy_libraries_speak_at_debug(stream: TextIO) -> None:
    setup_logging("debug", stream=stream)
    logging.getLogger("httpx").info("HTTP Request: GET /v1/query")
    assert len(lines(stream)) == 1


def test_nothing_is_written_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug")
    log.error("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "bygheartd.test: to stderr" in captured.err


def test_stdout_is_refused_as_a_log_stream() -> None:
    with pytest.raises(ValueError, match="stdout"):
        setup_logging(stream=sys.stdout)


def test_registered_secret_is_redacted_from_the_message(stream: TextIO) -> None:
    setup_logging(stream=stream)
    register_secret(SECRET)
    log.info(f"key is {SECRET}")
    (line,) = lines(stream)
    assert SECRET not in line
    assert line.endswith("key is ***")


def test_registered_secret_is_redacted_from_arguments(stream: TextIO) -> None:
    setup_logging(stream=stream)
    register_secret(SECRET)
    log.info("headers %s", {"Authorization": f"Bearer {SECRET}"})
    (line,) = lines(stream)
    assert SECRET not in line
    assert "Bearer ***" in line


def test_registered_secret_is_redacted_from_exception_text(
    stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_journal(stream, monkeypatch)
    setup_logging(stream=stream)
    register_secret(SECRET)
    try:
        raise PermissionError(f"rejected key {SECRET}")
    except PermissionError:
        log.exception("submit failed")
    written = "\n".join(lines(stream))
    assert SECRET not in written
    assert "<3>PermissionError: rejected key ***" in written


def test_registered_secret_is_redacted_from_stack_info(stream: TextIO) -> None:
    setup_logging(stream=stream)
    register_secret(SECRET)
    log.info("here", stack_info=True)  # the stack shows this line: bgh_live_4f9a8c7e2d1b
    written = "\n".join(lines(stream))
    assert "the stack shows this line: ***" in written
    assert SECRET not in written


def test_secrets_registered_before_setup_are_redacted_too(stream: TextIO) -> None:
    register_secret(SECRET)
    setup_logging(stream=stream)
    log.warning("%s", SECRET)
    assert lines(stream)[0].endswith(": ***")


def test_values_too_short_to_be_secrets_are_not_redacted(stream: TextIO) -> None:
    setup_logging(stream=stream)
    register_secret("")
    register_secret("ab")
    log.info("ab cd")
    assert lines(stream)[0].endswith(": ab cd")


@pytest.mark.parametrize(
    ("name", "level"),
    [("debug", logging.DEBUG), ("INFO", logging.INFO), (" Warning ", logging.WARNING)],
)
def test_parse_level_accepts_names_in_any_case(name: str, level: int) -> None:
    assert parse_level(name) == level


def test_parse_level_rejects_unknown_names_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_level("verbose")
    assert str(caught.value) == (
        "unknown log level 'verbose': use one of debug, info, warning, error, critical"
    )
    assert caught.value.key == "log.level"


def test_setup_rejects_an_unknown_level(stream: TextIO) -> None:
    with pytest.raises(ConfigError):
        setup_logging("loud", stream=stream)
