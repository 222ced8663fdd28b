"""`bygheartd inspire --album "..." --tracks N`: the model drafts a whole album file from the
song helper the servers have (`/v1/create_sample`), and nothing is generated or spent.
The commands run as subprocesses against the real simulator; the drafts of odd model
answers (quotes, colons, control characters, long styles) against a scripted server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import PREFIX, Reply, ScriptedApi, ServerThread, envelope, scripted_server
from conftest import TEST_KEY, MakeConfig

from bygheartd import catalog
from bygheartd.config import Config
from bygheartd.service.album_drafts import inspire_album
from bygheartd.simulator import RunningSimulator, SimulatorSettings, run_in_thread
from bygheartd.songs.albums import parse_album_bytes, parse_album_file
from bygheartd.songs.request import RequestRules

BACKENDS = ["bygheart", "acestep"]
DESCRIPTION = "late night drives through a rainy city, synthwave"


@pytest.fixture(params=BACKENDS)
def backend_sim(request: pytest.FixtureRequest) -> Iterator[RunningSimulator]:
    with run_in_thread(SimulatorSettings(backend=request.param, latency=0.1, seed=1)) as sim:
        yield sim


def backend_config(make_config: MakeConfig, sim: RunningSimulator) -> Config:
    if sim.sim.settings.backend == "acestep":  # the hosted default model means nothing there
        return make_config(sim, api={"backend": "acestep"}, defaults={"model": ""})
    return make_config(sim)


def bgh(*args: str, config: Config) -> subprocess.CompletedProcess[str]:
    assert config.source_path is not None
    env = {**os.environ, "BYGHEART_API_KEY": TEST_KEY, "BYGHEARTD_LOAD_PLUGINS": ""}
    cmd = [sys.executable, "-m", "bygheartd", *args, "--config", str(config.source_path)]
    cwd = config.folders.drafts.parent  # a relative -o FILE lands in the test's folder
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def rules(config: Config) -> RequestRules:
    return RequestRules(backend=config.backend)


def spent(sim: RunningSimulator, config: Config) -> tuple[Any, ...]:
    """Everything that would move if a credit were spent or a job made: the local ledger
    (`bygheartd credits --json`), the jobs (`list --json`), the server's own ledger and
    the tasks it was asked for."""
    credits = bgh("credits", "--json", config=config)
    jobs = bgh("list", "--json", config=config)
    assert credits.returncode == 0 and jobs.returncode == 0, credits.stderr + jobs.stderr
    return (
        json.loads(credits.stdout),
        json.loads(jobs.stdout),
        sim.sim.ledger.snapshot(),
        sim.sim.stats.submit_attempts,
    )


def test_an_album_draft_parses_with_n_tracks_and_spends_nothing(
    backend_sim: RunningSimulator, make_config: MakeConfig
) -> None:
    config = backend_config(make_config, backend_sim)
    before = spent(backend_sim, config)
    result = bgh("inspire", "--album", DESCRIPTION, "--tracks", "5", config=config)
    assert result.returncode == 0, result.stderr
    written = config.folders.drafts / "late-night-drives-through.album.yaml"
    assert [p.name for p in config.folders.drafts.iterdir()] == [written.name]
    assert str(written) in result.stdout and "bygheartd submit" in result.stdout
    album = parse_album_file(written, rules(config))
    assert album.title == "Late Night Drives Through"
    assert len(album.tracks) == 5
    assert album.style  # the album's sound, put before each track's own style
    for track in album.tracks:
        assert track.request.lyrics.strip() and "[Chorus]" in track.request.lyrics
        assert track.request.style.startswith(album.style)
        assert track.request.title and track.request.bpm and track.request.key
        assert track.request.duration and track.request.time_signature
    assert len({t.title.casefold() for t in album.tracks}) == 5  # no two share a title
    # Six helper calls (the album's sound, then each track), and nothing else.
    assert spent(backend_sim, config) == before
    assert backend_sim.sim.stats.submit_attempts == 0
    # The draft queues as it is.
    dry = bgh("submit", "--dry-run", str(written), config=config)
    assert dry.returncode == 0, dry.stderr
    assert "5 tracks" in dry.stdout


def test_a_second_album_draft_of_the_same_title_gets_its_own_file(
    simulator: RunningSimulator, make_config: MakeConfig
) -> None:
    config = make_config(simulator)
    for _ in range(2):
        result = bgh("inspire", "--album", DESCRIPTION, "--tracks", "2", config=config)
        assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in config.folders.drafts.iterdir())
    # The number goes before `.album.yaml`: both stay album files.
    assert names == [
        "late-night-drives-through-2.album.yaml",
        "late-night-drives-through.album.yaml",
    ]
    for name in names:
        assert len(parse_album_file(config.folders.drafts / name).tracks) == 2


def test_the_cost_of_queueing_it_is_said_on_the_hosted_backend(
    simulator: RunningSimulator, make_config: MakeConfig
) -> None:
    config = make_config(simulator, defaults={"model": "bygheart-melody-fast"})
    result = bgh("inspire", "--album", DESCRIPTION, "--tracks", "3", config=config)
    assert result.returncode == 0, result.stderr
    album = parse_album_file(next(config.folders.drafts.iterdir()), rules(config))
    per_track = catalog.credit_cost(
        "bygheart-melody-fast", album.tracks[0].request.takes, "bygheart"
    )
    assert f"Queueing it costs {3 * per_track} credits" in result.stdout


def test_an_album_draft_to_stdout(simulator: RunningSimulator, make_config: MakeConfig) -> None:
    config = make_config(simulator)
    result = bgh("inspire", "--album", DESCRIPTION, "-o", "-", config=config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# An album drafted by the model")
    album = parse_album_bytes(result.stdout.encode(), name="stdout.album.yaml", base_dir=None)
    assert len(album.tracks) == 8  # without --tracks
    assert not list(config.folders.drafts.iterdir())


def test_output_never_replaces_a_file_unless_forced(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator)
    target = tmp_path / "mine.album.yaml"
    target.write_text("album: Mine\n", encoding="utf-8")
    refused = bgh(
        "inspire", "--album", DESCRIPTION, "--tracks", "2", "-o", str(target), config=config
    )
    assert refused.returncode == 1
    assert "exists already" in refused.stderr and "--force" in refused.stderr
    assert target.read_text(encoding="utf-8") == "album: Mine\n"
    forced = bgh(
        "inspire", "--album", DESCRIPTION, "--tracks", "2", "-o", str(target), "--force",
        config=config,
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert str(target) in forced.stdout
    assert len(parse_album_file(target).tracks) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert not list(config.folders.drafts.iterdir())


@pytest.mark.parametrize("count", ["0", "51", "-3", "many"])
def test_a_track_count_out_of_range_is_a_usage_error(
    simulator: RunningSimulator, make_config: MakeConfig, count: str
) -> None:
    config = make_config(simulator)
    result = bgh("inspire", "--album", DESCRIPTION, "--tracks", count, config=config)
    assert result.returncode == 2
    assert "--tracks" in result.stderr and "Traceback" not in result.stderr
    assert not list(config.folders.drafts.iterdir())


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--tracks", "3"), "--tracks goes with --album"),
        (("a song", "--album", DESCRIPTION), "description once"),
        (("--album", DESCRIPTION, "-o", "night.yaml"), "name it NAME.album.yaml"),
        (("--album", DESCRIPTION, "-o", "night.album.toml"), "an album draft is YAML"),
        (("--album", DESCRIPTION, "--force"), "--force replaces the file named by -o FILE"),
    ],
)
def test_options_that_do_not_go_together_are_usage_errors(
    simulator: RunningSimulator, make_config: MakeConfig, args: tuple[str, ...], said: str
) -> None:
    config = make_config(simulator)
    result = bgh("inspire", *args, config=config)
    assert result.returncode == 2, result.stdout
    assert said in " ".join(result.stderr.split())
    assert not list(config.folders.drafts.iterdir())


def test_an_instrumental_album_has_no_lyrics_to_sing(
    simulator: RunningSimulator, make_config: MakeConfig
) -> None:
    config = make_config(simulator)
    result = bgh(
        "inspire", "--album", "calm piano for studying", "--tracks", "3", "--instrumental",
        config=config,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = next(config.folders.drafts.iterdir())
    assert "\ninstrumental: true\n" in written.read_text(encoding="utf-8")
    album = parse_album_file(written, rules(config))
    assert len(album.tracks) == 3
    assert all(t.request.instrumental and not t.request.lyrics for t in album.tracks)
    assert len({t.title for t in album.tracks}) == 3


def test_a_language_asked_for_is_said_once_for_the_album(
    simulator: RunningSimulator, make_config: MakeConfig
) -> None:
    config = make_config(simulator)
    result = bgh(
        "inspire", "--album", DESCRIPTION, "--tracks", "2", "--language", "German", "-o", "-",
        config=config,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("language:") == 1 and '\nlanguage: "de"\n' in result.stdout
    album = parse_album_bytes(result.stdout.encode(), name="a.album.yaml", base_dir=None)
    assert [t.request.language for t in album.tracks] == ["de", "de"]


def test_a_backend_without_the_helpers_gets_the_message_inspire_gives(
    make_config: MakeConfig,
) -> None:
    settings = SimulatorSettings(backend="acestep", latency=0.1, lm_helpers=False)
    with run_in_thread(settings) as sim:
        config = backend_config(make_config, sim)
        result = bgh("inspire", "--album", DESCRIPTION, "--tracks", "4", config=config)
        single = bgh("inspire", DESCRIPTION, config=config)
    assert result.returncode == 1
    assert "does not offer inspiration and polish" in result.stderr
    assert "submit --describe" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.split(":", 2)[2] == single.stderr.split(":", 2)[2]  # the same words
    assert not list(config.folders.drafts.iterdir())


# -- odd answers from the model (a scripted server) ----------------------------------------


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[tuple[ScriptedApi, ServerThread]]:
    with scripted_server(tmp_path / "audio") as server:
        yield server


def sample(**data: Any) -> Reply:
    return Reply(body=envelope(data))


@pytest.mark.anyio
async def test_any_text_the_model_writes_reads_back_exactly(
    scripted: tuple[ScriptedApi, ServerThread], make_config: MakeConfig
) -> None:
    api, server = scripted
    config = make_config(None, api={"base_url": server.origin + PREFIX})
    odd = [
        '  [Verse]\n  indented: "quoted" # not a comment\n\ttabbed',
        "[Verse]\nbell\x07 and escape \x1b[31m red\nemoji \U0001f3b5 and \u2028 a separator",
        "[Verse]\n'single' |pipe >fold\n- dash\n? question\n%percent\n\n\n[Chorus]\n@at `tick`",
    ]
    api.expect(
        "POST",
        "/v1/create_sample",
        sample(caption="dream pop: hazy, reverb # wide", lyrics="[Verse]\nunused"),
        *(sample(caption="dream pop: hazy, night", lyrics=lyrics, bpm=90) for lyrics in odd),
    )
    draft = await inspire_album(config, 'songs: "about" #the sea', 3)
    album = parse_album_bytes(draft.text().encode(), name="x.album.yaml", base_dir=None)
    assert album.title == draft.title
    assert album.style == "dream pop: hazy, reverb # wide"
    got = [t.request.lyrics for t in album.tracks]
    assert got[0] == odd[0]
    assert got[1] == "[Verse]\nbell and escape [31m red\nemoji \U0001f3b5 and \u2028 a separator"
    assert got[2] == odd[2]
    # Only the tags the album's sound lacks are the track's own.
    assert album.tracks[0].request.style == "dream pop: hazy, reverb # wide, night"
    # The album's sound and the track's place in it go with each track's description.
    queries = [call.json()["query"] for call in api.calls("/v1/create_sample")]
    assert queries[0] == 'songs: "about" #the sea'
    assert queries[2].startswith('songs: "about" #the sea. Track 2 of 3 of the album')
    assert "The album's sound: dream pop: hazy, reverb # wide" in queries[2]


@pytest.mark.anyio
async def test_a_style_over_the_limit_is_cut_at_a_tag(
    scripted: tuple[ScriptedApi, ServerThread], make_config: MakeConfig
) -> None:
    api, server = scripted
    config = make_config(None, api={"base_url": server.origin + PREFIX})
    limit = catalog.STYLE_MAX_CHARS
    long = ", ".join(f"tag{n:04d}" for n in range(limit // 5))
    api.expect(
        "POST",
        "/v1/create_sample",
        sample(caption=long, lyrics="[Verse]\nla"),
        sample(caption=long + ", own tag", lyrics="[Verse]\nla la"),
        sample(caption="", lyrics=""),  # nothing: this track is left to Simple mode
    )
    draft = await inspire_album(config, "a long album", 2)
    assert any("over the limit" in note for note in draft.notes)
    assert any("track 2" in note and "Simple mode" in note for note in draft.notes)
    album = draft.parsed(config.backend)
    assert len(album.style) <= limit and long.startswith(album.style)
    first, second = album.tracks
    assert len(first.request.style) <= limit and first.request.lyrics == "[Verse]\nla la"
    assert second.request.description == "a long album" and not second.request.lyrics


@pytest.mark.anyio
async def test_tracks_that_start_with_the_same_line_get_distinct_titles(
    scripted: tuple[ScriptedApi, ServerThread], make_config: MakeConfig
) -> None:
    api, server = scripted
    config = make_config(None, api={"base_url": server.origin + PREFIX})
    api.expect(
        "POST",
        "/v1/create_sample",
        *(sample(caption="folk", lyrics="[Verse]\nHome again\nla") for _ in range(4)),
    )
    draft = await inspire_album(config, "folk", 3)
    assert [t.title for t in draft.tracks] == ["Home again", "Home again (2)", "Home again (3)"]


def test_a_song_draft_replaces_a_named_file_only_with_force(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator)
    target = tmp_path / "mine.md"
    target.write_text("mine\n", encoding="utf-8")
    refused = bgh("inspire", "lullaby", "-o", str(target), config=config)
    assert refused.returncode == 1 and "add --force" in refused.stderr
    assert target.read_text(encoding="utf-8") == "mine\n"
    forced = bgh("inspire", "lullaby", "-o", str(target), "--force", config=config)
    assert forced.returncode == 0, forced.stderr
    assert target.read_text(encoding="utf-8").startswith("---\ntitle: ")


def test_a_terminal_sees_each_helper_call_counted(
    simulator: RunningSimulator, make_config: MakeConfig
) -> None:
    """A real LM takes seconds per track: on a terminal the calls are counted on one line."""
    config = make_config(simulator)
    assert config.source_path is not None
    env = {**os.environ, "BYGHEART_API_KEY": TEST_KEY, "BYGHEARTD_LOAD_PLUGINS": ""}
    cmd = [sys.executable, "-m", "bygheartd", "inspire", "--album", DESCRIPTION, "--tracks", "2"]
    leader, follower = os.openpty()
    try:
        try:
            result = subprocess.run(
                [*cmd, "--config", str(config.source_path)],
                stdout=subprocess.PIPE,
                stderr=follower,
                env=env,
                timeout=120,
            )
        finally:
            os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # Linux: EIO once the terminal's other end is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert result.returncode == 0
    text = shown.decode()
    assert "drafting the album's sound..." in text
    assert "drafting track 1 of 2..." in text and "drafting track 2 of 2..." in text
