"""The shipped unit files: `systemd-analyze verify` finds nothing to say, the system unit's
exposure score stays low, and the lines the daemon relies on are there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SYSTEM_UNIT = UNITS / "bygheartd.service"
USER_UNIT = UNITS / "bygheartd-user.service"
MAX_SYSTEM_EXPOSURE = 2.0
# A user manager cannot build the file-system sandbox everywhere (see the unit's comment).
MAX_USER_EXPOSURE = 7.0

EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def systemd_analyze() -> str:
    """The tool's path; in CI its absence is a failure, elsewhere a skip."""
    found = shutil.which("systemd-analyze") or (
        "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
    )
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("systemd-analyze is missing in CI: apt-get install -y systemd")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


def runnable_copy(unit: Path, folder: Path) -> Path:
    """The unit with ExecStart pointing at a program that exists on this machine, since
    verify fails when the real one (not installed here) is missing."""
    text = unit.read_text()
    patched, count = re.subn(r"(?m)^ExecStart=\S+", "ExecStart=/bin/true", text)
    assert count == 1
    copy = folder / unit.name
    copy.write_text(patched)
    return copy


def run(args: list[str], runtime_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="", LC_ALL="C.UTF-8")
    # --user needs a runtime folder even offline; as root in CI there is none.
    env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rt")
    folder.chmod(0o700)
    return folder


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """Every Key=value of a unit file (keys may repeat), continuation lines not used."""
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def exposure(output: str) -> float:
    match = EXPOSURE.search(output)
    assert match is not None, output
    return float(match.group(1))


def test_system_unit_passes_verify_without_a_word(tmp_path: Path, runtime_dir: Path) -> None:
    tool = systemd_analyze()
    result = run([tool, "verify", str(runnable_copy(SYSTEM_UNIT, tmp_path))], runtime_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_user_unit_passes_verify_without_a_word(tmp_path: Path, runtime_dir: Path) -> None:
    tool = systemd_analyze()
    copy = runnable_copy(USER_UNIT, tmp_path)
    result = run([tool, "--user", "verify", str(copy)], runtime_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_system_unit_exposure_is_at_most_two(tmp_path: Path, runtime_dir: Path) -> None:
    tool = systemd_analyze()
    copy = runnable_copy(SYSTEM_UNIT, tmp_path)
    result = run([tool, "security", "--offline=yes", str(copy)], runtime_dir)
    assert result.returncode == 0, result.stderr
    assert exposure(result.stdout) <= MAX_SYSTEM_EXPOSURE, result.stdout


def test_user_unit_exposure_stays_below_its_looser_bound(tmp_path: Path, runtime_dir: Path) -> None:
    tool = systemd_analyze()
    copy = runnable_copy(USER_UNIT, tmp_path)
    result = run([tool, "--user", "security", "--offline=yes", str(copy)], runtime_dir)
    assert result.returncode == 0, result.stderr
    assert exposure(result.stdout) <= MAX_USER_EXPOSURE, result.stdout


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_units_speak_sd_notify_with_a_watchdog(unit: Path) -> None:
    settings = unit_settings(unit)
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["Restart"] == ["on-failure"]
    assert int(settings["WatchdogSec"][0]) >= 10
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    program, command = settings["ExecStart"][0].split()[:2]
    assert program.endswith("/bin/bygheartd")
    assert command == "run"


def test_system_unit_hands_the_key_over_as_a_credential() -> None:
    settings = unit_settings(SYSTEM_UNIT)
    assert settings["LoadCredential"] == ["api-key:/etc/bygheartd/api-key"]
    assert not any("KEY" in value for value in settings.get("Environment", []))


def test_system_unit_can_reach_the_hosted_api() -> None:
    settings = unit_settings(SYSTEM_UNIT)
    assert "IPAddressDeny" not in settings
    assert "PrivateNetwork" not in settings
    assert "AF_INET" in settings["RestrictAddressFamilies"][0].split()


# Run in a child under the kernel's form of MemoryDenyWriteExecute= (Linux 6.3+), so that a
# library upgrade that starts needing W+X memory shows up here, not as a crash in production.
MDWE_PROBE = """
import ctypes, sys, tempfile
from pathlib import Path
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE
    sys.exit(3)
import numpy as np, soundfile as sf, sqlite3, mutagen, pyloudnorm
folder = Path(tempfile.mkdtemp())
tone = 0.2 * np.sin(np.linspace(0, 880 * np.pi, 48000)).repeat(2).reshape(-1, 2)
for fmt in ("MP3", "FLAC", "WAV"):
    path = folder / f"take.{fmt.lower()}"
    sf.write(path, tone, 48000, format=fmt)
    data, rate = sf.read(str(path), always_2d=True)
    assert mutagen.File(path) is not None
pyloudnorm.Meter(rate).integrated_loudness(data)
sqlite3.connect(":memory:").execute("select 1")
"""


def test_audio_stack_works_without_writable_executable_memory() -> None:
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, timeout=60
    )
    if result.returncode == 3:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stderr
