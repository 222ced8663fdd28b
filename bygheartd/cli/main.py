"""The command line (pinned commands of DESIGN.md). Heavy imports stay inside commands,
so that `bygheartd list --json` starts fast and nothing but MCP imports `mcp`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bygheartd.errors import BygheartdError

if TYPE_CHECKING:  # the config is loaded when a command needs it: `--help` stays fast
    from bygheartd.config import Config

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=click.Command)
T = TypeVar("T")
LEVELS = ["debug", "info", "warning", "error", "critical"]
# A listing fits a screen or two; a state folder of years holds thousands of jobs.
DEFAULT_LIST_LIMIT = 50


class State:
    def __init__(self) -> None:
        self.config_path: Path | None = None
        self.log_level: str | None = None

    def config(self) -> Config:
        from bygheartd.config import load_config

        config = load_config(self.config_path)
        # Interactive commands stay quiet unless asked; the daemon logs at [log] level.
        self.setup_logging("warning")
        return config

    def setup_logging(self, default: str = "info") -> None:
        from bygheartd.logs import setup_logging

        setup_logging(self.log_level or default)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    state = ctx.ensure_object(State)
    if value is not None:
        setattr(state, "config_path" if param.name == "config" else "log_level", value)
    return value


def _common_options() -> list[click.Option]:
    return [
        click.Option(
            ["--config"],
            type=click.Path(path_type=Path, dir_okay=False),
            callback=_remember,
            expose_value=False,
            is_eager=True,
            help="Config file (default: $BYGHEARTD_CONFIG, then ~/.config/bygheartd/config.toml).",
        ),
        click.Option(
            ["--log-level"],
            type=click.Choice(LEVELS, case_sensitive=False),
            callback=_remember,
            expose_value=False,
            is_eager=True,
            help="Log detail on stderr (default: [log] level).",
        ),
    ]


def with_common(command: C) -> C:
    """`--config` and `--log-level` work before or after the subcommand: every command
    added to our groups gets them (a command defined without them cannot slip through)."""
    names = {p.name for p in command.params}
    command.params.extend(o for o in _common_options() if o.name not in names)
    return command


def common(func: F) -> F:
    """For the top-level group itself (`bygheartd --config X list`)."""
    for option in reversed(_common_options()):
        func = click.option(*option.opts, **_option_kwargs(option))(func)
    return func


def _option_kwargs(option: click.Option) -> dict[str, Any]:
    return {
        "type": option.type,
        "callback": option.callback,
        "expose_value": option.expose_value,
        "is_eager": option.is_eager,
        "help": option.help,
    }


def _complete_job(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Tab completion of job ids: the 50 newest, with their titles as help."""
    from click.shell_completion import CompletionItem

    try:
        from bygheartd.cli.commands import recent_jobs

        state = ctx.find_object(State) or State()
        from bygheartd.cli.commands import run_read

        config = state.config()
        jobs = run_read(config, recent_jobs(config, 50))
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [
        CompletionItem(j.id, help=f"{j.status.value}: {j.title}")
        for j in jobs
        if j.id.startswith(incomplete.lower())
    ]


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio  # here, not at the top: `--help` and `config` need no event loop

    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _read(command: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
    """A command that only talks to the store, on the config of this invocation (see
    `commands.run_read`: on SQLite, no event loop)."""
    from bygheartd.cli.commands import run_read

    config = _state().config()
    return run_read(config, command(config, *args, **kwargs))


class FullHelpGroup(click.Group):
    """Command lists show each command's whole summary, wrapped, never cut off with "...":
    click's default cuts at the terminal width, which hid half of most descriptions. Every
    command added gets `--config` and `--log-level` (`with_common`)."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(with_common(cmd), name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name == "simulator" and isinstance(self, Group):
                rows.append((name, SIMULATOR_SUMMARY))  # listed without importing it
                continue
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# `bygheartd --help` lists the simulator by this line instead of importing it (starlette,
# uvicorn, numpy: most of the time `--help` took); tests check it matches its own help.
SIMULATOR_SUMMARY = (
    "Serve the Bygheart Music API simulator on loopback (for tests, the demo, and trying "
    "plugins offline)."
)


class Group(FullHelpGroup):
    """Turns our errors into one line on stderr; loads `simulator` only when asked for."""

    group_class = FullHelpGroup  # `config` and other sub-groups list in full too

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "simulator"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "simulator":
            from bygheartd.simulator.cli import simulator_command

            command: click.Command = simulator_command
            return with_common(command)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BygheartdError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(1) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@common
@click.version_option(package_name="bygheartd")
def main() -> None:
    """bygheartd: make songs with the Bygheart Music API from a drop folder, the command
    line or an AI assistant."""


@main.command()
def run() -> None:
    """Run the daemon: drop-folder watcher, engine, scheduler (and MCP over HTTP)."""
    from bygheartd.daemon.daemon import run_daemon

    state = click.get_current_context().find_object(State)
    assert state is not None
    raise SystemExit(run_async(run_daemon(state.config_path, state.log_level)))


@main.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--describe",
    "description",
    metavar="TEXT",
    default=None,
    help="No file: describe the song and let the model write it (Simple mode).",
)
@click.option("--instrumental", is_flag=True, default=None, help="With --describe: no vocals.")
@click.option("--title", default=None, help="With --describe: the song's title.")
@click.option("--style", default=None, help="With --describe: a style caption (optional).")
@click.option("--model", default=None, help="With --describe: the model to use.")
@click.option("--wait", is_flag=True, help="Show progress until every job is finished.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after S seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the job records as JSON.")
@click.option("--dry-run", is_flag=True, help="Validate and show the cost; spend nothing.")
@click.option("--preset", default=None, help="Apply the defaults of [presets.NAME].")
def submit(
    files: tuple[Path, ...],
    description: str | None,
    instrumental: bool | None,
    title: str | None,
    style: str | None,
    model: str | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
    dry_run: bool,
    preset: str | None,
) -> None:
    """Queue song files (the same format as the inbox), or one song from --describe."""
    from bygheartd.cli.commands import Described, SongSource, submit_files

    state = click.get_current_context().find_object(State)
    assert state is not None
    extras = {"instrumental": instrumental, "title": title, "style": style, "model": model}
    given = {k: v for k, v in extras.items() if v is not None}
    sources: list[SongSource] = list(files)
    if description is not None:
        if files:
            raise click.UsageError("give song files or --describe, not both")
        sources = [Described({"description": description, **given})]
    elif given:
        flags = ", ".join(f"--{k}" for k in given)
        raise click.UsageError(f"{flags} only go with --describe; song files set these keys")
    elif not files:
        raise click.UsageError('give song files, or --describe "a song about ..."')
    code = run_async(
        submit_files(
            state.config(),
            sources,
            wait=wait,
            timeout=timeout,
            as_json=as_json,
            dry_run=dry_run,
            preset=preset,
        )
    )
    raise SystemExit(code)


@main.command(name="list")
@click.option("--status", default=None, help="Only these statuses, comma-separated.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help=f"At most N jobs (default {DEFAULT_LIST_LIMIT}, also with --json).",
)
@click.option("--all", "show_all", is_flag=True, help="Every job, however many.")
@click.option("--wide", is_flag=True, help="Whole cells and model names, however wide.")
@click.option("--json", "as_json", is_flag=True, help="Print job records as JSON.")
def list_jobs(
    status: str | None, limit: int | None, show_all: bool, wide: bool, as_json: bool
) -> None:
    """Jobs, newest first."""
    from bygheartd.cli.commands import list_command

    if show_all and limit is not None:
        raise click.UsageError("--limit and --all exclude each other")
    limit = None if show_all else (limit or DEFAULT_LIST_LIMIT)
    _read(list_command, status, limit, as_json, wide=wide)


@main.command()
@click.argument("job", shell_complete=_complete_job)
@click.option("--wide", is_flag=True, help="Whole values (paths, reasons, lyrics), however wide.")
@click.option("--json", "as_json", is_flag=True, help="Print the job record as JSON.")
def show(job: str, wide: bool, as_json: bool) -> None:
    """One job in full, with its history."""
    from bygheartd.cli.commands import show_command

    _read(show_command, job, as_json, wide=wide)


@main.command()
@click.argument("jobs", nargs=-1, shell_complete=_complete_job)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event and line.")
def follow(jobs: tuple[str, ...], as_json: bool) -> None:
    """Job events as they happen. With JOBs: until they are all finished (exit 0 when all
    are done, 1 when any failed or was cancelled); without: every job, until Ctrl-C."""
    from bygheartd.cli.follow import follow_command

    raise SystemExit(run_async(follow_command(_state().config(), list(jobs), as_json=as_json)))


@main.command()
@click.argument("job", shell_complete=_complete_job)
def cancel(job: str) -> None:
    """Cancel a job (a submitted generation still runs on the server)."""
    from bygheartd.cli.commands import change_command

    _read(change_command, job, "cancel")


@main.command()
@click.argument("job", shell_complete=_complete_job)
def retry(job: str) -> None:
    """Queue a failed or cancelled job again (a new submission, new credits)."""
    from bygheartd.cli.commands import change_command

    _read(change_command, job, "retry")


@main.command()
@click.argument("job", shell_complete=_complete_job)
@click.option(
    "--take",
    "take",
    type=click.IntRange(min=1),
    required=True,
    help="The take to keep (1, 2, ...).",
)
def keep(job: str, take: int) -> None:
    """Keep TAKE of a finished JOB instead of the quality gate's choice: the sidecar, the
    job's records and the [folders] keepers copy follow."""
    from bygheartd.cli.commands import keep_command

    run_async(keep_command(_state().config(), job, take))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the ledger as JSON.")
def credits(as_json: bool) -> None:
    """The local credit ledger: today, this month, per model."""
    from bygheartd.cli.commands import credits_command

    _read(credits_command, as_json)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Who holds the engine lock, queue counts, next budget release."""
    from bygheartd.cli.commands import status_command

    _read(status_command, as_json)


@main.command()
def mcp() -> None:
    """MCP server over stdio (for Claude Desktop, Claude Code, Cursor)."""
    from bygheartd.mcp.server import run_stdio

    state = _state()
    config = state.config()
    state.setup_logging(config.log.level)  # a long-running server: [log] level, on stderr
    run_stdio(config)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the plugins as JSON.")
def plugins(as_json: bool) -> None:
    """Plugins: where they came from, their hooks, load errors."""
    from bygheartd.cli.commands import plugins_command

    plugins_command(_state().config(), as_json)


@main.group()
def config() -> None:
    """Configuration commands."""


@config.command(name="check")
@click.option(
    "--online",
    is_flag=True,
    help="Also ask the backend: is it reachable, does it take the key, what models it has.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=600),
    default=None,
    metavar="SECONDS",
    help="With --online: give each server this long to answer [default: 10, or [api] "
    "timeout_seconds when that is shorter].",
)
def config_check(online: bool, timeout: float | None) -> None:
    """Validate the config; show effective paths and where the key comes from."""
    from bygheartd.cli.commands import config_check_command

    state = _state()
    state.setup_logging()
    raise SystemExit(config_check_command(state.config_path, online=online, timeout=timeout))


@config.command(name="example")
def config_example() -> None:
    """Print the full documented configuration (config.example.toml)."""
    from bygheartd.cli.extras import config_example_command

    config_example_command()


@main.group()
def store() -> None:
    """The job store: integrity check, going back to a backup, moving it to PostgreSQL."""


@store.command(name="check")
def store_check() -> None:
    """Check the job store's integrity; show its job count and the newest backup (exit 1
    when it is damaged)."""
    from bygheartd.cli.store_commands import check_command

    raise SystemExit(check_command(_state().config()))


@store.command(name="restore")
@click.argument("backup", required=False)
@click.option(
    "--force", is_flag=True, help="Restore even though the current store passes its check."
)
def store_restore(backup: str | None, force: bool) -> None:
    """Go back to BACKUP (a name in <state>/backups or a path; default: the newest that
    passes its check), setting the current store aside, never deleting it."""
    from bygheartd.cli.store_commands import restore_command

    raise SystemExit(restore_command(_state().config(), backup, force=force))


@store.command(name="migrate")
@click.option(
    "--to",
    "url",
    required=True,
    metavar="URL",
    help="The empty PostgreSQL database: postgresql://USER@HOST/DB (a password may come "
    "from ~/.pgpass or PGPASSWORD instead of the URL).",
)
def store_migrate(url: str) -> None:
    """Copy the SQLite job store (jobs, history, ledger) into an empty PostgreSQL database,
    checking the counts; the SQLite file is left untouched."""
    from bygheartd.cli.store_commands import migrate_command

    raise SystemExit(migrate_command(_state().config(), url))


@main.command()
def guide() -> None:
    """The songwriting guide: styles, section tags, every option (plain text when piped)."""
    from bygheartd.cli.extras import guide_command

    guide_command()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the models as JSON.")
def models(as_json: bool) -> None:
    """Models of the configured backend with their credit cost and purpose; on ACE-Step,
    also what each server has loaded and can do (its /v1/model_inventory)."""
    from bygheartd.cli.extras import models_command

    config = _state().config()
    if config.backend == "acestep":
        from bygheartd.cli.edit_commands import models_inventory_command

        if not as_json:
            models_command(config, as_json)
        raise SystemExit(run_async(models_inventory_command(config, as_json)))
    models_command(config, as_json)


@main.command()
@click.argument("job", shell_complete=_complete_job)
@click.option("--take", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seconds", type=float, required=True, help="How many seconds to add.")
@click.option("--before", is_flag=True, help="Add them before the start, not after the end.")
@click.option("--wait", is_flag=True, help="Show progress until the song is finished.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after S seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the job record as JSON.")
def extend(
    job: str, take: int, seconds: float, before: bool, wait: bool, timeout: float | None,
    as_json: bool,
) -> None:  # fmt: skip
    """A finished song made longer: a new job "<title> (extended)" whose takes are the whole
    song with SECONDS more after its end (or before its start). One generation."""
    from bygheartd.cli.edit_commands import extend_command

    config = _state().config()
    command = extend_command(
        config, job, take=take, seconds=seconds, before=before, wait=wait, timeout=timeout,
        as_json=as_json,
    )  # fmt: skip
    raise SystemExit(run_async(command))


@main.command()
@click.argument("source", metavar="JOB|AUDIO", shell_complete=_complete_job)
@click.option("--take", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--tracks", default="vocals,drums,bass", show_default=True, help="Stems to make.")
@click.option("--model", default=None, help="The model (ACE-Step: a base model, found loaded).")
@click.option("--wait", is_flag=True, help="Show progress until every stem is finished.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after S seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the job records as JSON.")
def stems(
    source: str, take: int, tracks: str, model: str | None, wait: bool, timeout: float | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Split a finished job's take, or any audio file, into stems: one generation per stem,
    delivered together as output/<slug>-stems/<slug>.<track>.<ext>."""
    from bygheartd.cli.edit_commands import stems_command

    names = [t.strip() for t in tracks.split(",") if t.strip()]
    if not names:
        raise click.UsageError("--tracks names no track: e.g. --tracks vocals,drums")
    config = _state().config()
    command = stems_command(
        config, source, take=take, tracks=names, model=model, wait=wait, timeout=timeout,
        as_json=as_json,
    )  # fmt: skip
    raise SystemExit(run_async(command))


@main.command()
@click.argument("audio", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o", "--output", default=None, metavar="FILE",
    help="Write the draft to FILE, or '-' for stdout (default: drafts folder).",
)  # fmt: skip
@click.option("--force", is_flag=True, help="With -o FILE: replace that file if it exists.")
def describe(audio: Path, output: str | None, force: bool) -> None:
    """The model listens to AUDIO and writes a song-file draft like it (style, lyrics, bpm,
    key, time signature, language), so "make one like this" is one command. ACE-Step only;
    makes no audio and spends no generation."""
    from bygheartd.cli.edit_commands import describe_command

    raise SystemExit(run_async(describe_command(_state().config(), audio, output, force=force)))


@main.command(name="open")
@click.argument("job", shell_complete=_complete_job)
@click.option(
    "--take", type=click.IntRange(min=1), default=1, show_default=True, help="Which take."
)
def open_take(job: str, take: int) -> None:
    """Open a take with the desktop's default player, or print its path when there is none."""
    from bygheartd.cli.extras import open_command

    raise SystemExit(_read(open_command, job, take))


@main.command()
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
def init(force: bool) -> None:
    """Write a starter config and create the folders."""
    from bygheartd.cli.commands import init_command

    raise SystemExit(init_command(_state().config_path, force))


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("bygheartd-demo"),
    show_default=True,
    help="Folder for the demo's inbox, output and state (created; reused on a second run).",
)
def demo(directory: Path) -> None:
    """Offline end-to-end run: the simulator and an engine over the example songs."""
    from bygheartd.cli.demo import run_demo

    state = _state()
    state.setup_logging("warning")
    raise SystemExit(run_async(run_demo(directory)))


@main.command()
@click.option("--no-open", is_flag=True, help="Only print the link; do not open a browser.")
def web(no_open: bool) -> None:
    """Print (and open) a one-time login link to the library page ([web] enabled = true)."""
    from bygheartd.cli.web_command import web_command

    raise SystemExit(run_async(web_command(_state().config(), no_open=no_open)))


def _state() -> State:
    state = click.get_current_context().find_object(State)
    assert state is not None
    return state


@main.command()
@click.argument("description", required=False)
@click.option("--instrumental", is_flag=True, help="No vocals: the draft has no lyrics.")
@click.option("--language", default=None, help="Language of the lyrics: a code or its name.")
@click.option(
    "--album",
    "album",
    default=None,
    metavar="DESCRIPTION",
    help="Draft a whole album file (NAME.album.yaml) from DESCRIPTION instead of one song.",
)
@click.option(
    "--tracks",
    type=click.IntRange(1, 50),
    default=None,
    metavar="N",
    help="How many tracks the album draft has (1 to 50; default 8). Only with --album.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="FILE",
    help="Write the draft to FILE (never over an existing one without --force), or '-' for "
    "stdout (default: a new file in the drafts folder, named after the title).",
)
@click.option("--force", is_flag=True, help="With -o FILE: replace FILE if it exists.")
def inspire(
    description: str | None,
    instrumental: bool,
    language: str | None,
    album: str | None,
    tracks: int | None,
    output: str | None,
    force: bool,
) -> None:
    """A complete draft song file (title, style, bpm, key, duration, language, lyrics) from
    the model: from DESCRIPTION, or one of the server's examples without it. With --album, a
    draft album file: its title, its sound and N tracks with titles and lyrics. Spends
    nothing."""
    if force and output in (None, "-"):
        raise click.UsageError("--force replaces the file named by -o FILE: name one")
    if album is not None:
        from bygheartd.cli.album_drafts import check_album_output, inspire_album_command

        if description is not None:
            raise click.UsageError(
                "give the album's description once, after --album (no DESCRIPTION as well)"
            )
        check_album_output(output)
        code = run_async(
            inspire_album_command(
                _state().config(),
                album,
                tracks or 8,
                instrumental=instrumental,
                language=language,
                output=output,
                force=force,
            )
        )
        raise SystemExit(code)
    if tracks is not None:
        raise click.UsageError('--tracks goes with --album "a description of the album"')
    from bygheartd.cli.drafts import inspire_command

    code = run_async(
        inspire_command(
            _state().config(),
            description,
            instrumental=instrumental,
            language=language,
            output=output,
            force=force,
        )
    )
    raise SystemExit(code)


@main.command()
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
def polish(file: Path) -> None:
    """The model's rewrite of FILE's style and lyrics, written beside it as
    NAME.polished.md (FILE is never changed), with what changed. Spends nothing."""
    from bygheartd.cli.drafts import polish_command

    raise SystemExit(run_async(polish_command(_state().config(), file)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
