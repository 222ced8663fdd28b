"""A real browser for the web tests: Debian's chromium driven by Playwright, started once per
module.

No browser is ever downloaded (`playwright install` is never run): Playwright drives the
system's chromium through `executable_path`. `make test` installs chromium with the other
system tools. Without it the tests are skipped with the reason, except under CI, where a
missing browser would silently hide the whole web face: there it is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

# Root on the test machines needs --no-sandbox; the rest keeps chromium off the network
# (no update checks, no sync, no QUIC probes) and lets <audio> load without a user gesture.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    # A made-up name that resolves to loopback, as in a DNS rebinding attack: the web tests
    # check that the daemon refuses a Host it does not know. Nothing else is resolved.
    "--host-resolver-rules=MAP rebind.test 127.0.0.1",
]
CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")


def chromium_path() -> str | None:
    """The system's chromium (BYGHEARTD_TEST_CHROMIUM overrides), or None."""
    wanted = os.environ.get("BYGHEARTD_TEST_CHROMIUM")
    for candidate in (wanted,) if wanted else CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip with the reason on a developer's machine; fail under CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module", name="browser")
def browser_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """`browser`: one headless chromium for the module; each test opens its own context
    (its own cookies). Import `browser_fixture` into a test module to use it."""
    executable = chromium_path()
    if executable is None:
        unavailable("chromium is not installed: `make test` installs it (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is missing: pip install -e '.[dev]'")
    downloads = tmp_path_factory.mktemp("browser-downloads")
    with sync_playwright() as playwright:
        # Playwright gives each launch a new, empty user-data-dir of its own.
        launched = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            downloads_path=Path(downloads),
            timeout=30_000,
        )
        try:
            yield launched
        finally:
            launched.close()
