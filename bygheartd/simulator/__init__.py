"""A faithful stand-in for the Bygheart Music API (and a self-hosted ACE-Step 1.5 server):
a real HTTP server with plans, credits, queueing, real audio and fault injection.
"""

from __future__ import annotations

from .app import create_app
from .plans import key_label
from .server import RunningSimulator, run_in_thread, serve
from .settings import CLI_OPTIONS, RUNTIME_FIELDS, CliOption, SimulatorSettings, settings_from_cli
from .state import Simulator

__all__ = [
    "CLI_OPTIONS",
    "RUNTIME_FIELDS",
    "CliOption",
    "RunningSimulator",
    "Simulator",
    "SimulatorSettings",
    "create_app",
    "key_label",
    "run_in_thread",
    "serve",
    "settings_from_cli",
]
