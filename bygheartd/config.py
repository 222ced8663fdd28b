"""The configuration: pinned TOML keys (DESIGN.md), where the file and the key come from.

Unknown keys are refused with the nearest valid name, because a typo in a config file
otherwise silently falls back to a default that may spend credits on the wrong model.

The sections are msgspec structs: every command reads the config first, and `bygheartd
list` must answer in a blink, so the config costs a millisecond to import and to check
rather than the fifth of a second a pydantic model tree takes to build at start-up.
The structs are frozen: a reload builds a new config and the one holder (`LiveConfig`)
swaps it in.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, get_args, get_origin

import msgspec
from msgspec import Meta, field
from msgspec.structs import force_setattr

from bygheartd.errors import ConfigError

HOSTED_BASE_URL = "https://iamvision.tech/bygheartsong/api"
ACESTEP_BASE_URL = "http://127.0.0.1:8001"
KEY_ENV = "BYGHEART_API_KEY"
CONFIG_ENV = "BYGHEARTD_CONFIG"
CREDENTIAL_NAME = "api-key"

Seconds = Annotated[float, Meta(gt=0)]
Count = Annotated[int, Meta(ge=0)]
Positive = Annotated[int, Meta(ge=1)]
InFlight = Annotated[int, Meta(ge=1, le=1000)]


class KeyProblem(ValueError):
    """A section check that belongs to one key, so the message can name it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Fields a config file may not set (filled in by `parse_config`).
    INTERNAL: ClassVar[frozenset[str]] = frozenset()
    # The field that takes the section's unknown *tables* (`[plugins.<name>]`), if any.
    TABLES: ClassVar[str | None] = None

    def replaced(self, **changes: Any) -> Self:
        """A copy with some keys changed, checked like a config file's."""
        return msgspec.structs.replace(self, **changes)


class ServerSection(_Section, frozen=True):
    """One `[[api.servers]]` entry: a self-hosted ACE-Step server of the pool."""

    url: str
    api_key_file: str = ""  # else the global key
    # One running and one waiting: the GPU never idles between songs, and the rest of the
    # queue stays free to go wherever a GPU frees up first.
    max_in_flight: InFlight = 2
    # A LoRA adapter on that server (a path there: a PEFT directory or a LoKr file), loaded
    # once through its /v1/lora/load when the pool first finds it healthy, and again when its
    # /v1/lora/status no longer lists it (a restart); never per job: LoRA is server-global.
    lora_path: str = ""

    def __post_init__(self) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(self.url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise KeyProblem(
                "url", f"server url {self.url!r} must be an http(s) URL like http://gpu1:8001"
            )
        force_setattr(self, "url", self.url.strip().rstrip("/"))
        lora = self.lora_path.strip()
        if lora and not lora.isprintable():
            raise KeyProblem(
                "lora_path", f"lora_path {lora!r} holds a control character: write the path alone"
            )
        force_setattr(self, "lora_path", lora)


class ApiSection(_Section, frozen=True):
    backend: Literal["bygheart", "acestep"] = "bygheart"
    base_url: str = ""
    api_key_file: str = ""
    # A pool of self-hosted servers (backend "acestep" only); replaces base_url.
    servers: list[ServerSection] = field(default_factory=list)
    # The whole exchange (connect, send, the complete reply): a reply that drips is cut off
    # like one that never comes. For a download: until its reply begins, and the grace
    # before download_min_bytes_per_second counts.
    timeout_seconds: Annotated[float, Meta(gt=0, le=600)] = 30.0
    # A download that receives no byte this long is cut off and retried (resuming).
    download_stall_seconds: Annotated[float, Meta(gt=0, le=600)] = 30.0
    # A download may take timeout_seconds + its size / this, then it is cut off and retried.
    download_min_bytes_per_second: Positive = 16384

    def effective_base_url(self) -> str:
        """The one server, or the pool's first (what a single-server probe talks to)."""
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.servers:
            return self.servers[0].url
        return ACESTEP_BASE_URL if self.backend == "acestep" else HOSTED_BASE_URL

    def __post_init__(self) -> None:
        if not self.servers:
            return
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


class FoldersSection(_Section, frozen=True):
    inbox: Path = Path("~/Music/Bygheart/inbox")
    output: Path = Path("~/Music/Bygheart/output")
    archive: Path = Path("~/Music/Bygheart/archive")
    failed: Path = Path("~/Music/Bygheart/failed")
    drafts: Path = Path("~/Music/Bygheart/drafts")
    state: Path | None = None
    # When set, one copy of each job's keeper lands here (a music library, a phone sync).
    keepers: str = ""

    @property
    def keepers_folder(self) -> Path | None:
        """`keepers` as a folder (`~` and `$VARS` expanded), or None when not set."""
        if not self.keepers.strip():
            return None
        return Path(os.path.expandvars(self.keepers.strip())).expanduser()

    def __post_init__(self) -> None:
        # `~` and `$VARS` in every folder, the defaults included: a literal `~` folder in
        # the working directory is never what anyone meant.
        for name in ("inbox", "output", "archive", "failed", "drafts", "state"):
            value = getattr(self, name)
            if value is not None:
                force_setattr(self, name, Path(os.path.expandvars(str(value))).expanduser())


class DefaultsSection(_Section, frozen=True):
    """Request defaults; a `[presets.<name>]` table may set any song-file key on top."""

    model: str = "bygheart-studio-pro"
    style: str = ""
    audio_format: str = "mp3"
    language: str = "en"
    takes: Annotated[int, Meta(ge=1, le=8)] = 1


class WatchSection(_Section, frozen=True):
    settle_seconds: Annotated[float, Meta(ge=0)] = 2.0
    poll_interval_seconds: Annotated[float, Meta(ge=0)] = 0.0
    rescan_seconds: Annotated[float, Meta(ge=0)] = 300.0
    ignore: list[str] = field(default_factory=list)
    max_file_kib: Annotated[int, Meta(ge=1, le=65536)] = 256
    on_duplicate: Literal["skip", "allow"] = "skip"


class QueueSection(_Section, frozen=True):
    poll_min_seconds: Seconds = 3.0
    poll_max_seconds: Seconds = 30.0
    poll_batch: Annotated[int, Meta(ge=1, le=500)] = 50
    max_in_flight: InFlight = 8
    job_deadline_seconds: Seconds = 3900.0
    resubmit_uncertain: bool = False
    # Make a task again when its server provably lost it (a restart); None: the backend's
    # default (true for acestep, false for the hosted API, where it would be refused).
    resubmit_lost: bool | None = None
    unknown_grace_seconds: Annotated[float, Meta(ge=0)] = 120.0
    retry_base_seconds: Seconds = 2.0
    retry_max_seconds: Seconds = 300.0
    max_attempts: Positive = 8

    def __post_init__(self) -> None:
        # Each pair is a range: a minimum above its maximum is a typo, never a setting. A
        # rule over two keys, so both pairs are said at once, in one line.
        upside_down = [
            f"queue.{low} ({getattr(self, low):g}) is above queue.{high} ({getattr(self, high):g})"
            for low, high in (
                ("poll_min_seconds", "poll_max_seconds"),
                ("retry_base_seconds", "retry_max_seconds"),
            )
            if getattr(self, low) > getattr(self, high)
        ]
        if upside_down:
            raise ValueError(f"{'; '.join(upside_down)}: make each minimum the smaller one")


class BudgetSection(_Section, frozen=True):
    plan: Literal["pro", "ultimate", "self-hosted"] = "pro"
    daily_credits: Count = 30
    monthly_credits: Count = 200
    rollover_max: Count = 60
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.timezone == "UTC":
            return  # the default: no need to open the zone database at every start
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise KeyProblem(
                "timezone",
                f"unknown time zone {self.timezone!r} (use an IANA name like Europe/Berlin or UTC)",
            ) from exc


# Every finding the quality gate can make (plugins/quality.py CODES): `[retakes] when` names
# some of them. Here, not imported from the plugin: the config knows no plugin code.
FindingCode = Literal[
    "cut_short", "cut_off", "silent", "clipped", "undecodable", "off_tempo", "off_key"
]


class RetakesSection(_Section, frozen=True):
    """`[retakes]`: when no take passes the quality gate, the song is made again with a new
    seed, up to `max` times per job and within `daily_credits` a day (and the budget)."""

    max: Annotated[int, Meta(ge=0, le=5)] = 1
    when: list[FindingCode] = field(
        default_factory=lambda: ["cut_short", "cut_off", "silent", "clipped"]
    )
    daily_credits: Count = 10


class McpSection(_Section, frozen=True):
    http: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8765
    token_file: str = ""
    allowed_hosts: list[str] = field(default_factory=list)
    dedupe_seconds: Annotated[float, Meta(ge=0)] = 600.0


class PluginsSection(_Section, frozen=True):
    """`[plugins]` plus `[plugins.<name>]` tables, which are kept in `settings`."""

    INTERNAL: ClassVar[frozenset[str]] = frozenset({"settings"})
    TABLES: ClassVar[str | None] = "settings"

    # `quality` first: it measures each take as downloaded, before `tags` rewrites it.
    enabled: list[str] = field(default_factory=lambda: ["quality", "tags"])
    disabled: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    hook_timeout_seconds: Seconds = 300.0
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def tables(self) -> dict[str, dict[str, Any]]:
        return {name: dict(table) for name, table in self.settings.items()}


class LogSection(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"


class WebSection(_Section, frozen=True):
    """`[web]`: the library page on the daemon's HTTP listener (`[mcp] host`/`port`)."""

    enabled: bool = False
    # How long a browser stays logged in after `bygheartd web` (sessions also end when the
    # daemon stops: they are kept in its memory only).
    session_hours: Annotated[float, Meta(gt=0, le=24 * 365)] = 12.0


class StoreSection(_Section, frozen=True):
    """`[store]`: where jobs live (SQLite in the state folder, or one PostgreSQL database
    shared by several daemons) and the SQLite store's online backups."""

    # One at daemon start when the newest is older than a day (or there is none), then
    # daily; 0 takes none (and leaves backups already there alone).
    backups: Annotated[int, Meta(ge=0, le=1000)] = 7
    # "" = SQLite in the state folder; "postgresql://host/db" = one store for every daemon
    # and command that names it (DESIGN.md "One store for several daemons").
    url: str = ""
    # An engine that has not renewed its lease for this long is taken over by the others.
    lease_seconds: Annotated[float, Meta(ge=2, le=3600)] = 30.0

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                f"[store] url must be a postgresql:// URL (got {redact_url(self.url)!r}): "
                'leave it "" for SQLite in the state folder'
            )

    @property
    def shared(self) -> bool:
        """True when the store is a PostgreSQL database several daemons may share."""
        return bool(self.url)

    def display_url(self) -> str:
        """The URL as shown anywhere: never with its password."""
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """`postgresql://user:secret@host/db` as `postgresql://user:***@host/db`; a password
    given as a `password=` parameter is hidden too."""
    hidden = re.sub(r"(://[^:/@?#]*):[^/?#]*@", r"\1:***@", url)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", hidden)


class Config(msgspec.Struct, frozen=True, kw_only=True):
    api: ApiSection = field(default_factory=ApiSection)
    folders: FoldersSection = field(default_factory=FoldersSection)
    defaults: DefaultsSection = field(default_factory=DefaultsSection)
    watch: WatchSection = field(default_factory=WatchSection)
    queue: QueueSection = field(default_factory=QueueSection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    retakes: RetakesSection = field(default_factory=RetakesSection)
    mcp: McpSection = field(default_factory=McpSection)
    plugins: PluginsSection = field(default_factory=PluginsSection)
    log: LogSection = field(default_factory=LogSection)
    store: StoreSection = field(default_factory=StoreSection)
    web: WebSection = field(default_factory=WebSection)
    # `[presets.<name>]`: any song-file keys, validated when a request uses the preset.
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where this config was read from (None: built-in defaults); not a config key.
    source_path: Path | None = None

    def __post_init__(self) -> None:
        if self.queue.resubmit_lost and self.api.backend != "acestep":
            raise ValueError(
                "[queue] resubmit_lost = true is only for self-hosted ACE-Step servers: with "
                "the hosted API a task that looks lost may still run and be charged, so "
                "making it again could pay for it twice; remove the key (or set it to false)"
            )

    @property
    def resubmit_lost(self) -> bool:
        """Whether a task its server lost is made again (never for the hosted API)."""
        if self.api.backend != "acestep":
            return False
        return True if self.queue.resubmit_lost is None else self.queue.resubmit_lost

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
            k: v for k, v in msgspec.structs.asdict(self.defaults).items() if v not in ("", None)
        }
        if preset is not None:
            merged.update(self.presets[preset])
        return merged

    def nearest_preset(self, name: str) -> str | None:
        found = difflib.get_close_matches(name, list(self.presets), n=1, cutoff=0.5)
        return found[0] if found else None

    def as_record(self) -> dict[str, Any]:
        """Plain data in the config file's shape (`[plugins.<name>]` tables inside
        `plugins`, folders as strings): `parse_config(config.as_record())` gives it back."""
        record: dict[str, Any] = msgspec.to_builtins(self, enc_hook=_encode)
        record.pop("source_path", None)
        for name, kind in config_sections().items():
            if kind.TABLES is not None:
                record[name].update(record[name].pop(kind.TABLES))
        return record

    def replaced(self, **sections: Any) -> Config:
        """A copy with some sections swapped (a reload that keeps restart-only settings)."""
        return msgspec.structs.replace(self, **sections)


def section_keys(kind: type[_Section]) -> list[str]:
    """The keys a config file may set in a section of this kind, in their order."""
    return [f.name for f in msgspec.structs.fields(kind) if f.name not in kind.INTERNAL]


def config_sections() -> dict[str, type[_Section]]:
    """`[name]` → its section type, in the order the example config documents them."""
    return {
        f.name: f.type
        for f in msgspec.structs.fields(Config)
        if isinstance(f.type, type) and issubclass(f.type, _Section)
    }


def _encode(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def _decode(kind: type, value: Any) -> Any:
    if kind is Path:
        if not isinstance(value, str):
            raise TypeError("must be a path in quotes")
        if not value.strip():
            raise ValueError("is empty: give a path (or remove the key for the default)")
        return Path(value)
    raise NotImplementedError(f"cannot decode {kind.__name__}")


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


def key_sources_signature(
    config: Config, env: Mapping[str, str] | None = None
) -> tuple[object, ...]:
    """What the key sources look like, without reading a key: a change of the variable or
    of a file's identity, size or times is what makes a re-read worth it. The variable is
    kept only as a digest."""
    import hashlib

    env = os.environ if env is None else env
    parts: list[object] = [hashlib.sha256(env.get(KEY_ENV, "").encode()).hexdigest()]
    files = []
    if env.get("CREDENTIALS_DIRECTORY", ""):
        files.append(Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME)
    if config.api.api_key_file:
        files.append(Path(config.api.api_key_file).expanduser())
    for path in files:
        try:
            found = path.stat()
        except OSError:
            parts.append((str(path), None))
        else:
            stamp = (found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)
            parts.append((str(path), stamp))
    return tuple(parts)


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
    return parse_config(raw, source=str(path), path=path)


def parse_config(
    raw: Mapping[str, Any], *, source: str = "config", path: Path | None = None
) -> Config:
    """Check a parsed TOML document against the pinned keys; every unknown key and the
    first bad value of each section are reported at once, each naming its key."""
    sections = config_sections()
    problems = [f"{source}: {text}" for text in _unknown_top_level(raw, sections)]
    built: dict[str, Any] = {}
    for name, kind in sections.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            problems.append(f"{source}: {name} must be a table: write it as [{name}]")
            continue
        table, tables = _split_tables(kind, table)
        if name == "folders" and table.get("state") == "":
            del table["state"]  # `state = ""`: the default place
        unknown: list[str] = []
        tainted = set()  # keys that are unknown or hold an unknown key ([[api.servers]])
        for key, value in table.items():
            said = len(unknown)
            _find_unknown(kind, {key: value}, name, unknown)
            if len(unknown) > said:
                tainted.add(key)
        problems += [f"{source}: {text}" for text in unknown]
        # The other keys are checked too, so that one round of fixing is enough.
        table = {k: v for k, v in table.items() if k not in tainted}
        if kind.TABLES is not None:
            table[kind.TABLES] = tables
        problems += [f"{source}: {text}" for text in _convert(name, kind, table, built)]
    presets = raw.get("presets", {})
    if not isinstance(presets, dict):
        problems.append(f"{source}: presets must be tables: write each as [presets.NAME]")
    else:
        problems += [
            f"{source}: presets.{name} must be a table: write it as [presets.{name}]"
            for name, value in presets.items()
            if not isinstance(value, dict)
        ]
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        return Config(**built, presets={k: dict(v) for k, v in presets.items()}, source_path=path)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _convert(
    name: str, kind: type[_Section], table: dict[str, Any], built: dict[str, Any]
) -> list[str]:
    """Build one section into `built`, or say every bad value in it: msgspec stops at the
    first, so each bad key is set aside in turn and the rest checked again."""
    found: list[str] = []
    for _ in range(len(table) + 1):
        try:
            section = msgspec.convert(table, kind, dec_hook=_decode)
        except msgspec.ValidationError as exc:
            found.append(_explain(exc, name, kind, table))
            key = _top_key(exc)
            if key is None or key not in table:
                return found  # a rule over the whole section: nothing to set aside
            table = {k: v for k, v in table.items() if k != key}
            continue
        if not found:
            built[name] = section
        return found
    return found


def _top_key(exc: msgspec.ValidationError) -> str | None:
    """The section key a validation error is about (`$.servers[0].url` → `servers`)."""
    if isinstance(exc.__cause__, KeyProblem):
        return exc.__cause__.key
    found = _AT.match(str(exc))
    where = (found["where"] if found else "") or ""
    top = re.split(r"[.\[]", where.lstrip("."), maxsplit=1)[0]
    return top or None


def _unknown_top_level(raw: Mapping[str, Any], sections: Mapping[str, type[_Section]]) -> list[str]:
    problems = []
    for key in raw:
        if key in sections or key == "presets":
            continue
        # A key written above every section header lands at the top: name its section.
        owners = [name for name, kind in sections.items() if key in section_keys(kind)]
        if owners:
            problems.append(
                f"unknown key '{key}': did you mean '{owners[0]}.{key}' (under [{owners[0]}])?"
            )
            continue
        close = difflib.get_close_matches(key, [*sections, "presets"], n=1, cutoff=0.5)
        hint = f": did you mean '{close[0]}'?" if close else ""
        problems.append(f"unknown key '{key}'{hint}")
    return problems


def _split_tables(
    kind: type[_Section], table: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A section's keys, and apart from them the unknown tables of a section that takes
    them (`[plugins.tags]`); anything else unknown stays to be reported."""
    if kind.TABLES is None:
        return dict(table), {}
    known = set(section_keys(kind))
    tables = {k: v for k, v in table.items() if k not in known and isinstance(v, dict)}
    return {k: v for k, v in table.items() if k not in tables}, tables


def _find_unknown(
    kind: type[_Section], table: Mapping[str, Any], where: str, out: list[str]
) -> None:
    """Every key a section (and its `[[...]]` entries) does not know, with the nearest one."""
    keys = section_keys(kind)
    types = {f.name: f.type for f in msgspec.structs.fields(kind)}
    for key, value in table.items():
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
            hint = f": did you mean '{where}.{close[0]}'?" if close else ""
            out.append(f"unknown key '{where}.{key}'{hint}")
            continue
        entry = _struct_of_list(types[key])
        if entry is not None and isinstance(value, list):
            for n, item in enumerate(value):
                if isinstance(item, dict):
                    _find_unknown(entry, item, f"{where}.{key}[{n}]", out)


def _struct_of_list(kind: Any) -> type[_Section] | None:
    args = get_args(kind)
    if get_origin(kind) is list and args:
        inner = args[0]
        if isinstance(inner, type) and issubclass(inner, _Section):
            return inner
    return None


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<where>[^`]*)`)?$", re.DOTALL)
_EXPECTED = re.compile(
    r"^Expected `(?P<want>[^`]+)`(?:, got `(?P<got>[^`]+)`)?(?: (?P<op>>=|>|<=|<) (?P<bound>\S+))?$"
)
_NOUNS = {
    "int": "a whole number",
    "float": "a number",
    "str": "text in quotes",
    "bool": "true or false",
    "array": 'a list like ["a", "b"]',
    "object": "a table",
}
_BOUNDS = {">=": "of at least", ">": "above", "<=": "of at most", "<": "below"}


def _explain(exc: msgspec.ValidationError, name: str, kind: type[_Section], table: Any) -> str:
    """One line in config-file words: the key, what it must be, and what was given."""
    found = _AT.match(str(exc))
    message = found["message"] if found else str(exc)
    where = (found["where"] if found else "") or ""
    cause = exc.__cause__
    if isinstance(cause, KeyProblem):
        where = f"{where}.{cause.key}"
    elif isinstance(cause, ValueError) and not where:
        return message  # a rule over the whole section: its message says it all
    key = f"{name}{where}"
    message = _plain(message, kind, where)
    given = _value_at(table, where)
    shown = ""
    already_said = isinstance(given, str) and repr(given) in message
    if given is not _MISSING and not isinstance(given, dict | list) and not already_said:
        shown = f" (got {given!r})"
    return f"{key}: {message}{shown}"


def _plain(message: str, kind: type[_Section], where: str) -> str:
    expected = _EXPECTED.match(message)
    if expected:
        want = " or ".join(
            _NOUNS.get(part, part) for part in expected["want"].split(" | ") if part != "null"
        )
        if expected["op"]:
            bound = expected["bound"].removesuffix(".0")
            return f"must be {want} {_BOUNDS[expected['op']]} {bound}"
        return f"must be {want}"
    if message.startswith("Invalid enum value"):
        choices = _choices(kind, where)
        return f"must be one of {choices}" if choices else message
    missing = re.match(r"Object missing required field `([^`]+)`", message)
    if missing:
        return f"needs the key '{missing[1]}'"
    return message


def _choices(kind: type[_Section], where: str) -> str:
    field_name = re.sub(r"\[\d+\]$", "", where.rsplit(".", 1)[-1])  # `when[0]`: a list item
    for info in msgspec.structs.fields(kind):
        if info.name != field_name:
            continue
        value_type = get_args(info.type)[0] if get_origin(info.type) is list else info.type
        if get_origin(value_type) is Literal:
            return ", ".join(repr(v) for v in get_args(value_type))
    return ""


_MISSING = object()


def _value_at(table: Any, where: str) -> Any:
    """The value a msgspec path (`.servers[1].url`) points at in the raw table."""
    value = table
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", where):
        key, index = part
        if key and isinstance(value, dict) and key in value:
            value = value[key]
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return _MISSING
    return value


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
