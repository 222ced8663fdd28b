"""How jobs look on a terminal (rich tables) and as stable JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bygheartd.catalog import credits_phrase
from bygheartd.jobs import Event, Job, JobStatus, finite, iso, utcnow
from bygheartd.safetext import visible
from bygheartd.service.progress import Line, estimate

if TYPE_CHECKING:  # rich is imported when a table is drawn, not for `--json`
    from rich.console import Console, ConsoleOptions, Group, RenderResult
    from rich.table import Table

STATUS_STYLE = {
    JobStatus.DONE: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "dim",
    JobStatus.HELD: "yellow",
    JobStatus.RUNNING: "cyan",
    JobStatus.DOWNLOADING: "cyan",
    JobStatus.PROCESSING: "cyan",
    JobStatus.SUBMITTING: "cyan",
    JobStatus.QUEUED: "blue",
}


def print_json(value: Any) -> None:
    """One object indented; a list one element per line, which `json` writes with its C
    encoder (`indent` falls back to the pure-Python one: seconds for 10,000 jobs).
    Strict JSON: a NaN an older version stored prints as null (`jobs.finite`)."""
    value = finite(value)
    if isinstance(value, list) and value:
        lines = ",\n".join(
            "  " + json.dumps(item, ensure_ascii=False, allow_nan=False) for item in value
        )
        sys.stdout.write(f"[\n{lines}\n]\n")
    else:
        sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()


def ago(ts: datetime | None) -> str:
    if ts is None:
        return ""
    seconds = (utcnow() - ts).total_seconds()
    if seconds < 0:
        seconds = -seconds
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"in {seconds / size:.0f}{unit}"
        return f"in {seconds:.0f}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


# Statuses whose reason a listing shows: what is wrong, or what a job waits for.
NOTED = frozenset({JobStatus.HELD, JobStatus.FAILED})


def short_path(path: Path) -> str:
    """Relative to the current folder when inside it (what people can paste), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def shown(value: object) -> str:
    """Text from a server, a song file or a plugin as one table cell: control characters
    made visible (never interpreted by the terminal) and rich markup escaped (a title with
    `[/bold]` or `[link=...]` is text, never markup)."""
    from rich.markup import escape

    return escape(visible(str(value), one_line=True))


def shown_lines(value: object) -> str:
    """The same for text whose lines matter (lyrics): newlines kept."""
    from rich.markup import escape

    return escape(visible(str(value)))


def status_text(job: Job, *, brief: bool = False, line: Line | None = None) -> str:
    """The status word, with the shared progress estimate while the song is made (the
    figure the `submit --wait` bars and the library page show); `brief`: the percentage
    without the time left (a listing's narrow column). With the queue's `line`, a waiting
    song gets its time left too."""
    text = job.status.value
    waiting = estimate(job, line=line).text() if line is not None else ""
    if waiting and job.status in (JobStatus.QUEUED, JobStatus.SUBMITTING):
        text += f" {waiting}"
    if job.status in (JobStatus.RUNNING, JobStatus.DOWNLOADING, JobStatus.PROCESSING):
        found = estimate(job)
        extra = found.percent_text() if brief else found.text()
        if extra:
            text += f" {extra}"
    if job.status is JobStatus.HELD and job.resumes_at:
        text += f" ({ago(job.resumes_at)})"
    return text


def credits_cell(job: Job, charged: int | None) -> str:
    """What the job was charged (the ledger: refunds subtracted, 0 when it never reached
    the server), with its cost beside it when the two differ; the cost alone when the
    caller has no ledger at hand."""
    if charged is None or charged == job.credits:
        return str(job.credits)
    return f"{charged} (cost {job.credits})"


def jobs_table(
    jobs: list[Job], *, charged: Mapping[str, int] | None = None, why: bool = True
) -> Table:
    """`list`: what each job is (id, status, title, model, credits, age, why); without
    `why`, the reasons are left to `reasons_table`."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("title", overflow="ellipsis", no_wrap=True)
    table.add_column("model", overflow="ellipsis", no_wrap=True)
    table.add_column("credits", justify="right")
    table.add_column("created", no_wrap=True)
    if why and _noted(jobs):
        table.add_column("why", overflow="ellipsis", no_wrap=True)
    for job in jobs:
        paid = None if charged is None else charged.get(job.id, 0)
        cells = [job.id, _status_cell(job), shown(job.title)]
        cells += [shown(job.model or "(default)"), credits_cell(job, paid), ago(job.created_at)]
        if len(table.columns) > len(cells):
            cells.append(shown(job.reason or "") if job.status in NOTED else "")
        table.add_row(*cells)
    return table


def _noted(jobs: list[Job]) -> list[Job]:
    """The jobs whose reason `list` shows (failed, held, cancelled: why)."""
    return [j for j in jobs if j.reason and j.status in NOTED]


def reasons_table(jobs: list[Job]) -> Table:
    """The reasons of a narrow `list`, each on lines of its own under the table, whole and
    wrapped at words, beside the job's id."""
    from rich.table import Table

    table = Table(
        box=None, show_header=False, padding=(0, 1, 0, 1), title="why", title_justify="left"
    )
    table.add_column("id", no_wrap=True)
    table.add_column("why", overflow="fold")
    for job in _noted(jobs):
        table.add_row(job.id, shown(job.reason or ""))
    return table


# Below this many terminal cells for its "why" column, `list` puts reasons under the table.
WHY_MIN = 30


def files_table(jobs: list[Job]) -> tuple[Table, list[str]]:
    """`--wait` and `demo`: where each job's files went. Files are named without their
    folder (one line each, cut with "…" rather than broken mid-word) and the folders are
    returned to be printed once, whole, below the table, where they can be copied."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("title", overflow="ellipsis", no_wrap=True)
    table.add_column("files (or reason)", overflow="fold")  # names whole, wrapped
    folders: list[str] = []
    for job in jobs:
        for file in job.files:
            folder = short_path(file.path.parent)
            if folder not in folders:
                folders.append(folder)
        names = "\n".join(shown(f.path.name) for f in job.files)
        table.add_row(job.id, _status_cell(job), shown(job.title), names or shown(job.reason or ""))
    return table, folders


def print_files_table(console: Console, jobs: list[Job]) -> None:
    table, folders = files_table(jobs)
    console.print(Fitted(table, flexible={"title": 1, "files (or reason)": 2}))
    for folder in folders:
        console.print(f"files in {folder}", highlight=False, soft_wrap=True)


def _status_cell(job: Job) -> str:
    return f"[{STATUS_STYLE.get(job.status, '')}]{status_text(job, brief=True)}[/]"


def poll_trouble(job: Job) -> str | None:
    """`polls failing since T: reason` (and until when a 429 paused them) for a running
    job whose polls fail, else None."""
    result = job.result
    if job.status is not JobStatus.RUNNING or result.poll_error is None:
        return None
    text = f"failing since {iso(result.poll_failing_since)}: {result.poll_error}"
    if result.polls_paused_until is not None:
        text += f"; polling paused until {iso(result.polls_paused_until)} (server's Retry-After)"
    return text


def job_detail(
    job: Job,
    history: list[Event],
    *,
    charged: int | None = None,
    wide: bool = False,
    line: Line | None = None,
) -> Group:
    """`show`: the job's facts, the lyrics the model wrote and its history. Fitted to the
    terminal, or with `wide` every value on its lines whole, for copying a path or a reason
    (the caller widens the console: `print_job_detail`)."""
    from rich.console import Group
    from rich.table import Table

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    # Long values wrap at words, and a path longer than the line folds onto the next one,
    # its extension kept; `wide` keeps each on its line.
    facts.add_column(overflow="fold", no_wrap=wide)
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("status", f"[{STATUS_STYLE.get(job.status, '')}]{status_text(job, line=line)}[/]"),
        ("title", shown(job.title)),
        ("model", shown(job.model or "(backend default)")),
        ("credits", credits_cell(job, charged)),
        ("task", shown(job.task_id or "-")),
        ("source", shown(job.source or "-")),
    ]
    if job.server:
        rows.insert(-1, ("server", shown(job.server)))
    if job.engine:
        rows.insert(-1, ("engine", shown(job.engine)))
    if job.resubmits:
        rows.append(("made again", f"{job.resubmits} time(s): its server lost the task"))
    if job.archived_as:
        rows.append(("archived as", shown(job.archived_as)))
    if job.reason:
        rows.append(("reason", shown(job.reason)))
    if (polls := poll_trouble(job)) is not None:
        rows.append(("polls", shown(polls)))
    keeper = job.keeper_record()
    for f in job.files:
        mark = ""
        if keeper is not None and str(f.path) == keeper["path"]:
            mark = f" [bold]keeper[/] ({'your choice' if keeper['by'] == 'person' else 'the gate'})"
        rows.append(("file", f"{shown(f.path)} ({f.size} bytes){mark}"))
    for warning in job.warnings:
        rows.append(("warning", shown(warning)))
    generated = job.generated() or {}
    for name, value in generated.items():  # what the model wrote (Simple mode, thinking)
        if name != "lyrics":
            rows.append((f"sung {name.replace('_', ' ')}", shown(_with_unit(name, value))))
    for name, value in rows:
        facts.add_row(name, value)
    parts: list[Any] = [facts, ""]
    if generated.get("lyrics"):
        parts += ["[bold]lyrics the model wrote[/]", shown_lines(generated["lyrics"]), ""]
    return Group(*parts, History(history, wide=wide))


class History:
    """`show`'s history: a table (at, event, from → to, reason) where the reasons have room
    to say something, else each reason on lines of its own under its event, whole."""

    def __init__(self, history: list[Event], *, wide: bool) -> None:
        self.history = history
        self.wide = wide

    def _rows(self) -> list[tuple[str, str, str, str]]:
        return [
            (
                e.at.strftime("%Y-%m-%d %H:%M:%S"),
                shown(e.event),
                f"{e.from_status or ''} → {e.to_status}" if e.to_status else "",
                shown(e.reason or ""),
            )
            for e in self.history
        ]

    def table(self, *, reasons: bool = True) -> Table:
        from rich.table import Table

        events = Table(box=None, header_style="bold", title="history", title_justify="left")
        for column in ("at", "event", "from → to"):  # short words: never cut
            events.add_column(column, no_wrap=True)
        if reasons:
            events.add_column("reason", overflow="fold", no_wrap=self.wide)  # wraps, whole
        for at, event, move, reason in self._rows():
            events.add_row(at, event, move, *([reason] if reasons else []))
        return events

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.wide:
            yield self.table()
            return
        room = options.max_width - natural_width(self.table(reasons=False)) - 2
        if room >= WHY_MIN:
            yield Fitted(self.table(), flexible={"reason": 1})
            return
        from rich.table import Table

        lines = Table.grid(padding=(0, 2))
        lines.add_column(no_wrap=True)
        lines.add_column(overflow="fold")
        for at, event, move, reason in self._rows():
            lines.add_row(at, f"{event}  {move}".rstrip() + (f"\n{reason}" if reason else ""))
        yield "[bold]history[/]"
        yield lines


_UNITS = {"duration": "s", "bpm": "bpm"}


def _with_unit(name: str, value: object) -> object:
    """`124 s`, `96 bpm`: a bare 124.0 beside "sung duration" leaves the reader guessing."""
    unit = _UNITS.get(name)
    if unit is None or isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return f"{value:g} {unit}"


def print_job_detail(
    console: Console,
    job: Job,
    history: list[Event],
    *,
    charged: int | None = None,
    wide: bool = False,
    line: Line | None = None,
) -> None:
    """`show`, fitted to the terminal, or with `wide` on a console as wide as its longest
    line, so that nothing is cut or wrapped."""
    from rich.table import Table

    detail = job_detail(job, history, charged=charged, wide=wide, line=line)
    if wide:
        needed = [
            natural_width(part.table() if isinstance(part, History) else part)
            if isinstance(part, Table | History)
            else _longest_line(part)
            for part in detail.renderables
        ]
        console.width = max(console.width, *needed)
        _print_trimmed(console, detail)
        return
    console.print(detail)


def _print_trimmed(console: Console, renderable: object) -> None:
    """A wide rendering without the spaces rich pads every line with up to the widest one
    (into a pipe they are hundreds of characters of nothing); a terminal gets it as is."""
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    console.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _longest_line(part: object) -> int:
    """The widest line of a plain part of `show` (the lyrics), in terminal cells."""
    from rich.cells import cell_len
    from rich.text import Text

    if not isinstance(part, str):
        return 0
    return max((cell_len(line) for line in Text.from_markup(part).plain.split("\n")), default=0)


# The hosted API's model names all start so; tables drop it (`--wide` and JSON keep it).
MODEL_PREFIX = "bygheart-"


def short_model(model: str | None) -> str | None:
    """`bygheart-studio-pro` → `studio-pro`: the prefix says nothing in a column of them."""
    if model and model.startswith(MODEL_PREFIX) and len(model) > len(MODEL_PREFIX):
        return model[len(MODEL_PREFIX) :]
    return model


def print_jobs_table(
    console: Console,
    jobs: list[Job],
    *,
    charged: Mapping[str, int] | None = None,
    wide: bool = False,
) -> None:
    """`list`: one line per job that fits the terminal (long cells end in "…"), or with
    `wide` every cell whole, the lines as long as they need to be."""
    if wide:
        table = jobs_table(jobs, charged=charged)
        console.width = max(console.width, natural_width(table))
        _print_trimmed(console, table)
        return
    shown = [replace(job, model=short_model(job.model)) for job in jobs]
    without = jobs_table(shown, charged=charged, why=False)
    # Titles first: when what is left for "why" is too narrow to say anything ("the…"),
    # the reasons go under the table, whole, and the titles keep their room.
    room = console.width - natural_width(without) - 2
    if _noted(shown) and room < WHY_MIN:
        console.print(Fitted(without, flexible={"title": 2, "model": 1}))
        console.print(reasons_table(shown))
        return
    console.print(
        Fitted(jobs_table(shown, charged=charged), flexible={"title": 2, "model": 1, "why": 1})
    )


def _column_widths(table: Table) -> list[int]:
    """Each column's widest cell (header included), in terminal cells, markup removed."""
    from rich.cells import cell_len
    from rich.text import Text

    widths = []
    for column in table.columns:
        texts = [column.header, *column.cells]
        widths.append(
            max(
                (
                    max(
                        (cell_len(line) for line in Text.from_markup(t).plain.split("\n")),
                        default=0,
                    )
                    for t in texts
                    if isinstance(t, str)
                ),
                default=0,
            )
        )
    return widths


def _padding(table: Table) -> int:
    """What a table adds around its cells: `box=None` tables pad each side of a cell."""
    left, right = table.padding[3], table.padding[1]
    return len(table.columns) * (left + right) + (
        0 if table.box is None else len(table.columns) + 1
    )


def natural_width(table: Table) -> int:
    """The width at which nothing in `table` is cut or wrapped."""
    return sum(_column_widths(table)) + _padding(table)


# Cells up to this wide are never cut: "studio-pro" says more whole than "stu…".
NEVER_CUT = 12


class Fitted:
    """A table whose `flexible` columns (header → weight) shrink, ending in "…", so that it
    fits the width it is drawn at, while the other columns (ids, statuses, times) stay whole.

    rich's own shrinking cuts every no-wrap column alike, ids included, and a ratio column
    starves the others; deciding the widths here, at render time, keeps ids pasteable at
    any terminal width.
    """

    def __init__(self, table: Table, *, flexible: Mapping[str, int]) -> None:
        self.table = table
        self.flexible = flexible

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self.table
        widths = _column_widths(table)
        # A column that is narrow anyway (a short model name) is not worth a cut.
        flex = [
            i
            for i, c in enumerate(table.columns)
            if str(c.header) in self.flexible and widths[i] > NEVER_CUT
        ]
        fixed = sum(w for i, w in enumerate(widths) if i not in flex)
        room = options.max_width - fixed - _padding(table)
        if flex and room >= 4 * len(flex):
            weights = [self.flexible[str(table.columns[i].header)] for i in flex]
            shares = _share(room, [widths[i] for i in flex], weights)
            for i, width in zip(flex, shares, strict=True):
                widths[i] = width
            for column, width in zip(table.columns, widths, strict=True):
                column.width = max(1, width)
        yield table


def _share(room: int, wants: list[int], weights: list[int]) -> list[int]:
    """Split `room` among columns that want `wants`: the modest ones get all they want, the
    greedy ones split what is left by `weights` (a title matters more than a reason)."""
    given = [0] * len(wants)
    left = list(range(len(wants)))
    while left:
        total = sum(weights[i] for i in left)
        modest = [i for i in left if wants[i] * total <= room * weights[i]]
        if not modest:
            for i in left:
                given[i] = room * weights[i] // total
            given[left[0]] += room - sum(given[i] for i in left)
            break
        for i in modest:
            given[i] = wants[i]
            room -= wants[i]
            left.remove(i)
    return given


def credits_text(summary: dict[str, Any]) -> str:
    today, month = summary["today"], summary["month"]
    lines = [f"plan: {summary['plan']} (days turn at 00:00 {summary['timezone']})"]
    if today["cap"] is None:
        spent = credits_phrase(today["spent"])
        lines.append(f"today ({today['day']}): {spent} used, no daily cap")
    else:
        lines.append(
            f"today ({today['day']}): {today['spent']} of {today['cap']} used, {today['left']} left"
        )
    if month["allowance"] is None:
        lines.append(f"this month ({month['month']}): {credits_phrase(month['spent'])} used")
    else:
        lines.append(
            f"this month ({month['month']}): {month['spent']} of {month['allowance']} used "
            f"(rollover {month['rollover']}), {month['left']} left"
        )
    for model, credits in sorted(summary["by_model"].items()):
        lines.append(f"  {model or '(default)'}: {credits}")
    if summary.get("server_cap_until"):
        lines.append(f"the server reported its cap reached until {summary['server_cap_until']}")
    return "\n".join(lines)
