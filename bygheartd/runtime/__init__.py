"""The wiring above the service: one place builds the store, the engine and the service."""

from bygheartd.api.factory import make_client, make_server_client, no_key_message
from bygheartd.engine.lock import EngineRole
from bygheartd.runtime.plugins import describe_plugins, plugin_name_problems, plugin_settings
from bygheartd.runtime.runtime import Runtime, open_service, open_store

__all__ = [
    "EngineRole",
    "Runtime",
    "describe_plugins",
    "make_client",
    "make_server_client",
    "no_key_message",
    "open_service",
    "open_store",
    "plugin_name_problems",
    "plugin_settings",
]
