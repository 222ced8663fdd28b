"""Shared fixtures: the anyio backend, the real simulator on loopback, configs in tmp dirs."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
