"""The library page as the daemon serves it: a real uvicorn on a free loopback port, wired to
a real service and engine against the simulator; httpx as the browser.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import TEST_KEY, MakeConfig

from bygheartd.errors import RequestError
from bygheartd.jobs import Job, JobStatus, Origin
from bygheartd.mcp.http import McpHttpServer
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.service.service import SongService
from bygheartd.service.submission import Submission
from bygheartd.simulator import RunningSimulator
from bygheartd.web.app import CSP, web_routes

pytestmark = pytest.mark.anyio

TOKEN = "web-test-token-5c1e0a9d7f3b"
LYRICS = "[Verse]\nneon lights tonight\n[Chorus]\nwe run until the morning"


@dataclass
class Web:
    server: McpHttpServer
    service: SongService

    @property
    def base(self) -> str:
        return self.server.base_url

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=20, **kwargs)

    async def login(self, http: httpx.AsyncClient) -> str:
        """Log `http` in (a session cookie); returns the session's CSRF token."""
        code = await self.service.logins.new_code()
        reply = await http.get(f"/login?code={code}")
        assert reply.status_code == 303, reply.text
        page = await http.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 200
        found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
        assert found is not None
        return found.group(1)

    async def enqueue(self, title: str, **values: Any) -> Job:
        data = {
            "title": title,
            "style": "dark synth pop",
            "lyrics": LYRICS,
            "model": "bygheart-melody-fast",
            "duration": 20,
        } | values
        submission = Submission(self.service.build_request(data), Origin.CLI)
        return (await self.service.submit(submission)).job


@pytest.fixture
async def web(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> AsyncIterator[Web]:
    token_file = tmp_path / "mcp-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    config = make_config(
        simulator,
        mcp={"http": False, "port": 0, "token_file": str(token_file)},
        web={"enabled": True},
    )
    async with Runtime(config, role=EngineRole.MCP, engine=True) as runtime:
        service = runtime.service
        server = McpHttpServer(
            service,
            mcp=False,
            extra_routes=lambda token: web_routes(service, token, poll_seconds=0.05),
        )
        await server.start()
        try:
            yield Web(server, service)
        finally:
            await server.stop()


async def finished(web: Web, title: str = "Neon Harbour", **values: Any) -> Job:
    job = await web.enqueue(title, **values)
    done = await web.service.wait(job.id, timeout=30, interval=0.05)
    assert done.status is JobStatus.DONE, done.reason
    return done


HTML = {"Accept": "text/html"}


# -- logging in --------------------------------------------------------------------


async def test_a_login_link_works_once_and_sets_a_strict_httponly_cookie(web: Web) -> None:
    code = await web.service.logins.new_code()
    async with web.client() as http:
        reply = await http.get(f"/login?code={code}")
        assert reply.status_code == 303 and reply.headers["location"] == "/"
        cookie = reply.headers["set-cookie"]
        assert "bygheartd_session=" in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Path=/" in cookie
        assert (await http.get("/", headers=HTML)).status_code == 200
    async with web.client() as other:
        again = await other.get(f"/login?code={code}", headers=HTML)
        assert again.status_code == 403 and "no longer works" in again.text
        assert "bygheartd_session" not in again.headers.get("set-cookie", "")


async def test_an_expired_login_link_is_refused(web: Web) -> None:
    code = await web.service.logins.new_code(ttl_seconds=-1)
    async with web.client() as http:
        reply = await http.get(f"/login?code={code}", headers=HTML)
    assert reply.status_code == 403 and "bygheartd web" in reply.text


async def test_without_a_session_pages_say_how_to_log_in_and_the_api_says_401(web: Web) -> None:
    async with web.client() as http:
        page = await http.get("/", headers=HTML)
        assert page.status_code == 401 and "bygheartd web" in page.text
        assert 'id="login-needed"' in page.text
        api = await http.post("/api/estimate", data={"style": "x"})
        assert api.status_code == 401 and "bygheartd web" in api.json()["detail"]
    async with web.client(cookies={"bygheartd_session": "made-up"}) as forged:
        assert (await forged.get("/", headers=HTML)).status_code == 401


async def test_logging_out_ends_the_session(web: Web) -> None:
    async with web.client() as http:
        csrf = await web.login(http)
        reply = await http.post("/logout", data={"csrf": csrf}, headers=HTML)
        assert reply.status_code == 303
        assert (await http.get("/", headers=HTML)).status_code == 401


async def test_the_bearer_token_lets_scripts_in_without_csrf(web: Web) -> None:
    job = await web.enqueue("Script Song")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with web.client(headers=auth) as http:
        page = await http.get("/", headers=HTML)
        assert page.status_code == 200 and "Script Song" in page.text
        cancelled = await http.post(
            f"/songs/{job.id}/cancel", headers={"Accept": "application/json"}
        )
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        wrong = await http.get("/", headers={"Authorization": "Bearer wrong-token-12345678"})
        assert wrong.status_code == 401
    assert TOKEN not in page.text


async def test_a_wrong_or_missing_csrf_token_is_403(web: Web) -> None:
    job = await web.enqueue("Keep Me")
    async with web.client() as http:
        await web.login(http)
        for data in ({}, {"csrf": "not-the-token"}):
            reply = await http.post(f"/songs/{job.id}/cancel", data=data, headers=HTML)
            assert reply.status_code == 403, data
            assert "CSRF" in reply.text
        header = await http.post("/api/estimate", headers={"X-CSRF-Token": "wrong"}, data={})
        assert header.status_code == 403
    assert (await web.service.get(job.id)).status is not JobStatus.CANCELLED


async def test_a_foreign_host_or_origin_is_refused(web: Web) -> None:
    async with web.client() as http:
        csrf = await web.login(http)
        host = await http.get("/", headers=HTML | {"Host": "evil.example"})
        assert host.status_code == 421
        origin = await http.post(
            "/api/estimate",
            data={"csrf": csrf},
            headers={"Origin": "http://evil.example", "X-CSRF-Token": csrf},
        )
        assert origin.status_code == 403


async def test_every_page_has_a_strict_csp_and_only_local_assets(web: Web) -> None:
    job = await finished(web)
    async with web.client() as http:
        await web.login(http)
        for path in ("/", f"/songs/{job.id}", "/new", "/guide"):
            reply = await http.get(path, headers=HTML)
            assert reply.status_code == 200, path
            assert reply.headers["content-security-policy"] == CSP
            assert "default-src 'self'" in CSP and "'unsafe-inline'" not in CSP
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert "<script>" not in reply.text and " style=" not in reply.text
            assets = re.findall(r'(?:src|href)="([^"#]+)"', reply.text)
            assert not [a for a in assets if re.match(r"(https?:)?//", a)], path
            for asset in {a for a in assets if a.startswith("/static/")}:
                got = await http.get(asset)
                assert got.status_code == 200 and got.content, asset


# -- the library -------------------------------------------------------------------


async def test_the_library_lists_songs_with_players_newest_first(web: Web) -> None:
    first = await finished(web, "First Light")
    second = await finished(web, "Second Wind")
    async with web.client() as http:
        await web.login(http)
        page = (await http.get("/", headers=HTML)).text
    assert page.index("Second Wind") < page.index("First Light")
    assert f'src="/songs/{first.id}/takes/1"' in page
    assert re.search(r'<audio controls preload="metadata" src="/songs/' + second.id, page)
    assert "bygheart-melody-fast" in page and "0:20" in page
    assert 'id="usage-chart"' in page and "<rect" in page
    assert re.search(r'id="credits-today">2<', page)  # two songs at 1 credit each


async def test_the_usage_chart_says_1_credit_not_1_credits(web: Web) -> None:
    await finished(web, "Only One")
    async with web.client() as http:
        await web.login(http)
        page = (await http.get("/", headers=HTML)).text
    assert re.search(r"<title>[0-9-]+: 1 credit</title>", page), page
    assert "(busiest day: 1 credit)" in page and "1 credits" not in page


async def test_search_filter_and_pagination(web: Web) -> None:
    for n in range(27):
        await web.enqueue(f"Plain {n:02d}", style="ambient drone")
    special = await web.enqueue("Odd One", style="bossa nova with kazoo")
    await web.enqueue("Words", lyrics="[Verse]\nthe lighthouse keeper sings")
    await web.service.cancel(special.id)
    async with web.client() as http:
        await web.login(http)
        by_style = (await http.get("/?q=KAZOO", headers=HTML)).text
        assert "Odd One" in by_style and "Plain 00" not in by_style
        by_lyrics = (await http.get("/?q=lighthouse", headers=HTML)).text
        assert "Words" in by_lyrics and "Odd One" not in by_lyrics
        by_title = (await http.get("/?q=plain 1", headers=HTML)).text
        assert "Plain 10" in by_title and "Plain 02" not in by_title
        cancelled = (await http.get("/?status=cancelled", headers=HTML)).text
        assert "Odd One" in cancelled and "Words" not in cancelled
        first = (await http.get("/", headers=HTML)).text
        assert "29 songs" in first and "page 1 of 2" in first
        assert "Words" in first and "Plain 00" not in first
        second = (await http.get("/?page=2", headers=HTML)).text
        assert "Plain 00" in second and "Words" not in second
        assert 'id="prev-page"' in second and 'id="next-page"' not in second
        nothing = (await http.get("/?q=%25", headers=HTML)).text  # % is not a wildcard
        assert "0 songs found" in nothing


async def test_search_finds_quotes_backslashes_and_words_across_lines(web: Web) -> None:
    quoted = await web.enqueue("Quoted", style='the "big" sound, back\\slash')
    lines = await web.enqueue("Lines", lyrics="[Verse]\nfirst line\nsecond line")
    other = await web.enqueue("Other", style="melody")  # the model's name is not searched
    for text, wanted in (
        ('"big"', {quoted.id}),
        ("back\\slash", {quoted.id}),
        ("first line\nsecond", {lines.id}),
        ("MELODY", {other.id}),
        ("quoted", {quoted.id}),
    ):
        jobs, total = await web.service.search(text, limit=10)
        assert {j.id for j in jobs} == wanted and total == len(wanted), text


# -- audio ---------------------------------------------------------------------------


async def test_takes_are_served_with_range_and_the_right_type(web: Web) -> None:
    job = await finished(web)
    path = job.files[0].path
    data = path.read_bytes()
    async with web.client() as http:
        await web.login(http)
        whole = await http.get(f"/songs/{job.id}/takes/1")
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-type"] == "audio/mpeg"
        assert whole.headers["accept-ranges"] == "bytes"
        part = await http.get(f"/songs/{job.id}/takes/1", headers={"Range": "bytes=10-99"})
        assert part.status_code == 206
        assert part.content == data[10:100]
        assert part.headers["content-range"] == f"bytes 10-99/{len(data)}"
        download = await http.get(f"/songs/{job.id}/files/{path.name}")
        assert download.status_code == 200 and download.content == data
        assert "attachment" in download.headers["content-disposition"]


async def test_paths_outside_the_jobs_recorded_files_are_refused(web: Web, tmp_path: Path) -> None:
    job = await finished(web)
    secret = tmp_path / "secret.mp3"
    secret.write_bytes(b"not yours")
    output = web.service.config.folders.output
    (output / "stray.mp3").write_bytes(b"not recorded")
    async with web.client() as http:
        await web.login(http)
        for path in (
            f"/songs/{job.id}/takes/2",
            f"/songs/{job.id}/takes/0",
            f"/songs/{job.id}/files/stray.mp3",
            f"/songs/{job.id}/files/..%2F..%2Fsecret.mp3",
            f"/songs/{job.id}/files/%2e%2e/secret.mp3",
            "/songs/nosuchjob00000/takes/1",
            "/static/../app.py",
            "/static/%2e%2e/app.py",
        ):
            reply = await http.get(path)
            assert reply.status_code in (403, 404), path
            assert b"not yours" not in reply.content and b"not recorded" not in reply.content
    # A recorded take moved out of the output folder (a symlink left in its place).
    take = job.files[0].path
    take.unlink()
    take.symlink_to(secret)
    async with web.client() as http:
        await web.login(http)
        reply = await http.get(f"/songs/{job.id}/takes/1")
        assert reply.status_code == 404 and b"not yours" not in reply.content


# -- one song --------------------------------------------------------------------------


async def test_the_song_page_shows_takes_texts_parameters_and_history(web: Web) -> None:
    job = await finished(web, "Harbour Lights", takes=2, seed=[7, 8], bpm=96)
    async with web.client() as http:
        await web.login(http)
        page = (await http.get(f"/songs/{job.id}", headers=HTML)).text
    assert 'id="song-title">Harbour Lights<' in page
    # One player for the song, a switch to each take (links: they work without script).
    assert page.count('data-testid="player"') == 1 and 'id="deck-audio"' in page
    assert 'id="switch-1"' in page and 'href="?take=2#deck"' in page
    assert "dark synth pop" in page and "we run until the morning" in page
    assert 'data-param="bpm">96<' in page
    assert 'id="history"' in page and "created" in page and "done" in page
    assert f"/new?from={job.id}&amp;seed=keep" in page
    assert 'id="cancel"' not in page and 'id="retry"' not in page
    assert f"/songs/{job.id}/files/" in page


async def test_quality_figures_and_a_waveform_come_from_the_sidecar(web: Web) -> None:
    job = await finished(web)
    sidecar = web.service.config.folders.output / f"{job.base_name}.json"
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    name = job.files[0].path.name
    data["plugins"]["quality"] = {
        name: {
            "take": 1,
            "duration": 19.9,
            "requested_duration": 20.0,
            "peak_dbfs": -1.2,
            "lufs": -14.1,
            "silence_ratio": 0.02,
            "clipped": False,
            "peaks": [0.1, 0.8, 0.4, 1.0],
            "warnings": ["take 1 is mostly silent"],
        }
    }
    data["generated"] = {"lyrics": "[Verse]\nwords the model wrote"}
    sidecar.write_text(json.dumps(data), encoding="utf-8")
    async with web.client() as http:
        await web.login(http)
        page = (await http.get(f"/songs/{job.id}", headers=HTML)).text
    assert 'id="waveform-1"' in page and re.search(r'<path d="M0\.0,', page)
    assert 'data-quality="lufs">-14.1<' in page and "loudness (LUFS)" in page
    assert 'data-quality="silence_ratio">0.02<' in page
    assert "take 1 is mostly silent" in page
    assert "words the model wrote" in page


async def test_cancel_and_retry_from_the_page(web: Web) -> None:
    job = await web.enqueue("Too Late", takes=1)
    await web.service.cancel(job.id)
    async with web.client() as http:
        csrf = await web.login(http)
        retry = await http.post(f"/songs/{job.id}/retry", data={"csrf": csrf}, headers=HTML)
        assert retry.status_code == 303 and retry.headers["location"] == f"/songs/{job.id}"
        assert (await web.service.get(job.id)).status is not JobStatus.CANCELLED
        again = await web.enqueue("Stop Me")
        page = (await http.get(f"/songs/{again.id}", headers=HTML)).text
        assert 'id="cancel"' in page
        cancel = await http.post(f"/songs/{again.id}/cancel", data={"csrf": csrf}, headers=HTML)
        assert cancel.status_code == 303
        assert (await web.service.get(again.id)).status is JobStatus.CANCELLED
        twice = await http.post(f"/songs/{again.id}/cancel", data={"csrf": csrf}, headers=HTML)
        assert twice.status_code == 409 and "already cancelled" in twice.text


async def judged(web: Web, title: str = "Two Takes") -> tuple[Job, list[str]]:
    """A finished song of two takes whose sidecar has the quality gate's verdicts: take 1
    passed, take 2 failed with a finding whose message carries markup."""
    job = await finished(web, title, takes=2)
    names = [take.path.name for take in job.takes()]
    assert len(names) == 2
    sidecar = web.service.config.folders.output / f"{job.base_name}.json"
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    message = f'{names[1]} is <b>cut short</b> & <script>alert("x")</script>'
    data["quality"] = {
        names[0]: {"take": 1, "duration": 20.0, "verdict": "pass", "findings": []},
        names[1]: {
            "take": 2,
            "duration": 4.0,
            "verdict": "fail",
            "findings": [{"code": "cut_short", "message": message}],
            "warnings": [f"quality: {message}"],
        },
    }
    sidecar.write_text(json.dumps(data), encoding="utf-8")
    return job, names


def take_html(page: str, number: int) -> str:
    """The markup of take `number` on a song page."""
    found = re.search(
        rf'<div class="take[^"]*" id="take-{number}".*?(?=<div class="take[ "]|</section>)',
        page,
        re.S,
    )
    assert found is not None, number
    return found.group(0)


async def test_each_takes_verdict_and_the_keeper_show_on_the_song_page(web: Web) -> None:
    job, _ = await judged(web)
    record = job.keeper_record()
    assert record is not None and record["take"] == 1 and record["by"] == "gate"
    async with web.client() as http:
        await web.login(http)
        page = (await http.get(f"/songs/{job.id}", headers=HTML)).text
    first, second = take_html(page, 1), take_html(page, 2)
    assert 'data-testid="keeper"' in first and "chosen by the quality gate" in first
    assert 'data-testid="keeper"' not in second
    assert 'id="verdict-1"' in first and "Passed the quality gate" in first
    assert 'data-verdict="fail"' in second and "Failed the quality gate" in second
    assert 'data-finding="cut_short"' in second and "cut short" in second
    # The finding's message is text, never markup, and not repeated as a warning.
    assert "<script>alert" not in page and "<b>cut short</b>" not in page
    assert "&lt;script&gt;alert(" in second and "&lt;b&gt;cut short&lt;/b&gt; &amp;" in second
    assert second.count("cut short") == 1
    assert 'id="keep-1"' not in page  # the keeper has no button; every other take has one
    assert f'action="/songs/{job.id}/takes/2/keep"' in second and 'id="keep-2"' in second
    assert "Keep this take" in second


async def test_keep_this_take_makes_it_the_keeper(web: Web) -> None:
    job, names = await judged(web, "Pick Me")
    sidecar = web.service.config.folders.output / f"{job.base_name}.json"
    async with web.client() as http:
        csrf = await web.login(http)
        reply = await http.post(f"/songs/{job.id}/takes/2/keep", data={"csrf": csrf}, headers=HTML)
        assert reply.status_code == 303, reply.text
        assert reply.headers["location"] == f"/songs/{job.id}#take-2"
        record = (await web.service.get(job.id)).keeper_record()
        assert record is not None and record["take"] == 2 and record["by"] == "person"
        assert json.loads(sidecar.read_text(encoding="utf-8"))["keeper"] == names[1]
        page = (await http.get(f"/songs/{job.id}", headers=HTML)).text
        second = take_html(page, 2)
        assert 'data-testid="keeper"' in second and "chosen by a person" in second
        assert 'id="keep-2"' not in page and 'id="keep-1"' in page
        # The library plays the keeper first and marks it.
        library = (await http.get("/", headers=HTML)).text
        row = library[library.index(f'id="job-{job.id}"') :].split("</article>")[0]
        assert re.findall(r'<audio [^>]*data-take="(\d)"', row) == ["2", "1"]
        assert 'data-field="keeper"' in row
        # Back to take 1: the choice can change again.
        back = await http.post(f"/songs/{job.id}/takes/1/keep", data={"csrf": csrf}, headers=HTML)
        assert back.status_code == 303
        record = (await web.service.get(job.id)).keeper_record()
        assert record is not None and record["take"] == 1


async def test_keeping_a_take_needs_csrf_and_a_take_of_a_finished_song(web: Web) -> None:
    job, _ = await judged(web, "Guarded")
    pending = await web.enqueue("Not Yet", takes=2)
    await web.service.cancel(pending.id)
    async with web.client() as http:
        csrf = await web.login(http)
        for data in ({}, {"csrf": "not-the-token"}):
            refused = await http.post(f"/songs/{job.id}/takes/2/keep", data=data, headers=HTML)
            assert refused.status_code == 403 and "CSRF" in refused.text, data
        record = (await web.service.get(job.id)).keeper_record()
        assert record is not None and record["take"] == 1 and record["by"] == "gate"
        missing = await http.post(
            f"/songs/{job.id}/takes/3/keep", data={"csrf": csrf}, headers=HTML
        )
        assert missing.status_code == 409 and "has 2 takes" in missing.text
        assert 'id="message"' in missing.text
        unfinished = await http.post(
            f"/songs/{pending.id}/takes/1/keep", data={"csrf": csrf}, headers=HTML
        )
        assert unfinished.status_code == 409 and "finished song" in unfinished.text
        page = (await http.get(f"/songs/{pending.id}", headers=HTML)).text
        assert "Keep this take" not in page
        gone = await http.post("/songs/nosuchjob00000/takes/1/keep", data={"csrf": csrf})
        assert gone.status_code == 404
    # Scripts with the bearer token get the keeper back as JSON.
    auth = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    async with web.client(headers=auth) as script:
        kept = await script.post(f"/songs/{job.id}/takes/2/keep")
        assert kept.status_code == 200
        assert kept.json()["keeper"]["take"] == 2 and kept.json()["keeper"]["by"] == "person"


# -- the form ----------------------------------------------------------------------------


async def test_the_form_has_an_input_for_every_song_file_key(web: Web) -> None:
    from bygheartd.songs.fields import ALIASES

    async with web.client() as http:
        await web.login(http)
        page = (await http.get("/new", headers=HTML)).text
    for key in ALIASES:
        assert f'name="{key}"' in page, key
    for group in ("General", "Thinking", "Vocal style", "Expert controls", "Edit / Repaint"):
        assert f"<summary>{group}</summary>" in page
    assert 'href="/guide"' in page and 'enctype="multipart/form-data"' in page


async def test_submitting_the_form_queues_a_job_from_the_web(web: Web) -> None:
    async with web.client() as http:
        csrf = await web.login(http)
        reply = await http.post(
            "/new",
            files={"source_audio": ("", b"", "application/octet-stream")},
            data={
                "csrf": csrf,
                "title": "From The Form",
                "style": "lo-fi hip hop",
                "lyrics": LYRICS,
                "model": "bygheart-melody-fast",
                "duration": "30",
                "time_signature": "3",
                "instrumental": "",
            },
            headers=HTML,
        )
        assert reply.status_code == 303, reply.text
        job_id = reply.headers["location"].removeprefix("/songs/")
        job = await web.service.get(job_id)
        assert job.origin == "web" and job.title == "From The Form"
        assert job.request["duration"] == 30 and job.request["time_signature"] == "3"
        done = await web.service.wait(job_id, timeout=30, interval=0.05)
        assert done.status is JobStatus.DONE


async def test_bad_values_come_back_beside_their_fields_in_song_file_words(web: Web) -> None:
    async with web.client() as http:
        csrf = await web.login(http)
        reply = await http.post(
            "/new",
            data={"csrf": csrf, "style": "rock", "lyrics": LYRICS, "duration": "5", "bpm": "fast"},
            headers=HTML,
        )
    assert reply.status_code == 400
    duration = re.search(r'id="error-duration"[^>]*>(.*?)</div>', reply.text, re.S)
    bpm = re.search(r'id="error-bpm"[^>]*>(.*?)</div>', reply.text, re.S)
    assert duration is not None and "duration" in duration.group(1)
    assert "10 to 600" in duration.group(1)
    assert bpm is not None and "bpm" in bpm.group(1)
    assert 'value="fast"' in reply.text  # what was typed stays
    with pytest.raises(RequestError) as song_file:
        web.service.build_request({"style": "rock", "lyrics": LYRICS, "duration": "5"})
    assert song_file.value.reason in duration.group(1)


async def test_the_estimate_follows_the_form(web: Web) -> None:
    async with web.client() as http:
        headers = {"X-CSRF-Token": await web.login(http)}
        one = await http.post(
            "/api/estimate",
            data={"style": "rock", "lyrics": LYRICS, "model": "bygheart-melody-fast"},
            headers=headers,
        )
        four = await http.post(
            "/api/estimate",
            data={"style": "rock", "lyrics": LYRICS, "model": "bygheart-studio-pro", "takes": "2"},
            headers=headers,
        )
        bad = await http.post(
            "/api/estimate",
            data={"style": "rock", "lyrics": LYRICS, "takes": "99"},
            headers=headers,
        )
    assert one.json()["ok"] and one.json()["cost"] == 1
    assert one.json()["left_today"] == 29 and "29 left today" in one.json()["text"]
    assert four.json()["cost"] == 4 and four.json()["left_today"] == 26
    assert not bad.json()["ok"] and "takes" in bad.json()["problems"]


async def test_make_again_prefills_the_form_with_or_without_the_seed(web: Web) -> None:
    job = await finished(web, "Again", seed=4242, bpm=120)
    async with web.client() as http:
        await web.login(http)
        keep = (await http.get(f"/new?from={job.id}&seed=keep", headers=HTML)).text
        new = (await http.get(f"/new?from={job.id}&seed=new", headers=HTML)).text
    assert 'name="seed" id="field-seed" value="4242"' in keep
    assert 'name="seed" id="field-seed" value=""' in new
    for page in (keep, new):
        assert 'value="Again"' in page and 'value="120"' in page


async def test_an_uploaded_source_audio_goes_with_the_job(web: Web) -> None:
    async with web.client() as http:
        csrf = await web.login(http)
        reply = await http.post(
            "/new",
            data={
                "csrf": csrf,
                "style": "rock",
                "lyrics": LYRICS,
                "task_type": "cover",
                "model": "bygheart-composer-lab",
            },
            files={
                "source_audio": ("../My Take.mp3", b"ID3fake-audio", "audio/mpeg"),
                "reference_audio": ("C:\\music\\My Take.mp3", b"ID3reference", "audio/mpeg"),
            },
            headers=HTML,
        )
        assert reply.status_code == 303, reply.text
    job = await web.service.get(reply.headers["location"].removeprefix("/songs/"))
    assert job.request["source_audio"] == "My-Take.mp3"
    assert job.request["reference_audio"] == "reference-My-Take.mp3"  # same name: kept apart
    saved = list((web.service.config.state_dir / "web-uploads").glob("*/My-Take.mp3"))
    assert len(saved) == 1 and saved[0].read_bytes() == b"ID3fake-audio"
    assert saved[0].stat().st_mode & 0o077 == 0
    assert (saved[0].parent / "reference-My-Take.mp3").read_bytes() == b"ID3reference"
    # The engine finds both beside the "song file" of the upload: the job is submitted.
    settled = await web.service.wait(job.id, timeout=30, interval=0.05)
    assert settled.status is JobStatus.DONE, settled.reason


async def test_flags_the_server_decides_offer_default_yes_and_no(web: Web) -> None:
    async with web.client() as http:
        csrf = await web.login(http)
        page = (await http.get("/new", headers=HTML)).text
        assert re.search(r'<select name="use_cot_caption"[^>]*>\s*<option value="" selected>', page)
        assert 'type="checkbox" name="instrumental"' in page
        base = {"csrf": csrf, "style": "rock", "lyrics": LYRICS}
        unset = await http.post("/new", data=base, headers=HTML)
        off = await http.post("/new", data=base | {"use_cot_caption": "false"}, headers=HTML)
    first = await web.service.get(unset.headers["location"].removeprefix("/songs/"))
    second = await web.service.get(off.headers["location"].removeprefix("/songs/"))
    assert "use_cot_caption" not in first.request and first.request["instrumental"] is False
    assert second.request["use_cot_caption"] is False


async def test_the_guide_is_rendered_from_markdown(web: Web) -> None:
    async with web.client() as http:
        await web.login(http)
        page = (await http.get("/guide", headers=HTML)).text
    assert "<h1>The bygheartd songwriting guide</h1>" in page and "<table>" in page


# -- live updates --------------------------------------------------------------------------


async def test_the_event_stream_reports_a_job_as_it_changes(web: Web) -> None:
    seen: list[dict[str, Any]] = []
    async with web.client() as http:
        await web.login(http)
        async with http.stream("GET", "/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            job = await web.enqueue("Live One")
            with anyio.fail_after(30):
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        if event["id"] == job.id:
                            seen.append(event)
                            if event["status"] == "done":
                                break
    statuses = [e["status"] for e in seen]
    assert statuses[0] in ("queued", "submitting", "running") and statuses[-1] == "done"
    assert seen[-1]["final"] and seen[-1]["takes"] == 1
    async with web.client() as http:
        await web.login(http)
        row = await http.get(f"/fragments/rows/{job.id}", headers=HTML)
    assert row.status_code == 200 and f'src="/songs/{job.id}/takes/1"' in row.text


async def test_no_secret_reaches_a_page(web: Web) -> None:
    job = await finished(web)
    async with web.client() as http:
        await web.login(http)
        texts = [(await http.get(p, headers=HTML)).text for p in ("/", f"/songs/{job.id}", "/new")]
    for text in texts:
        assert TEST_KEY not in text and TOKEN not in text


# -- measured lengths, "make again" with audio, old uploads, access -------------------


def row_of(page: str, job_id: str) -> str:
    found = re.search(rf'<article [^>]*id="job-{job_id}".*?</article>', page, re.S)
    assert found is not None, f"no row for {job_id}"
    return found.group(0)


async def test_library_rows_show_the_measured_length_and_the_requested_one_when_far_off(
    web: Web,
) -> None:
    job = await finished(web, "Measured")
    sidecar = web.service.config.folders.output / f"{job.base_name}.json"
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    name = job.files[0].path.name
    async with web.client() as http:
        await web.login(http)
        # No quality figures: the length comes from the take itself (the simulator makes
        # 2 % of the requested 20 s), so the requested length shows as a hint.
        row = row_of((await http.get("/", headers=HTML)).text, job.id)
        assert 'data-measured="yes"' in row and ">0:00<" in row
        assert '<span class="hint" data-field="requested">(requested 0:20)</span>' in row
        # The quality plugin's figures win, and a near miss shows no hint.
        data["quality"] = {name: {"take": 1, "duration": 19.6, "requested_duration": 20.0}}
        sidecar.write_text(json.dumps(data), encoding="utf-8")
        row = row_of((await http.get("/", headers=HTML)).text, job.id)
        assert re.search(r'data-field="length" data-measured="yes"[^>]*>0:20<', row)
        assert 'data-field="requested"' not in row
        assert '<small data-field="take-length">0:20</small>' in row
        # The sidecar changes: the page follows (no stale length from memory).
        data["quality"][name]["duration"] = 12.25
        sidecar.write_text(json.dumps(data, indent=1), encoding="utf-8")
        row = row_of((await http.get("/", headers=HTML)).text, job.id)
        assert ">0:12<" in row and "(requested 0:20)" in row
        fragment = (await http.get(f"/fragments/rows/{job.id}", headers=HTML)).text
        assert ">0:12<" in fragment
    # A job with no take yet shows the requested length, saying so.
    queued = await web.enqueue("Not yet", duration=45)
    async with web.client() as http:
        await web.login(http)
        row = row_of((await http.get("/", headers=HTML)).text, queued.id)
    if 'data-measured="no"' in row:  # it may have finished already on a fast machine
        assert "0:45 requested" in row


async def cover_job(web: Web, http: httpx.AsyncClient, csrf: str, audio: bytes) -> Job:
    reply = await http.post(
        "/new",
        data={
            "csrf": csrf,
            "style": "rock",
            "lyrics": LYRICS,
            "task_type": "cover",
            "model": "bygheart-composer-lab",
        },
        files={"source_audio": ("Take One.mp3", audio, "audio/mpeg")},
        headers=HTML,
    )
    assert reply.status_code == 303, reply.text
    return await web.service.get(reply.headers["location"].removeprefix("/songs/"))


def again_fields(page: str) -> dict[str, str]:
    """The form as a browser would post it untouched: every named input with a value."""
    found: dict[str, str] = {}
    for tag in re.findall(r"<input [^>]*>", page):
        name = re.search(r'name="([^"]+)"', tag)
        if name is None or 'type="file"' in tag:
            continue
        value = re.search(r'value="([^"]*)"', tag)
        if 'type="checkbox"' in tag and " checked" not in tag:
            continue
        found[name.group(1)] = value.group(1) if value else ""
    for name, body in re.findall(r'<textarea name="([^"]+)"[^>]*>(.*?)</textarea>', page, re.S):
        found[name] = body.replace("&#34;", '"').replace("&#39;", "'").replace("&amp;", "&")
    for name, options in re.findall(r'<select name="([^"]+)"[^>]*>(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', options)
        found[name] = chosen.group(1) if chosen else ""
    return found


async def test_make_again_keeps_the_uploaded_audio_or_takes_a_replacement(web: Web) -> None:
    async with web.client() as http:
        csrf = await web.login(http)
        first = await cover_job(web, http, csrf, b"ID3first-take")
        assert (await web.service.wait(first.id, timeout=30, interval=0.05)).status is (
            JobStatus.DONE
        )
        page = (await http.get(f"/new?from={first.id}&seed=new", headers=HTML)).text
        assert re.search(r'<input type="checkbox" name="keep_source_audio"[^>]* checked', page)
        assert f'name="from_job" id="from-job" value="{first.id}"' in page
        assert "Take-One.mp3" in page and '<label class="replace" for="field-source_audio">' in page
        assert "Upload its" not in page
        # Without JavaScript the cost is on the page already.
        assert re.search(r'id="estimate"[^>]*data-cost="\d+"', page)
        # Posted untouched: the same audio goes with the new job, in its own folder.
        reply = await http.post("/new", data=again_fields(page), headers=HTML)
        assert reply.status_code == 303, reply.text
        second = await web.service.get(reply.headers["location"].removeprefix("/songs/"))
        assert second.id != first.id and second.request["source_audio"] == "Take-One.mp3"
        saved = sorted((web.service.config.state_dir / "web-uploads").glob("*/Take-One.mp3"))
        assert len(saved) == 2 and {f.read_bytes() for f in saved} == {b"ID3first-take"}
        settled = await web.service.wait(second.id, timeout=30, interval=0.05)
        assert settled.status is JobStatus.DONE, settled.reason
        # A new file replaces the kept one.
        fields = again_fields(page)
        reply = await http.post(
            "/new",
            data=fields,
            files={"source_audio": ("Other.mp3", b"ID3other", "audio/mpeg")},
            headers=HTML,
        )
        assert reply.status_code == 303, reply.text
        third = await web.service.get(reply.headers["location"].removeprefix("/songs/"))
        assert third.request["source_audio"] == "Other.mp3"
        # Unticked and no file: the form says what is missing, beside the field.
        fields.pop("keep_source_audio")
        refused = await http.post("/new", data=fields, headers=HTML)
        assert refused.status_code == 400
        assert re.search(r'<p class="error">task_type cover needs source_audio', refused.text)
        assert re.search(r'<input type="checkbox" name="keep_source_audio"[^>]*>', refused.text)
        assert not re.search(r'name="keep_source_audio"[^>]* checked', refused.text)
        # The live estimate knows the kept audio too.
        estimate = await http.post(
            "/api/estimate", data=again_fields(page), headers={"X-CSRF-Token": csrf}
        )
        assert estimate.json()["ok"] is True, estimate.json()


async def test_make_again_never_takes_audio_from_outside_the_uploads_or_archive(
    web: Web, tmp_path: Path
) -> None:
    # A song file given on the command line, its audio beside it (outside every folder
    # the page may read): "make again" cannot reuse it, and says to upload it.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.mp3").write_bytes(b"ID3not-for-the-web")
    song = outside / "cover.json"
    song.write_text(
        json.dumps(
            {
                "style": "rock",
                "task_type": "cover",
                "source_audio": "secret.mp3",
                "model": "bygheart-composer-lab",
                "lyrics": LYRICS,
            }
        ),
        encoding="utf-8",
    )
    job = await web.service.submit_file(song)
    async with web.client() as http:
        csrf = await web.login(http)
        page = (await http.get(f"/new?from={job.id}&seed=new", headers=HTML)).text
        assert 'name="keep_source_audio"' not in page
        assert "Upload its source_audio again" in page
        fields = again_fields(page) | {"keep_source_audio": "true"}
        refused = await http.post("/new", data=fields, headers=HTML)
        assert refused.status_code == 400
        assert "no longer kept: upload it" in refused.text
        # A made-up job id is no way in either.
        fields = fields | {"from_job": "../../elsewhere/secret.mp3"}
        refused = await http.post("/new", data=fields | {"csrf": csrf}, headers=HTML)
        assert refused.status_code == 400 and "to make again is gone" in refused.text
    copies = list((web.service.config.state_dir / "web-uploads").rglob("secret.mp3"))
    assert copies == []


async def test_old_uploads_of_final_jobs_are_swept_and_others_kept(web: Web) -> None:
    service = web.service
    # The daemon's sweep, with a short keep time and interval (the defaults: 7 days, 1 h).
    server = McpHttpServer(
        service,
        mcp=False,
        extra_routes=lambda token: web_routes(
            service, token, poll_seconds=0.05, upload_keep_seconds=0, sweep_seconds=0.05
        ),
    )
    await server.start()
    try:
        root = service.config.state_dir / "web-uploads"
        orphan = root / "half-written"  # a submit in progress has no job file yet
        orphan.mkdir(parents=True)
        (orphan / "a.mp3").write_bytes(b"ID3")
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
            code = await service.logins.new_code()
            await http.get(f"/login?code={code}")
            page = (await http.get("/new", headers=HTML)).text
            found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
            assert found is not None
            job = await cover_job(Web(server, service), http, found.group(1), b"ID3x")
        folders = [p.parent for p in root.glob("*/Take-One.mp3")]
        assert len(folders) == 1 and (folders[0] / "job").read_text() == job.id
        settled = await service.wait(job.id, timeout=30, interval=0.05)
        assert settled.status is JobStatus.DONE  # the upload was there at submit time
        with anyio.fail_after(15):
            while folders[0].exists():
                await anyio.sleep(0.05)
        assert orphan.exists()  # young, jobless: left alone
    finally:
        await server.stop()


async def test_an_ended_login_says_log_in_again_and_the_stream_sets_retry(web: Web) -> None:
    async with web.client() as http:
        await web.login(http)
        assert (await http.get("/session")).json()["ok"] is True
        async with http.stream("GET", "/events") as stream:
            first = await anext(stream.aiter_text())
        assert first.startswith("retry: ")
        cookie = http.cookies["bygheartd_session"]
    # A restarted daemon knows no session: same cookie, a fresh listener.
    service = web.service
    server = McpHttpServer(
        service, mcp=False, extra_routes=lambda token: web_routes(service, token)
    )
    await server.start()
    try:
        async with httpx.AsyncClient(
            base_url=server.base_url, cookies={"bygheartd_session": cookie}, timeout=20
        ) as http:
            events = await http.get("/events")
            assert events.status_code == 401 and events.json()["error"] == "login_ended"
            assert "log in again" in events.json()["detail"]
            assert (await http.get("/session")).status_code == 401
            page = await http.get("/", headers=HTML)
            assert page.status_code == 401 and "Your login ended: log in again" in page.text
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as fresh:
            never = await fresh.get("/session")
            assert never.status_code == 401 and never.json()["error"] == "unauthorized"
            # The header to send, whole, in words that survive any rendering of the reply.
            assert "'Authorization: Bearer TOKEN'" in never.json()["detail"]
    finally:
        await server.stop()


class _Controls(HTMLParser):
    """Every form control of a page, whether a label names it, and the buttons' words."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str]] = []
        self.labelled: set[str] = set()
        self.buttons: list[str] = []
        self._in_label = 0
        self._in_button = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "label":
            self._in_label += 1
            if a.get("for"):
                self.labelled.add(a["for"])
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a | {"_wrapped": "yes" if self._in_label else ""})
        elif tag == "button":
            self._in_button = True
            self.buttons.append("")
        elif tag == "audio":
            self.controls.append(a | {"_wrapped": ""})

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._in_label -= 1
        elif tag == "button":
            self._in_button = False

    def handle_data(self, data: str) -> None:
        if self._in_button:
            self.buttons[-1] += data.strip()


async def test_every_control_has_a_label_and_every_button_says_what_it_does(web: Web) -> None:
    job, _ = await judged(web, "Labelled")
    failed = await web.enqueue("Cancel me")
    await web.service.cancel(failed.id)
    async with web.client() as http:
        await web.login(http)
        paths = ["/", f"/songs/{job.id}", f"/songs/{failed.id}", "/new", f"/new?from={job.id}"]
        for path in paths:
            parser = _Controls()
            parser.feed((await http.get(path, headers=HTML)).text)
            assert parser.controls or parser.buttons, path
            for control in parser.controls:
                named = (
                    control.get("id", "") in parser.labelled
                    or control["_wrapped"]
                    or control.get("aria-label")
                    or control.get("aria-labelledby")
                )
                assert named, (path, control)
            for words in parser.buttons:
                assert len(words.split()) >= 2, (path, words)  # "Retry this song", not "Go"


# -- `bygheartd run` and `bygheartd web` -------------------------------------------------


def test_the_daemon_serves_the_library_without_mcp_and_bygheartd_web_logs_in(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """The real thing: `bygheartd run` with `[web] enabled` and MCP HTTP off, and the link
    that `bygheartd web` (another process) prints."""
    from _daemon import Daemon, cli, wait_for

    config = make_config(simulator, mcp={"http": False, "port": 0}, web={"enabled": True})
    assert config.source_path is not None
    daemon = Daemon(config.source_path, tmp_path / "daemon.log").start()
    try:
        wait_for(lambda: "the library page at" in daemon.log(), what="the web listener")
        done = cli(config.source_path, "web", "--no-open")
        assert done.returncode == 0, done.stderr
        link = done.stdout.strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:[0-9]+/login\?code=[A-Za-z0-9_-]+", link), link
        base = link.split("/login")[0]
        with httpx.Client(timeout=20) as http:
            assert http.get(base + "/", headers=HTML).status_code == 401
            login = http.get(link)
            assert login.status_code == 303
            assert http.get(base + "/", headers=HTML).status_code == 200
            assert http.get(link, headers=HTML).status_code == 403  # once only
            assert http.post(base + "/mcp", json={}).status_code == 404  # no MCP here
    finally:
        daemon.stop()
    # No daemon now: the link still comes (for one about to start), with a note that says so.
    later = cli(config.source_path, "web", "--no-open")
    assert later.returncode == 0 and "no running `bygheartd run`" in later.stderr
    assert later.stdout.startswith("http://127.0.0.1:0/login?code=")  # the configured port
    off = make_config(simulator, web={"enabled": False})
    assert off.source_path is not None
    refused = cli(off.source_path, "web", "--no-open")
    assert refused.returncode == 1 and "[web] enabled = true" in refused.stderr


def test_the_quick_web_benchmark_runs_and_writes_every_figure(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "web.json"
    bench = Path(__file__).resolve().parent.parent / "bench" / "web.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "first page" in done.stdout
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["jobs"] == 500
    assert all(row["median_ms"] > 0 for row in figures["requests"].values())


async def test_the_quality_plugin_draws_each_takes_waveform(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the first-party `quality` plugin on, the page draws what it measured."""
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")  # conftest keeps plugins off by default
    config = make_config(simulator, plugins={"enabled": ["quality"]}, web={"enabled": True})
    async with Runtime(config, role=EngineRole.MCP, engine=True) as runtime:
        service = runtime.service
        server = McpHttpServer(
            service, mcp=False, extra_routes=lambda token: web_routes(service, token)
        )
        await server.start()
        try:
            web = Web(server, service)
            job = await finished(web, audio_format="wav", duration=10)
            async with web.client() as http:
                await web.login(http)
                page = (await http.get(f"/songs/{job.id}", headers=HTML)).text
        finally:
            await server.stop()
    assert 'id="waveform-1"' in page and re.search(r'<path d="M0\.0,', page)
    assert 'data-quality="duration">' in page and 'data-quality="lufs">' in page


async def test_the_library_and_mcp_share_one_listener(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """With `[mcp] http = true` too, /mcp keeps its bearer token and the pages their login."""
    token_file = tmp_path / "mcp-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    config = make_config(
        simulator,
        mcp={"http": True, "port": 0, "token_file": str(token_file)},
        web={"enabled": True},
    )
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    mcp_headers = {"Accept": "application/json, text/event-stream"}
    async with Runtime(config, role=EngineRole.MCP, engine=True) as runtime:
        service = runtime.service
        server = McpHttpServer(
            service, mcp=True, extra_routes=lambda token: web_routes(service, token)
        )
        await server.start()
        try:
            web = Web(server, service)
            async with web.client() as http:
                refused = await http.post("/mcp", json=init, headers=mcp_headers)
                assert refused.status_code == 401
                auth = mcp_headers | {"Authorization": f"Bearer {TOKEN}"}
                assert (await http.post("/mcp", json=init, headers=auth)).status_code == 200
                assert (await http.get("/", headers=HTML)).status_code == 401
                await web.login(http)
                assert (await http.get("/", headers=HTML)).status_code == 200
                health = (await http.get("/health")).json()
                assert health["mcp"] == "/mcp" and health["web"] is True
        finally:
            await server.stop()


async def test_an_unknown_song_is_a_page_that_says_so(web: Web) -> None:
    async with web.client() as http:
        await web.login(http)
        page = await http.get("/songs/nosuchjob00000", headers=HTML)
        retry = await http.post(
            "/songs/nosuchjob00000/retry",
            headers={"X-CSRF-Token": await web.login(http), "Accept": "application/json"},
        )
    assert page.status_code == 404 and "bygheartd list" in page.text
    assert retry.status_code == 404


# -- the listening room (issue 25) ------------------------------------------------------


async def test_findings_with_a_place_are_drawn_on_the_waveform_where_they_are(web: Web) -> None:
    job = await finished(web, "Marked")
    sidecar = web.service.config.folders.output / f"{job.base_name}.json"
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    name = job.files[0].path.name
    gap = 'drops out <img src=x onerror="alert(1)">'
    data["quality"] = {
        name: {
            "take": 1,
            "duration": 20.0,
            "peaks": [0.2, 0.9, 0.1, 0.7],
            "verdict": "fail",
            "findings": [
                {"code": "silent", "message": gap, "at": 5.0, "until": 9.0},
                {"code": "cut_off", "message": "ends abruptly", "at": 19.95, "until": 20.0},
                {"code": "off_key", "message": "in another key"},  # no place: listed only
            ],
        }
    }
    sidecar.write_text(json.dumps(data), encoding="utf-8")
    async with web.client() as http:
        await web.login(http)
        page = (await http.get(f"/songs/{job.id}", headers=HTML)).text
    dropout = re.search(r'<rect class="mark mark-silent" x="([\d.]+)" y="0" width="([\d.]+)"', page)
    assert dropout is not None and dropout.groups() == ("150.0", "120.0")  # 5-9 s of 20 s
    end = re.search(r'<rect class="mark mark-cut_off" x="([\d.]+)" y="0" width="([\d.]+)"', page)
    assert end is not None and float(end[1]) + float(end[2]) <= 600  # inside the box, visible
    assert float(end[2]) >= 4
    assert 'data-finding="off_key"' in page and "mark-off_key" not in page
    assert "<img src=x" not in page and "drops out &lt;img src=x" in page


async def test_the_deck_opens_on_the_keeper_or_the_take_asked_for(web: Web) -> None:
    job, _ = await judged(web, "Which One")
    async with web.client() as http:
        await web.login(http)
        for query, take in (("", 1), ("?take=2", 2), ("?take=9", 1), ("?take=x", 1)):
            page = (await http.get(f"/songs/{job.id}{query}", headers=HTML)).text
            deck = re.search(r'<audio [^>]*id="deck-audio"[^>]*>', page)
            assert deck is not None and f'src="/songs/{job.id}/takes/{take}"' in deck[0], query
            assert re.search(rf'id="switch-{take}"[^>]*aria-current="true"', page), query
            assert f'<g class="wave-take current" id="waveform-{take}"' in page


async def test_the_library_filters_keepers_only_and_failed_the_gate(web: Web) -> None:
    good, _ = await judged(web, "Good Song")
    bad = await finished(web, "Bad Song", takes=2)
    await web.service.store.update(
        bad.id, warnings=("quality: bad-song.mp3 is 20% of the requested 20 s",)
    )
    waiting = await web.enqueue("Not Made")
    await web.service.cancel(waiting.id)
    async with web.client() as http:
        await web.login(http)
        keepers = (await http.get("/?show=keepers", headers=HTML)).text
        failed = (await http.get("/?show=failed", headers=HTML)).text
        both = (await http.get("/?show=failed&q=bad", headers=HTML)).text
        none = (await http.get("/?show=failed&status=cancelled", headers=HTML)).text
    for job_id in (good.id, bad.id):
        row = keepers[keepers.index(f'id="job-{job_id}"') :].split("</article>")[0]
        assert len(re.findall(r"<audio ", row)) == 1  # the keeper alone
    assert f'id="job-{waiting.id}"' not in keepers
    assert f'id="job-{bad.id}"' in failed and f'id="job-{good.id}"' not in failed
    assert f'id="job-{waiting.id}"' not in failed
    assert f'id="job-{bad.id}"' in both and "1 song found" in both
    assert "0 songs found" in none
    assert 'value="failed" selected' in failed


async def test_the_event_stream_sends_the_shared_progress_figure_which_never_falls(
    web: Web, simulator: RunningSimulator
) -> None:
    """A running song's bar moves by `progress` events (the row is not read again for
    them): the figure `show` prints, with the time left, never lower than the one before."""
    simulator.set_faults(latency=3)
    figures: list[dict[str, Any]] = []
    async with web.client() as http:
        await web.login(http)
        async with http.stream("GET", "/events") as stream:
            job = await web.enqueue("Slow Live")
            kind = ""
            with anyio.fail_after(40):
                async for line in stream.aiter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                        if data["id"] != job.id:
                            continue
                        if kind == "progress":
                            figures.append(data)
                        elif data["status"] == "done":
                            break
    running = [f for f in figures if f["status"] == "running"]
    assert len(running) >= 2, figures
    percents = [f["percent"] for f in figures]
    assert percents == sorted(percents) and percents[-1] > percents[0]
    assert all(f["text"].startswith(f"{f['percent']} %") for f in running)
    assert any(f["left"].endswith("left") for f in running)
    assert len({f["making"] for f in figures}) == 1
