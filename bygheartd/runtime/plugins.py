"""Which plugins this config loads: settings for the plugin host, and what `config check`
says about names in `[plugins]` that no installed plugin has."""

from __future__ import annotations

import difflib
from pathlib import Path

from bygheartd.config import Config
from bygheartd.hooks.discovery import (
    entry_point_candidates,
    first_party_candidates,
    path_candidates,
)
from bygheartd.hooks.host import PluginHost, PluginInfo, PluginSettings


def plugin_settings(config: Config) -> PluginSettings:
    return PluginSettings(
        enabled=list(config.plugins.enabled),
        disabled=list(config.plugins.disabled),
        paths=[Path(p).expanduser() for p in config.plugins.paths],
        hook_timeout_seconds=config.plugins.hook_timeout_seconds,
        tables=config.plugins.tables(),
    )


def describe_plugins(config: Config) -> list[PluginInfo]:
    """Every plugin found for this config, loaded or not, with its hooks and load error."""
    return PluginHost.load(plugin_settings(config)).describe()


def plugin_name_problems(config: Config) -> list[str]:
    """Names in `[plugins] enabled`/`disabled` that no installed plugin has, each with the
    nearest real name: a typo there silently turns a plugin off (or fails to), and `config
    check` is where people look. Discovery only lists names; no plugin code is imported."""
    paths = [Path(p).expanduser() for p in config.plugins.paths]
    candidates = first_party_candidates() + entry_point_candidates() + path_candidates(paths)
    known = sorted({c.name for c in candidates})
    problems = []
    for where, names in (
        ("enabled", config.plugins.enabled),
        ("disabled", config.plugins.disabled),
    ):
        for name in names:
            if name in known:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "installed: " + (", ".join(known) or "none")
            )
            problems.append(f"unknown plugin {name!r} in [plugins] {where}: {hint}")
    return problems
