"""`bygheartd config check` and `bygheartd init`: what the config says, never the key."""

from __future__ import annotations

from pathlib import Path

from bygheartd.catalog import counted
from bygheartd.config import Config, config_path, find_api_key, load_config
from bygheartd.errors import BygheartdError
from bygheartd.folders.checks import check_folders, folder_map

STARTER = """\
# bygheartd configuration: `bygheartd config example` prints every key with its default.
[api]
backend = "bygheart"
# The key: set BYGHEART_API_KEY, or put it alone in a file (chmod 600) and name it here.
api_key_file = ""
# To try it offline, run `bygheartd simulator --port 8001` and uncomment this line
# (any bgh_... key works there, and nothing is spent):
# base_url = "http://127.0.0.1:8001"

[folders]
inbox = "{root}/inbox"
output = "{root}/output"
archive = "{root}/archive"
failed = "{root}/failed"
drafts = "{root}/drafts"

[defaults]
model = "bygheart-studio-pro"
style = ""

[plugins]
enabled = ["quality", "tags"]
"""


def check_config(
    explicit: Path | None, *, online: bool = False, timeout: float | None = None
) -> int:
    """Print what the config amounts to; 1 when something would stop songs being made.
    `online` also asks the backend (reachable, key accepted, models), which the offline
    check cannot know: a wrong port or a revoked key otherwise shows up only as held jobs."""
    path, _ = config_path(explicit)
    try:
        config = load_config(explicit)
    except BygheartdError as exc:
        print(f"config: {path}\nINVALID:\n{exc}")
        return 1
    print(f"config: {config.source_path or f'{path} (not found: built-in defaults)'}")
    print(f"backend: {config.backend} at {config.api.effective_base_url()}")
    print(f"plan: {config.plan}")
    ok = True
    try:
        key = find_api_key(config)
    except BygheartdError as exc:
        print(f"api key: ERROR {exc}")
        return 1
    if key.source:
        print(f"api key: found in {key.source}")
    elif config.backend == "acestep":
        print("api key: none (fine for a self-hosted ACE-Step server without auth)")
    else:
        ok = False
        print("api key: MISSING: set BYGHEART_API_KEY or [api] api_key_file")
    for shadowed in key.shadowed:
        print(f"  also found in {shadowed} (not used: shadowed)")
    for warning in key.warnings:
        print(f"  warning: {warning}")
    if not _show_pool(config):
        ok = False
    if not _show_store(config):
        ok = False
    print("folders:")
    for name, folder in folder_map(config).items():
        print(f"  {name:8} {folder}")
    try:
        problems = check_folders(config, create=False)
    except BygheartdError as exc:
        problems, ok = [str(exc)], False
    for problem in problems:
        print(f"  problem: {problem}")
    print("presets: " + (", ".join(sorted(config.presets)) or "none"))
    print("plugins enabled: " + (", ".join(config.plugins.enabled) or "none"))
    from bygheartd.runtime import plugin_name_problems

    for problem in plugin_name_problems(config):
        ok = False
        print(f"  problem: {problem}")
    if online and not _check_online(config, timeout):
        ok = False
    print("OK" if ok else "NOT READY")
    return 0 if ok else 1


def _show_pool(config: Config) -> bool:
    """The servers of `[[api.servers]]`, each with its limit and key source (never a key);
    False when a server's key file is missing."""
    from bygheartd.config import find_server_key

    if config.backend == "acestep":
        state = "on" if config.resubmit_lost else "off"
        print(f"resubmit lost tasks: {state} ([queue] resubmit_lost)")
    if not config.api.servers:
        return True
    ok = True
    count = len(config.api.servers)
    print(f"servers: a pool of {count}" + (" (a pool of one)" if count == 1 else ""))
    for server in config.api.servers:
        try:
            lookup = find_server_key(config, server)
        except BygheartdError as exc:
            ok = False
            print(f"  {server.url}: ERROR {exc}")
            continue
        source = lookup.source or "no key"
        lora = f", LoRA {server.lora_path} (on that server)" if server.lora_path else ""
        print(f"  {server.url}: max_in_flight {server.max_in_flight}, key from {source}{lora}")
        for warning in lookup.warnings:
            print(f"    warning: {warning}")
    return ok


# A check is asked for by someone waiting at a prompt: a server that does not answer is
# reported after this long, not after the engine's whole-exchange timeout.
ONLINE_TIMEOUT_SECONDS = 10.0


def _check_online(config: Config, timeout: float | None) -> bool:
    """Print what the backend says, a line per finding; False when any is an error."""
    import asyncio

    from bygheartd.service.online import check_backend

    seconds = timeout or min(ONLINE_TIMEOUT_SECONDS, config.api.timeout_seconds)
    where = config.api.effective_base_url()
    if len(config.api.servers) > 1:
        where = f"{len(config.api.servers)} servers, at once"
    print(f"online ({where}; up to {seconds:g} s for each answer):", flush=True)
    asked = config.replaced(api=config.api.replaced(timeout_seconds=seconds))
    findings = asyncio.run(check_backend(asked))
    for finding in findings:
        print(f"  {finding.line()}")
    return all(f.level != "error" for f in findings)


def write_starter_config(explicit: Path | None, force: bool) -> int:
    path, _ = config_path(explicit)
    if path.exists() and not force:
        print(f"{path} already exists: edit it, or use --force to replace it")
        return 1
    root = Path("~/Music/Bygheart")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STARTER.format(root=root), encoding="utf-8")
    config = load_config(path)
    for name, folder in folder_map(config).items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"problem: cannot create the {name} folder {folder}: {exc.strerror}")
    for problem in check_folders(config):
        print(f"problem: {problem}")
    print(f"wrote {path}")
    for name, folder in folder_map(config).items():
        print(f"  {name:8} {folder}")
    print("next: set BYGHEART_API_KEY (or api_key_file), then `bygheartd config check`")
    return 0


def _show_store(config: Config) -> bool:
    """Where jobs live; a PostgreSQL store is asked (reachable, ours, its schema), since a
    wrong password or host otherwise shows up only when the daemon starts."""
    if not config.store.shared:
        print(f"store: SQLite, {config.state_dir / 'jobs.sqlite3'}")
        return True
    import asyncio

    from bygheartd.service.service import open_service

    async def ask() -> str:
        service = open_service(config)
        try:
            counts = await service.counts()
            engines = await service.engines()
        finally:
            await service.close()
        live = sum(1 for e in engines if e["live"])
        return f"{counted(sum(counts.values()), 'job')}, {counted(live, 'engine')} running on it"

    shown = config.store.display_url()
    try:
        text = asyncio.run(ask())
    except BygheartdError as exc:
        print(f"store: PostgreSQL, {shown}: ERROR {str(exc).splitlines()[0]}")
        return False
    print(f"store: PostgreSQL, {shown} (shared): {text}")
    return True
