"""The one place API clients are built: the default server's, and one per pool server.

Every client gets the same limits from `[api]` (the whole-exchange timeout, the download
stall and pace limits) and registers its key as a secret, so no log line can show it.
"""

from __future__ import annotations

from bygheartd.api.client import BygheartClient, DownloadLimits
from bygheartd.config import ApiSection, Config, ServerSection, find_api_key, find_server_key
from bygheartd.errors import BygheartdError


class NoApiKey(BygheartdError):
    """The hosted API needs a key and none was found (the message says where to put one)."""


def no_key_message(config: Config) -> str:
    where = (
        f"[api] api_key_file in {config.source_path}"
        if config.source_path
        else "[api] api_key_file"
    )
    return (
        "no API key: set BYGHEART_API_KEY, give systemd the credential 'api-key', or set "
        f"{where}. To try bygheartd without a key, run `bygheartd demo`."
    )


def build_client(api: ApiSection, url: str, key: str | None, *, backend: str) -> BygheartClient:
    """A client for `url` with `key` and the limits of `[api]`."""
    if key:
        from bygheartd.logs import register_secret

        register_secret(key)
    return BygheartClient(
        url,
        key,
        backend="acestep" if backend == "acestep" else "bygheart",
        timeout=api.timeout_seconds,
        download_limits=DownloadLimits(
            stall_seconds=api.download_stall_seconds,
            min_bytes_per_second=api.download_min_bytes_per_second,
        ),
    )


def make_client(config: Config) -> BygheartClient:
    """The default server's client; `NoApiKey` when the hosted API has no key."""
    key = find_api_key(config).value
    if key is None and config.backend == "bygheart":
        raise NoApiKey(no_key_message(config))
    return build_client(config.api, config.api.effective_base_url(), key, backend=config.backend)


def make_server_client(config: Config, server: ServerSection) -> BygheartClient:
    """A client for one `[[api.servers]]` entry, with its own key (else the global one)."""
    key = find_server_key(config, server).value
    return build_client(config.api, server.url, key, backend="acestep")
