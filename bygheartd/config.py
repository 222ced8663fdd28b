"""The configuration: pinned TOML keys (DESIGN.md), where the file and the key come from.

Unknown keys are refused with the nearest valid name, because a typo in a config file
otherwise silently falls back to a default that may spend credits on the wrong model.
"""

from __future__ import annotations

import difflib
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from bygheartd.errors import ConfigError

HOSTED_BASE_URL = "https://iamvision.tech/bygheartsong/api"
ACESTEP_BASE_URL = "http://127.0.0.1:8001"
KEY_ENV = "BYGHEART_API_KEY"
CONFIG_ENV = "BYGHEARTD_CONFIG"
CREDENTIAL_NAME = "api-key"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerSection(_Section):
    """One `[[api.servers]]` entry: a self-hosted ACE-Step server of the pool."""

    url: str
    api_key_file: str = ""  # else the global key
    # One running and one waiting: the GPU never idles between songs, and the rest of the
    # queue stays free to go wherever a GPU frees up first.
    max_in_flight: int = Field(2, ge=1, le=1000)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server url {value!r} must be an http(s) URL like http://gpu1:8001")
        return value.strip().rstrip("/")


class ApiSection(_Section):
    backend: Literal["bygheart", "acestep"] = "bygheart"
    base_url: str = ""
    api_key_file: str = ""
    # A pool of self-hosted servers (backend "acestep" only); replaces base_url.
    servers: list[ServerSection] = Field(default_factory=list)
    # The whole exchange (connect, send, the complete reply): a reply that drips is cut off
    # like one that never comes. For a download: until its reply begins, and the grace
    # before download_min_bytes_per_second counts.
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    # A download that receives no byte this long is cut off and retried (resuming).
    download_stall_seconds: float = Field(30.0, gt=0, le=600)
    # A download may take timeout_seconds + its size / this, then it is cut off and retried.
    download_min_bytes_per_second: int = Field(16384, ge=1)

    def effective_base_url(self) -> str:
        """The one server, or the pool's first (what a single-server probe talks to)."""
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.servers:
            return self.servers[0].url
        return ACESTEP_BASE_URL if self.backend == "acestep" else HOSTED_BASE_URL

    @model_validator(mode="after")
    def _one_way_to_name_servers(self) -> ApiSection:
        if not self.servers:
            return self
        if self.backend != "acestep":
            raise ValueError(
                "[[api.servers]] is for self-hosted ACE-Step servers: set [api] backend = "
                '"acestep", or remove [[api.servers]] to use the hosted API'
            )
        if self.base_url:
            raise ValueError(
                "[api] base_url and [[api.servers]] both name servers: keep one (a single "
                "server is a pool of one: move base_url into a [[api.servers]] url)"
            )
        seen: set[str] = set()
        for server in self.servers:
            if server.url in seen:
                raise ValueError(f"[[api.servers]] lists {server.url} twice: list it once")
            seen.add(server.url)
        return self


class FoldersSection(_Section):
    inbox: Path = Path("~/Music/Bygheart/inbox")
    output: Path = Path("~/Music/Bygheart/output")
    archive: Path = Path("~/Music/Bygheart/archive")
    failed: Path = Path("~/Music/Bygheart/failed")
    drafts: Path = Path("~/Music/Bygheart/drafts")
    state: Path | None = None

    @field_validator("inbox", "output", "archive", "failed", "drafts", "state", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        return Path(os.path.expandvars(str(value))).expanduser()


class DefaultsSection(_Section):
    """Request defaults; also the shape of a `[presets.<name>]` table."""

    model: str = "bygheart-studio-pro"
    style: str = ""
    audio_format: str = "mp3"
    language: str = "en"
    takes: int = Field(1, ge=1, le=8)


class PresetSection(_Section):
    """A preset may set any song-file key; it is validated when a request uses it."""

    model_config = ConfigDict(extra="allow")


class WatchSection(_Section):
    settle_seconds: float = Field(2.0, ge=0)
    poll_interval_seconds: float = Field(0.0, ge=0)
    rescan_seconds: float = Field(300.0, ge=0)
    ignore: list[str] = Field(default_factory=list)
    max_file_kib: int = Field(256, ge=1, le=65536)
    on_duplicate: Literal["skip", "allow"] = "skip"


class QueueSection(_Section):
    poll_min_seconds: float = Field(3.0, gt=0)
    poll_max_seconds: float = Field(30.0, gt=0)
    poll_batch: int = Field(50, ge=1, le=500)
    max_in_flight: int = Field(8, ge=1, le=1000)
    job_deadline_seconds: float = Field(3900.0, gt=0)
    resubmit_uncertain: bool = False
    # Make a task again when its server provably lost it (a restart); None: the backend's
    # default (true for acestep, false for the hosted API, where it would be refused).
    resubmit_lost: bool | None = None
    unknown_grace_seconds: float = Field(120.0, ge=0)
    retry_base_seconds: float = Field(2.0, gt=0)
    retry_max_seconds: float = Field(300.0, gt=0)
    max_attempts: int = Field(8, ge=1)


class BudgetSection(_Section):
    plan: Literal["pro", "ultimate", "self-hosted"] = "pro"
    daily_credits: int = Field(30, ge=0)
    monthly_credits: int = Field(200, ge=0)
    rollover_max: int = Field(60, ge=0)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like UTC)") from exc
        return value


class McpSection(_Section):
    http: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token_file: str = ""
    allowed_hosts: list[str] = Field(default_factory=list)
    dedupe_seconds: float = Field(600.0, ge=0)


class PluginsSection(_Section):
    """`[plugins]` plus `[plugins.<name>]` tables, which land in `extra` fields."""

    model_config = ConfigDict(extra="allow")

    # `quality` first: it measures each take as downloaded, before `tags` rewrites it.
    enabled: list[str] = Field(default_factory=lambda: ["quality", "tags"])
    disabled: list[str] = Field(default_factory=list)
    paths: list[Path] = Field(default_factory=list)
    hook_timeout_seconds: float = Field(300.0, gt=0)

    def tables(self) -> dict[str, dict[str, Any]]:
        extra = self.model_extra or {}
        return {k: dict(v) for k, v in extra.items() if isinstance(v, dict)}


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"


class WebSection(_Section):
    """`[web]`: the library page on the daemon's HTTP listener (`[mcp] host`/`port`)."""

    enabled: bool = False
    # How long a browser stays logged in after `bygheartd web` (sessions also end when the
    # daemon stops: they are kept in its memory only).
    session_hours: float = Field(12.0, gt=0, le=24 * 365)


class StoreSection(_Section):
    """`[store]`: the job store's online backups in `<state>/backups`."""

    # One at daemon start when the newest is older than a day (or there is none), then
    # daily; 0 takes none (and leaves backups already there alone).
    backups: int = Field(7, ge=0, le=1000)


class Config(_Section):
    api: ApiSection = Field(default_factory=lambda: ApiSection())
    folders: FoldersSection = Field(default_factory=lambda: FoldersSection())
    defaults: DefaultsSection = Field(default_factory=lambda: DefaultsSection())
    watch: WatchSection = Field(default_factory=lambda: WatchSection())
    queue: QueueSection = Field(default_factory=lambda: QueueSection())
    budget: BudgetSection = Field(default_factory=lambda: BudgetSection())
    mcp: McpSection = Field(default_factory=lambda: McpSection())
    plugins: PluginsSection = Field(default_factory=lambda: PluginsSection())
    log: LogSection = Field(default_factory=lambda: LogSection())
    store: StoreSection = Field(default_factory=lambda: StoreSection())
    web: WebSection = Field(default_factory=lambda: WebSection())
    presets: dict[str, PresetSection] = Field(default_factory=dict)

    _source_path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _plugin_tables_only(self) -> Config:
        """`[plugins]` accepts named tables; any other unknown key is a typo."""
        for key, value in (self.plugins.model_extra or {}).items():
            if not isinstance(value, dict):
                close = difflib.get_close_matches(key, list(PluginsSection.model_fields), n=1)
                hint = f": did you mean 'plugins.{close[0]}'?" if close else ""
                raise ValueError(f"unknown key 'plugins.{key}'{hint}")
        return self

    @model_validator(mode="after")
    def _resubmit_lost_self_hosted_only(self) -> Config:
        if self.queue.resubmit_lost and self.api.backend != "acestep":
            raise ValueError(
                "[queue] resubmit_lost = true is only for self-hosted ACE-Step servers: with "
                "the hosted API a task that looks lost may still run and be charged, so "
                "making it again could pay for it twice; remove the key (or set it to false)"
            )
        return self

    @property
    def resubmit_lost(self) -> bool:
        """Whether a task its server lost is made again (never for the hosted API)."""
        if self.api.backend != "acestep":
            return False
        return True if self.queue.resubmit_lost is None else self.queue.resubmit_lost

    @property
    def source_path(self) -> Path | None:
        """Where this config was read from (None: built-in defaults)."""
        return self._source_path

    @property
    def backend(self) -> str:
        return self.api.backend

    @property
    def plan(self) -> str:
        """`self-hosted` whenever the backend is ACE-Step: it has no credits."""
        return "self-hosted" if self.api.backend == "acestep" else self.budget.plan

    @property
    def state_dir(self) -> Path:
        if self.folders.state is not None:
            return self.folders.state
        env_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        if env_dir:
            return Path(env_dir)
        from platformdirs import PlatformDirs

        return Path(PlatformDirs("bygheartd", appauthor=False).user_state_dir)

    def request_defaults(self, preset: str | None = None) -> dict[str, Any]:
        """Defaults for a request: `[defaults]`, then a preset's keys on top."""
        merged: dict[str, Any] = {
            k: v for k, v in self.defaults.model_dump().items() if v not in ("", None)
        }
        if preset is not None:
            merged.update(self.presets[preset].model_dump())
        return merged

    def nearest_preset(self, name: str) -> str | None:
        found = difflib.get_close_matches(name, list(self.presets), n=1, cutoff=0.5)
        return found[0] if found else None


@dataclass(frozen=True)
class KeyLookup:
    """The API key and where it came from; `repr` never shows the key."""

    source: str | None
    shadowed: tuple[str, ...]
    warnings: tuple[str, ...]
    _value: str | None

    def __repr__(self) -> str:
        return f"KeyLookup(source={self.source!r}, shadowed={self.shadowed!r})"

    @property
    def value(self) -> str | None:
        return self._value


def find_api_key(config: Config, env: Mapping[str, str] | None = None) -> KeyLookup:
    """Look the key up in the pinned order: env, systemd credential, key file."""
    env = os.environ if env is None else env
    found: list[tuple[str, str]] = []
    warnings: list[str] = []
    if env.get(KEY_ENV, "").strip():
        found.append((f"environment variable {KEY_ENV}", env[KEY_ENV].strip()))
    cred_dir = env.get("CREDENTIALS_DIRECTORY", "")
    if cred_dir:
        cred = Path(cred_dir) / CREDENTIAL_NAME
        if cred.is_file():
            found.append((f"systemd credential {CREDENTIAL_NAME!r}", _read_secret(cred)))
    if config.api.api_key_file:
        key_file = Path(config.api.api_key_file).expanduser()
        if not key_file.is_file():
            raise ConfigError(
                f"[api] api_key_file {str(key_file)!r} does not exist: create it with the key "
                f"on one line (chmod 600), or set {KEY_ENV}"
            )
        mode = key_file.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(
                f"key file {key_file} is readable by other users: run `chmod 600 {key_file}`"
            )
        found.append((f"key file {key_file}", _read_secret(key_file)))
    found = [(src, val) for src, val in found if val]
    if not found:
        return KeyLookup(None, (), tuple(warnings), None)
    return KeyLookup(found[0][0], tuple(src for src, _ in found[1:]), tuple(warnings), found[0][1])


def find_server_key(config: Config, server: ServerSection) -> KeyLookup:
    """A pool server's key: its own `api_key_file`, else the global key."""
    if not server.api_key_file:
        return find_api_key(config)
    key_file = Path(server.api_key_file).expanduser()
    if not key_file.is_file():
        raise ConfigError(
            f"[[api.servers]] {server.url}: api_key_file {str(key_file)!r} does not exist: "
            "create it with the key on one line (chmod 600), or remove the key to use the "
            "global one"
        )
    warnings: list[str] = []
    if key_file.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.append(
            f"key file {key_file} is readable by other users: run `chmod 600 {key_file}`"
        )
    value = _read_secret(key_file) or None
    return KeyLookup(f"key file {key_file}" if value else None, (), tuple(warnings), value)


def _read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc.__class__.__name__}") from None


def config_path(explicit: Path | None, env: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """The config file to read and whether the user named it (then it must exist)."""
    env = os.environ if env is None else env
    if explicit is not None:
        return explicit.expanduser(), True
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser(), True
    from platformdirs import PlatformDirs

    return Path(PlatformDirs("bygheartd", appauthor=False).user_config_dir) / "config.toml", False


def load_config(explicit: Path | None = None) -> Config:
    path, required = config_path(explicit)
    if not path.exists():
        if required:
            raise ConfigError(
                f"config file {path} does not exist: run `bygheartd init` to write one "
                "(`bygheartd config example` prints every key)"
            )
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    config = parse_config(raw, source=str(path))
    config._source_path = path
    return config


def parse_config(raw: Mapping[str, Any], *, source: str = "config") -> Config:
    try:
        return Config.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source)) from None


def _explain(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc)
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{where}'{_suggest(loc)}")
        elif not loc or isinstance(err.get("input"), dict):
            lines.append(f"{source}: {err['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{source}: {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _suggest(loc: list[str]) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.5)
    return f": did you mean '{'.'.join([*loc[:-1], close[0]])}'?" if close else ""


class LiveConfig:
    """The one holder of the running config. Components keep this holder, never a copy of
    the config, and read `current` when they need a setting, so a reload (SIGHUP) that
    replaces it here reaches every one of them at once.
    """

    def __init__(self, config: Config) -> None:
        self._current = config

    @property
    def current(self) -> Config:
        return self._current

    def replace(self, config: Config) -> Config:
        """Install a reloaded config; returns the one it replaced."""
        old, self._current = self._current, config
        return old

    @classmethod
    def of(cls, config: Config | LiveConfig) -> LiveConfig:
        """The holder itself, or a holder of its own for a one-off use (a command, a test)."""
        return config if isinstance(config, LiveConfig) else cls(config)
