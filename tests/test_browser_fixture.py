"""The browser fixture itself: without chromium a developer's run skips the browser tests
with the reason, but a CI run fails, so that a missing browser cannot hide them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
USES_THE_BROWSER = """
from _browser import browser_fixture  # noqa: F401


def test_needs_the_browser(browser):
    assert browser.version
"""


def run_without_chromium(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_uses_browser.py").write_text(USES_THE_BROWSER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["BYGHEARTD_TEST_CHROMIUM"] = str(tmp_path / "no-such-chromium")
    env["PYTHONPATH"] = str(TESTS)
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    command += ["-p", "no:xdist", "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


def test_without_chromium_a_developer_run_skips_with_the_reason(tmp_path: Path) -> None:
    done = run_without_chromium(tmp_path, ci=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "chromium is not installed" in done.stdout and "make test" in done.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_without_chromium_a_ci_run_fails(tmp_path: Path, ci: str) -> None:
    done = run_without_chromium(tmp_path, ci=ci)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout and "skipped" not in done.stdout
    assert "chromium is not installed" in done.stdout and "CI is set" in done.stdout
