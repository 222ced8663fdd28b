"""Configuration: the pinned keys, typo suggestions, key lookup order, config check."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TEST_KEY, write_config

from bygheartd.config import (
    config_sections,
    find_api_key,
    load_config,
    parse_config,
    section_keys,
)
from bygheartd.errors import ConfigError


def test_example_config_loads_and_documents_every_key() -> None:
    config = load_config(REPO / "config.example.toml")
    text = (REPO / "config.example.toml").read_text()
    sections = config_sections()
    assert {"api", "folders", "queue", "budget", "plugins", "web", "store"} <= set(sections)
    for section, kind in sections.items():
        assert f"[{section}" in text, section
        for key in section_keys(kind):
            assert f"{key} =" in text or f"# {key} =" in text, f"{section}.{key}"
    assert config.plugins.tables()["loudnorm"]["target_lufs"] == -14.0
    assert "settings" not in section_keys(sections["plugins"])  # where the tables are kept


def test_unknown_key_names_the_nearest_valid_one() -> None:
    with pytest.raises(ConfigError, match=re.escape("did you mean 'queue.poll_min_seconds'")):
        parse_config({"queue": {"poll_min_secs": 3}})
    with pytest.raises(ConfigError, match=re.escape("did you mean 'watch.settle_seconds'")):
        parse_config({"watch": {"setle_seconds": 1}})


def test_plugin_section_typo_is_refused_but_plugin_tables_are_kept() -> None:
    with pytest.raises(ConfigError, match=re.escape("did you mean 'plugins.enabled'")):
        parse_config({"plugins": {"enable": ["tags"]}})
    config = parse_config({"plugins": {"tags": {"artist": "Me"}}})
    assert config.plugins.tables() == {"tags": {"artist": "Me"}}


def test_bad_values_say_what_was_given() -> None:
    with pytest.raises(ConfigError, match=r"budget.timezone.*unknown time zone"):
        parse_config({"budget": {"timezone": "Mars/Olympus"}})
    with pytest.raises(ConfigError, match=re.escape("queue.max_in_flight")):
        parse_config({"queue": {"max_in_flight": 0}})


def test_a_minimum_above_its_maximum_is_refused_with_both_pairs_in_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "queue": {
                    "poll_min_seconds": 50,
                    "poll_max_seconds": 1,
                    "retry_base_seconds": 100,
                    "retry_max_seconds": 1,
                }
            },
            source="q.toml",
        )
    assert str(caught.value) == (
        "q.toml: queue.poll_min_seconds (50) is above queue.poll_max_seconds (1); "
        "queue.retry_base_seconds (100) is above queue.retry_max_seconds (1): make each "
        "minimum the smaller one"
    )
    # A maximum set below the other key's default says which value it collides with.
    with pytest.raises(ConfigError, match=re.escape("queue.poll_min_seconds (3) is above")):
        parse_config({"queue": {"poll_max_seconds": 2}})
    parse_config({"queue": {"poll_min_seconds": 2, "poll_max_seconds": 2}})  # equal is fine


def test_every_problem_of_a_file_is_reported_at_once_in_config_words() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "plan": "pro",
                "queu": {},
                "defaults": {"takes": 9},
                "queue": {"poll_batch": "fifty", "max_attempts": 2.5},
                "log": {"level": "loud"},
                "watch": {"on_duplicate": "never"},
                "mcp": {"allowed_hosts": "localhost"},
                "api": {"timeout_seconds": 0},
            },
            source="bad.toml",
        )
    lines = str(caught.value).splitlines()
    assert lines == [
        "bad.toml: unknown key 'plan': did you mean 'budget.plan' (under [budget])?",
        "bad.toml: unknown key 'queu': did you mean 'queue'?",
        "bad.toml: api.timeout_seconds: must be a number above 0 (got 0)",
        "bad.toml: defaults.takes: must be a whole number of at most 8 (got 9)",
        "bad.toml: watch.on_duplicate: must be one of 'skip', 'allow' (got 'never')",
        "bad.toml: queue.poll_batch: must be a whole number (got 'fifty')",
        "bad.toml: queue.max_attempts: must be a whole number (got 2.5)",  # every one
        'bad.toml: mcp.allowed_hosts: must be a list like ["a", "b"] (got \'localhost\')',
        "bad.toml: log.level: must be one of 'debug', 'info', 'warning', 'error', 'critical'"
        " (got 'loud')",
    ]


def test_pool_entries_and_folders_name_the_exact_key() -> None:
    servers = [{"url": "http://gpu1:8001"}, {"url": "gpu2", "max_inflight": 1}, {}]
    with pytest.raises(ConfigError) as caught:
        parse_config({"api": {"backend": "acestep", "servers": servers}})
    assert str(caught.value) == (
        "config: unknown key 'api.servers[1].max_inflight': did you mean "
        "'api.servers[1].max_in_flight'?"
    )
    with pytest.raises(ConfigError, match=r"api\.servers\[1\]\.url: server url 'gpu2' must"):
        parse_config({"api": {"backend": "acestep", "servers": [servers[0], {"url": "gpu2"}]}})
    with pytest.raises(ConfigError, match=r"api\.servers\[0\]: needs the key 'url'"):
        parse_config({"api": {"backend": "acestep", "servers": [{}]}})
    with pytest.raises(ConfigError, match=r"folders\.inbox: must be a path in quotes \(got 3\)"):
        parse_config({"folders": {"inbox": 3}})
    with pytest.raises(ConfigError, match=r"folders\.output: is empty"):
        parse_config({"folders": {"output": ""}})
    with pytest.raises(ConfigError, match=r"queue must be a table: write it as \[queue\]"):
        parse_config({"queue": 3})
    with pytest.raises(ConfigError, match=r"presets\.slow must be a table"):
        parse_config({"presets": {"slow": 70}})
    with pytest.raises(ConfigError, match=r"unknown key 'plugins\.settings'"):
        parse_config({"plugins": {"settings": 1}})  # where tables are kept is not a key


def test_folders_expand_home_and_variables_and_a_blank_state_is_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SONGS_HOME", str(tmp_path))
    config = parse_config({"folders": {"inbox": "$SONGS_HOME/in", "state": ""}})
    assert config.folders.inbox == tmp_path / "in"
    assert config.folders.state is None
    assert config.folders.output == Path.home() / "Music" / "Bygheart" / "output"


def test_a_config_round_trips_through_its_record() -> None:
    raw = {
        "api": {"backend": "acestep", "servers": [{"url": "http://gpu1:8001/"}]},
        "plugins": {"enabled": ["tags"], "tags": {"artist": "Me"}},
        "presets": {"slow": {"bpm": 70}},
        "budget": {"timezone": "Europe/Berlin"},
    }
    config = parse_config(raw)
    record = config.as_record()
    assert record["plugins"]["tags"] == {"artist": "Me"} and "settings" not in record["plugins"]
    assert record["api"]["servers"][0]["url"] == "http://gpu1:8001"
    assert parse_config(record) == config
    assert config.request_defaults("slow")["bpm"] == 70


def test_a_config_cannot_be_changed_behind_its_holder() -> None:
    config = parse_config({})
    with pytest.raises(AttributeError):
        config.queue.max_in_flight = 3  # type: ignore[misc]
    changed = config.queue.replaced(max_in_flight=3)
    assert changed.max_in_flight == 3 and config.queue.max_in_flight == 8


def test_acestep_backend_implies_self_hosted_and_its_default_url() -> None:
    config = parse_config({"api": {"backend": "acestep"}})
    assert config.plan == "self-hosted"
    assert config.api.effective_base_url() == "http://127.0.0.1:8001"


def test_key_lookup_order_and_shadowed_sources(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("bgh_from_file_123\n")
    key_file.chmod(0o600)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api-key").write_text("bgh_from_credential_456")
    config = parse_config({"api": {"api_key_file": str(key_file)}})
    env = {"BYGHEART_API_KEY": "bgh_from_env_789", "CREDENTIALS_DIRECTORY": str(creds)}
    found = find_api_key(config, env)
    assert found.value == "bgh_from_env_789"
    assert found.source == "environment variable BYGHEART_API_KEY"
    assert len(found.shadowed) == 2
    assert "bgh_from" not in repr(found)
    found = find_api_key(config, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert found.value == "bgh_from_credential_456"
    found = find_api_key(config, {})
    assert found.value == "bgh_from_file_123" and not found.warnings


def test_key_file_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("bgh_secret_key_1")
    key_file.chmod(0o644)
    found = find_api_key(parse_config({"api": {"api_key_file": str(key_file)}}), {})
    assert any("chmod 600" in w for w in found.warnings)


def test_state_folder_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd-state"))
    assert parse_config({}).state_dir == tmp_path / "systemd-state"
    config = parse_config({"folders": {"state": str(tmp_path / "mine")}})
    assert config.state_dir == tmp_path / "mine"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert "bygheartd" in str(parse_config({}).state_dir)


def test_config_check_reports_sources_and_paths_never_the_key(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "c.toml",
        {"folders": {"inbox": str(tmp_path / "in"), "state": str(tmp_path / "st")}},
    )
    env = {**os.environ, "BYGHEART_API_KEY": TEST_KEY}
    result = subprocess.run(
        [sys.executable, "-m", "bygheartd", "config", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "environment variable BYGHEART_API_KEY" in result.stdout
    assert str(tmp_path / "in") in result.stdout
    assert TEST_KEY not in result.stdout + result.stderr


def test_config_check_explains_an_invalid_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[queue]\npoll_batchh = 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "bygheartd", "--config", str(cfg), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "did you mean 'queue.poll_batch'" in result.stdout


def test_init_writes_a_starter_config_and_creates_the_folders(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    env.pop("BYGHEARTD_CONFIG", None)
    run = [sys.executable, "-m", "bygheartd", "init"]
    result = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    written = tmp_path / "cfg" / "bygheartd" / "config.toml"
    assert written.is_file()
    assert (tmp_path / "Music" / "Bygheart" / "inbox").is_dir()
    again = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 1 and "--force" in again.stdout


def test_key_sources_signature_changes_with_the_sources_and_never_holds_the_key(
    tmp_path: Path,
) -> None:
    from bygheartd.config import key_sources_signature

    key_file = tmp_path / "key"
    key_file.write_text("bgh_first_key_0001\n")
    config = parse_config({"api": {"api_key_file": str(key_file)}})
    env = {"BYGHEART_API_KEY": "bgh_env_key_0002"}
    before = key_sources_signature(config, env)
    assert key_sources_signature(config, env) == before  # nothing changed: nothing to read
    assert "bgh_first_key_0001" not in repr(before) and "bgh_env_key_0002" not in repr(before)
    stamp = key_file.stat().st_mtime_ns
    key_file.write_text("bgh_other_key_0003\n")  # same length, rewritten in place
    os.utime(key_file, ns=(stamp + 1_000_000, stamp + 1_000_000))
    assert key_sources_signature(config, env) != before
    assert key_sources_signature(config, {}) != key_sources_signature(config, env)
    key_file.unlink()
    assert key_sources_signature(config, env) != before
