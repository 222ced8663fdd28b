"""Inspiration and polish: the client's three language-model helper calls against the real
simulator in both backend modes (and a scripted server for the shapes it does not make),
the service's drafts (they parse and queue), and `bygheartd inspire` / `polish` as
subprocesses. Nothing here spends a credit or creates a job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _servers import PREFIX, Reply, ScriptedApi, ServerThread, envelope, scripted_server
from conftest import TEST_KEY, MakeConfig

from bygheartd.api.client import BygheartClient, LmUnavailable, RetryPolicy
from bygheartd.api.errors import RejectedError
from bygheartd.config import Config
from bygheartd.jobs import Origin
from bygheartd.runtime import open_service
from bygheartd.service.drafts import inspire, polish
from bygheartd.service.service import SongService
from bygheartd.service.submission import Submission
from bygheartd.simulator import RunningSimulator, SimulatorSettings, run_in_thread
from bygheartd.songs.request import RequestRules
from bygheartd.songs.songfile import parse_song_file, parse_song_text

pytestmark = pytest.mark.anyio

BACKENDS = ["bygheart", "acestep"]
MESSY = """---
title: Harbour Lights
style: indie folk, Male Vocal, indie folk
bpm: 96
key: D major
duration: 150
---
[verse]
paper moon   above the harbour
  lanterns on the water
[ chorus ]
hold on, hold on
"""


@pytest.fixture(params=BACKENDS)
def backend_sim(request: pytest.FixtureRequest) -> Iterator[RunningSimulator]:
    with run_in_thread(SimulatorSettings(backend=request.param, latency=0.1, seed=1)) as sim:
        yield sim


def sim_client(sim: RunningSimulator) -> BygheartClient:
    backend = sim.sim.settings.backend
    key = TEST_KEY if backend == "bygheart" else None
    return BygheartClient(sim.base_url, key, backend=backend, timeout=10)


def backend_config(make_config: MakeConfig, sim: RunningSimulator) -> Config:
    backend = sim.sim.settings.backend
    if backend == "acestep":  # the hosted default model means nothing to ACE-Step
        return make_config(sim, api={"backend": backend}, defaults={"model": ""})
    return make_config(sim)


@pytest.fixture
async def service(
    make_config: MakeConfig, backend_sim: RunningSimulator
) -> AsyncIterator[SongService]:
    """A service over the store of a config for the simulator (no engine: nothing runs)."""
    opened = open_service(backend_config(make_config, backend_sim))
    try:
        yield opened
    finally:
        await opened.close()


# -- the client against the simulator ----------------------------------------------------


async def test_create_sample_is_a_deterministic_draft_from_the_description(
    backend_sim: RunningSimulator,
) -> None:
    async with sim_client(backend_sim) as client:
        first = await client.create_sample("a rainy night in Tokyo, city pop")
        again = await client.create_sample("a rainy night in Tokyo, city pop")
        other = await client.create_sample("sunny beach reggae")
    assert first == again != other
    assert first.style and "rainy" in first.style
    assert first.lyrics and "[Chorus]" in first.lyrics
    assert isinstance(first.bpm, int) and first.key and first.time_signature
    assert first.language == "en"


async def test_create_sample_instrumental_has_no_lyrics_to_sing(
    backend_sim: RunningSimulator,
) -> None:
    async with sim_client(backend_sim) as client:
        draft = await client.create_sample("calm piano", instrumental=True, language="de")
    assert draft.lyrics == "[Instrumental]"
    assert draft.language == "de"


async def test_random_sample_and_format_input_answer_in_both_modes(
    backend_sim: RunningSimulator,
) -> None:
    async with sim_client(backend_sim) as client:
        sample = await client.create_random_sample()
        polished = await client.format_input(
            "indie folk, Male Vocal, indie folk",
            "[verse]\npaper moon   above\n[ chorus ]\nhold on",
            params={"bpm": 96, "key_scale": "D major", "duration": 150},
        )
    assert sample.style and sample.lyrics
    assert polished.style == "indie folk, male vocal, polished production"
    assert polished.lyrics == "[Verse]\nPaper moon above\n\n[Chorus]\nHold on"
    # What was given as param_obj comes back; `key_scale` is read like `keyscale`.
    assert (polished.bpm, polished.key, polished.duration) == (96, "D major", 150)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_server_without_its_lm_says_so_and_points_at_simple_mode(backend: str) -> None:
    settings = SimulatorSettings(backend=backend, latency=0.1, lm_helpers=False)
    with run_in_thread(settings) as sim:
        async with sim_client(sim) as client:
            for call in (
                client.create_sample("anything"),
                client.format_input("pop", "[Verse]\nla"),
            ):
                with pytest.raises(LmUnavailable) as caught:
                    await call
                message = str(caught.value)
                assert "does not offer inspiration and polish" in message
                assert "language model is not loaded" in message
                assert "description:" in message and "submit --describe" in message
            # Not retried: a missing LM does not come back in a second.
            assert client.requests_made["inspiration"] == 1
            assert client.requests_made["polish"] == 1
            # The bundled examples need no LM: the real server hands them out without one.
            example = await client.create_random_sample()
            assert example.style and example.lyrics


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[tuple[ScriptedApi, ServerThread]]:
    with scripted_server(tmp_path / "audio") as server:
        yield server


async def test_a_backend_without_the_endpoints_is_named_as_such(
    scripted: tuple[ScriptedApi, ServerThread],
) -> None:
    api, server = scripted
    async with BygheartClient(server.origin + PREFIX, TEST_KEY) as client:
        with pytest.raises(LmUnavailable, match=r"HTTP 404: no such endpoint.*Simple mode"):
            await client.create_sample("a song")
    assert api.calls("/v1/create_sample")


async def test_the_helper_bodies_and_envelope_errors_follow_the_contract(
    scripted: tuple[ScriptedApi, ServerThread],
) -> None:
    api, server = scripted
    draft = {"caption": "pop", "lyrics": "[Verse]\nla", "bpm": "N/A", "keyscale": "N/A"}
    api.expect("POST", "/v1/create_sample", Reply(body=envelope(draft)))
    api.expect("POST", "/format_input", Reply(body=envelope(None, 500, "format_sample failed: x")))
    api.expect(
        "POST", "/create_random_sample", Reply(body=envelope(None, 500, "LLM not initialized"))
    )
    async with BygheartClient(server.origin + PREFIX, TEST_KEY) as client:
        got = await client.create_sample("a song", language="ja")
        with pytest.raises(RejectedError, match="format_sample failed"):
            await client.format_input("pop", "[Verse]\nla", params={"bpm": 90, "key_scale": None})
        with pytest.raises(LmUnavailable):
            await client.create_random_sample()
    assert (got.bpm, got.key) == (None, None)  # "N/A" is no value
    sent = api.calls("/v1/create_sample")[0].json()
    assert sent == {
        "query": "a song",
        "instrumental": False,
        "vocal_language": "ja",
        "temperature": 0.85,
    }
    body = api.calls("/format_input")[0].json()
    assert json.loads(body["param_obj"]) == {"bpm": 90}
    assert api.calls("/create_random_sample")[0].json() == {"sample_type": "custom_mode"}


# -- the service's drafts --------------------------------------------------------------


async def test_an_inspired_draft_parses_and_queues_as_it_is(
    backend_sim: RunningSimulator, service: SongService
) -> None:
    draft = await service.inspire("A rainy night in Tokyo, city pop", language="en")
    assert draft.title == "Rainy Night in Tokyo"  # named as a Simple-mode song would be
    request = parse_song_text(
        draft.text(), RequestRules(backend=service.config.backend), name="draft.md"
    )
    assert request.lyrics.strip() == draft.lyrics.strip() and request.lyrics
    assert (request.bpm, request.key, request.language) == (
        draft.meta["bpm"],
        draft.meta["key"],
        "en",
    )
    assert request.style == draft.meta["style"]
    enqueued = await service.submit(Submission(request, Origin.CLI))
    assert enqueued.created and enqueued.job.title == draft.title
    assert backend_sim.sim.stats.submit_attempts == 0  # drafts spend nothing


async def test_an_instrumental_draft_says_so(service: SongService) -> None:
    draft = await inspire(service.config, "calm piano for studying", instrumental=True)
    assert draft.instrumental and "instrumental: true" in draft.text()
    request = parse_song_text(draft.text(), service.rules(), name="d.md")
    assert request.instrumental and request.lyrics == ""


async def test_a_draft_without_description_is_one_of_the_servers_examples(
    service: SongService,
) -> None:
    draft = await service.inspire(None)
    assert draft.title and draft.meta["style"]
    parse_song_text(draft.text(), service.rules(), name="d.md")


async def test_polish_keeps_what_the_model_did_not_change(
    service: SongService, tmp_path: Path
) -> None:
    source = tmp_path / "harbour.md"
    source.write_text(MESSY, encoding="utf-8")
    result = await polish(service.config, source)
    after = result.after
    assert after.title == "Harbour Lights"
    assert (after.meta["bpm"], after.meta["key"], after.meta["duration"]) == (96, "D major", 150)
    assert after.lyrics.startswith("[Verse]\nPaper moon above the harbour\nLanterns")
    changes = result.changes()
    assert "-[verse]" in changes and "+[Verse]" in changes
    assert "style:" in changes and "bpm" not in changes
    assert all(len(line) <= 80 for line in changes.splitlines())
    parse_song_text(after.text(), service.rules(), name="p.md")


# -- the commands ------------------------------------------------------------------------


def bgh(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BYGHEART_API_KEY": TEST_KEY, "BYGHEARTD_LOAD_PLUGINS": ""}
    cmd = [sys.executable, "-m", "bygheartd", *args, "--config", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def config_file(make_config: MakeConfig, sim: RunningSimulator) -> tuple[Path, Path]:
    config = backend_config(make_config, sim)
    assert config.source_path is not None
    return config.source_path, config.folders.drafts


def test_inspire_writes_a_fresh_draft_that_submit_accepts(
    backend_sim: RunningSimulator, make_config: MakeConfig
) -> None:
    cfg, drafts = config_file(make_config, backend_sim)
    first = bgh("inspire", "neon summer nights", config=cfg)
    second = bgh("inspire", "neon summer nights", config=cfg)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    written = sorted(drafts.iterdir())
    assert [p.name for p in written] == ["neon-summer-nights-2.md", "neon-summer-nights.md"]
    assert str(written[1]) in first.stdout and str(written[0]) in second.stdout
    assert written[0].read_text() == written[1].read_text()  # deterministic, not clobbered
    parse_song_file(written[1], RequestRules(backend=backend_sim.sim.settings.backend))
    dry = bgh("submit", "--dry-run", str(written[1]), config=cfg)
    assert dry.returncode == 0, dry.stderr
    assert backend_sim.sim.stats.submit_attempts == 0


def test_inspire_to_stdout_and_to_a_named_file(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    cfg, drafts = config_file(make_config, simulator)
    out = bgh("inspire", "-o", "-", config=cfg)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("---\ntitle: ")
    parse_song_text(out.stdout, name="stdout.md")
    target = tmp_path / "mine.md"
    named = bgh("inspire", "lullaby", "--instrumental", "-o", str(target), config=cfg)
    assert named.returncode == 0, named.stderr
    assert "instrumental: true" in target.read_text()
    again = bgh("inspire", "lullaby", "-o", str(target), config=cfg)
    assert again.returncode == 1 and "exists already" in again.stderr
    assert not list(drafts.iterdir())


def test_polish_writes_beside_the_file_and_shows_the_changes(
    backend_sim: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    cfg, _ = config_file(make_config, backend_sim)
    source = tmp_path / "harbour.md"
    source.write_text(MESSY, encoding="utf-8")
    result = bgh("polish", str(source), config=cfg)
    assert result.returncode == 0, result.stderr
    polished = tmp_path / "harbour.polished.md"
    assert str(polished) in result.stdout
    assert "+[Chorus]" in result.stdout
    assert source.read_text() == MESSY
    parse_song_file(polished)
    second = bgh("polish", str(source), config=cfg)
    assert second.returncode == 0 and (tmp_path / "harbour.polished-2.md").exists()


def test_the_commands_explain_a_backend_without_the_helpers(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    settings = SimulatorSettings(backend="acestep", latency=0.1, lm_helpers=False)
    with run_in_thread(settings) as sim:
        cfg, drafts = config_file(make_config, sim)
        source = tmp_path / "harbour.md"
        source.write_text(MESSY, encoding="utf-8")
        for args in (("inspire", "a song"), ("polish", str(source))):
            result = bgh(*args, config=cfg)
            assert result.returncode == 1
            assert "does not offer inspiration and polish" in result.stderr
            assert "submit --describe" in result.stderr
            assert "Traceback" not in result.stderr
        assert not list(drafts.iterdir()) and not (tmp_path / "harbour.polished.md").exists()


def test_the_simulator_documents_its_lm_switch() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bygheartd", "simulator", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    )
    text = " ".join(result.stdout.split())  # wrapped by click
    assert "--lm-helpers / --no-lm-helpers" in text and "'LLM not initialized'" in text


def test_polish_of_a_file_in_the_inbox_writes_to_the_drafts_instead(
    simulator: RunningSimulator, make_config: MakeConfig
) -> None:
    """Beside it would be in the inbox, where the watcher would queue (and pay for) it."""
    config = make_config(simulator)
    assert config.source_path is not None
    source = config.folders.inbox / "harbour.md"
    source.write_text(MESSY, encoding="utf-8")
    result = bgh("polish", str(source), config=config.source_path)
    assert result.returncode == 0, result.stderr
    assert "drafts folder instead" in result.stderr
    assert sorted(p.name for p in config.folders.inbox.iterdir()) == ["harbour.md"]
    assert (config.folders.drafts / "harbour.polished.md").is_file()


async def test_a_passing_server_error_is_retried_since_nothing_is_spent(
    scripted: tuple[ScriptedApi, ServerThread],
) -> None:
    api, server = scripted
    draft = {"caption": "pop", "lyrics": "[Verse]\nla", "key_scale": "Bb major"}
    api.expect(
        "POST",
        "/format_input",
        Reply(status=503, body={"detail": "Service Unavailable"}),
        Reply(body=envelope(draft)),
    )
    client = BygheartClient(server.origin + PREFIX, TEST_KEY, retry=RetryPolicy(2, 0.01, 0.01))
    async with client:
        got = await client.format_input("pop", "[Verse]\nla")
    assert got.key == "Bb major" and len(api.calls("/format_input")) == 2


def test_a_drafts_folder_on_an_unmounted_share_is_never_made(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """A drafts folder whose parent is missing is refused with what to do, and nothing is
    made inside the bare mount point; `-o` still writes the draft elsewhere."""
    share = tmp_path / "share"  # not mounted: it does not exist
    config = backend_config(make_config, simulator)
    assert config.source_path is not None
    text = config.source_path.read_text(encoding="utf-8")
    drafts = str(config.folders.drafts)
    config.source_path.write_text(text.replace(drafts, str(share / "drafts")), "utf-8")
    refused = bgh("inspire", "neon summer nights", config=config.source_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "folder unavailable:" in refused.stderr and "-o FILE" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not share.exists()
    elsewhere = tmp_path / "here.md"
    written = bgh("inspire", "neon summer nights", "-o", str(elsewhere), config=config.source_path)
    assert written.returncode == 0, written.stderr
    assert elsewhere.read_text(encoding="utf-8").startswith("---\ntitle: ")
