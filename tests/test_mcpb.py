"""One-click install for assistants: the MCP Bundle's manifest lists the server's real tools
and settings, its launcher starts `bygheartd mcp` for the real MCP client, the registry's
`server.json` agrees with the package, and a wheel built from this tree serves MCP from a
fresh virtual environment. (`npx @anthropic-ai/mcpb validate` needs the npm registry, which
tests never reach: `make mcpb` runs it.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, TEST_KEY, MakeConfig
from mcp import Client, StdioServerParameters
from mcp.types import TextResourceContents

from bygheartd.mcp.server import build_server
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator

pytestmark = pytest.mark.anyio

MANIFEST = REPO / "mcpb" / "manifest.json"
LAUNCHER = REPO / "mcpb" / "server" / "bygheartd-mcp"


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def project_version() -> str:
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    version: str = data["project"]["version"]
    return version


@pytest.fixture
async def idle_runtime(make_config: MakeConfig) -> AsyncIterator[Runtime]:
    async with Runtime(make_config(None), role=EngineRole.MCP, engine=False) as rt:
        yield rt


async def test_the_manifest_lists_the_servers_real_tools_and_prompts(
    idle_runtime: Runtime,
) -> None:
    manifest = load(MANIFEST)
    async with Client(build_server(idle_runtime.service)) as client:
        tools = (await client.list_tools()).tools
        prompts = (await client.list_prompts()).prompts
    assert [t["name"] for t in manifest["tools"]] == [t.name for t in tools]
    assert all(t["description"].strip() for t in manifest["tools"])
    assert [p["name"] for p in manifest["prompts"]] == [p.name for p in prompts]
    declared = {p.name: [a.name for a in p.arguments or []] for p in prompts}
    assert {p["name"]: p["arguments"] for p in manifest["prompts"]} == declared


def test_the_manifest_starts_bygheartd_mcp_with_the_key_as_a_secret() -> None:
    manifest = load(MANIFEST)
    assert manifest["manifest_version"] == "0.4"  # the current MCPB manifest version
    assert manifest["version"] == project_version()
    server = manifest["server"]
    assert server["type"] == "binary" and server["entry_point"] == "server/bygheartd-mcp"
    assert (REPO / "mcpb" / server["entry_point"]).is_file()
    assert os.access(LAUNCHER, os.X_OK)
    config = server["mcp_config"]
    assert config["command"] == "${__dirname}/server/bygheartd-mcp"
    assert config["env"]["BYGHEART_API_KEY"] == "${user_config.api_key}"
    key = manifest["user_config"]["api_key"]
    assert key["sensitive"] is True and key["type"] == "string"
    for name, option in manifest["user_config"].items():
        assert option["title"] and option["description"], name
        assert f"${{user_config.{name}}}" in config["env"].values(), name
    assert 'exec "$candidate" mcp' in LAUNCHER.read_text(encoding="utf-8")


def test_server_json_describes_the_pypi_package() -> None:
    server = load(REPO / "server.json")
    version = project_version()
    assert server["$schema"].endswith("/server.schema.json")
    assert re.fullmatch(r"io\.github\.[A-Za-z0-9-]+/bygheartd", server["name"])
    assert server["version"] == version
    assert len(server["description"]) <= 100  # the registry refuses a longer description
    (package,) = server["packages"]
    assert (package["registryType"], package["identifier"]) == ("pypi", "bygheartd")
    assert package["version"] == version and package["transport"] == {"type": "stdio"}
    assert package["packageArguments"] == [{"type": "positional", "value": "mcp"}]
    secrets = {v["name"]: v["isSecret"] for v in package["environmentVariables"]}
    assert secrets["BYGHEART_API_KEY"] is True
    # The registry checks PyPI ownership with this marker in the package's README.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"<!-- mcp-name: {server['name']} -->" in readme


def stdio_env(config_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "BYGHEART_API_KEY": TEST_KEY,
        "BYGHEARTD_CONFIG": str(config_path),
        "BYGHEARTD_LOAD_PLUGINS": "",
        "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"],
        "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"],
        **extra,
    }


async def list_over_stdio(params: StdioServerParameters) -> tuple[list[str], str]:
    async with Client(params) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        guide = (await client.read_resource("bygheart://guide")).contents[0]
        # The song view ships in the package (built once, never at install time).
        view = (await client.read_resource("ui://bygheartd/song.html")).contents[0]
    assert isinstance(guide, TextResourceContents)
    assert isinstance(view, TextResourceContents) and "<script>" in view.text
    assert view.mime_type == "text/html;profile=mcp-app"
    return tools, guide.text


EXPECTED_TOOLS = [t["name"] for t in load(MANIFEST)["tools"]]


@pytest.mark.slow
async def test_the_launcher_runs_the_configured_bygheartd(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator)
    assert config.source_path is not None
    program = Path(sys.executable).parent / "bygheartd"
    env = stdio_env(config.source_path, BYGHEARTD_BIN=str(program), HOME=str(tmp_path))
    tools, guide = await list_over_stdio(StdioServerParameters(command=str(LAUNCHER), env=env))
    assert tools == EXPECTED_TOOLS and "[Chorus]" in guide


def test_the_launcher_says_how_to_install_bygheartd_when_it_finds_none(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run(
        [str(LAUNCHER)],
        env={"PATH": f"{empty}:/usr/bin:/bin", "HOME": str(tmp_path), "BYGHEARTD_BIN": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if shutil.which("bygheartd", path="/usr/bin:/bin") or shutil.which("uvx", path="/usr/bin"):
        pytest.skip("this machine has bygheartd or uvx installed system-wide")
    assert result.returncode == 127 and result.stdout == ""
    assert "pipx install bygheartd" in result.stderr


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of this tree, built offline from a copy (as pip, pipx and uvx would)."""
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".*_cache",
            "tests",
            "node_modules",
        ),
    )
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("bygheartd-*.whl")
    return wheel


def _setuptools_can_build() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    not _setuptools_can_build(),
    reason="building the wheel offline needs setuptools>=77 here (the dev extra has it)",
)
async def test_a_wheel_built_from_this_tree_serves_mcp_from_a_fresh_venv(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """What pip, pipx and uvx install: the wheel, in a virtual environment of its own.
    Its dependencies come from this environment (no network: the index is never asked)."""
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # This environment's packages as a fallback for the dependencies (a .pth adds the
    # folder without running its own .pth files, so the editable checkout stays out).
    Path(site, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    where = subprocess.run(
        [str(python), "-c", "import bygheartd; print(bygheartd.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # not the checkout: `-c` puts the working folder first on sys.path
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where

    config = make_config(simulator)
    assert config.source_path is not None
    params = StdioServerParameters(
        command=str(venv / "bin" / "bygheartd"),
        args=["mcp"],
        env=stdio_env(config.source_path),
        cwd=tmp_path,
    )
    tools, guide = await list_over_stdio(params)
    assert tools == EXPECTED_TOOLS and "[Chorus]" in guide


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    not _setuptools_can_build(),
    reason="building the wheel offline needs setuptools>=77 here (the dev extra has it)",
)
async def test_the_bundle_carries_bygheartd_and_runs_it_with_uvx_or_a_venv_of_its_own(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """What `make mcpb` packs: the launcher with the wheel beside it, on a machine where
    bygheartd was never installed. With uv, the launcher hands uvx the bundled wheel; without
    it, it installs the wheel into a virtual environment of its own, once."""
    bundle = tmp_path / "bundle"
    shutil.copytree(REPO / "mcpb", bundle)
    wheel = shutil.copy(build_wheel(tmp_path), bundle / "server")
    launcher = bundle / "server" / "bygheartd-mcp"
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    python_dir = tmp_path / "python"  # the interpreter of this environment, nothing else
    python_dir.mkdir()
    (python_dir / "python3").symlink_to(getattr(sys, "_base_executable", sys.executable))
    path = f"{python_dir}:/usr/bin:/bin"
    if shutil.which("bygheartd", path=path) or shutil.which("uvx", path=path):
        pytest.skip("this machine has bygheartd or uvx installed system-wide")
    config = make_config(simulator)
    assert config.source_path is not None

    # uv is there (a stand-in that records its arguments, then runs bygheartd mcp).
    record = tmp_path / "uvx-args"
    uvx = home / ".local" / "bin" / "uvx"
    program = Path(sys.executable).parent / "bygheartd"
    uvx.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\nexec "{program}" mcp\n')
    uvx.chmod(0o755)
    env = stdio_env(config.source_path, HOME=str(home), PATH=path)
    tools, _ = await list_over_stdio(StdioServerParameters(command=str(launcher), env=env))
    assert "generate_song" in tools  # (the tool list itself: the tests above)
    assert record.read_text().split() == ["--from", str(wheel), "bygheartd", "mcp"]

    # No uv: the launcher makes a venv of its own. Offline here: pip takes nothing from an
    # index, and the dependencies come from this environment through PYTHONPATH.
    uvx.unlink()
    data = tmp_path / "data"
    env |= {
        "XDG_DATA_HOME": str(data),
        "PIP_NO_INDEX": "1",
        "PIP_NO_DEPS": "1",
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
    }
    tools, _ = await list_over_stdio(StdioServerParameters(command=str(launcher), env=env))
    assert "generate_song" in tools
    (venv,) = (data / "bygheartd").iterdir()
    assert venv.name == "mcpb-" + Path(wheel).stem and (venv / ".complete").is_file()
    assert (venv / "bin" / "bygheartd").is_file()
    # The next start uses it as it is.
    stamp = (venv / ".complete").stat().st_mtime_ns
    tools, _ = await list_over_stdio(StdioServerParameters(command=str(launcher), env=env))
    assert "generate_song" in tools and (venv / ".complete").stat().st_mtime_ns == stamp


def test_the_manifest_passes_the_official_validator() -> None:
    """`mcpb validate` (the MCPB CLI from the npm registry, installed by `make test`'s
    `node-tools` step into build/node-tools; the test itself reaches no registry)."""
    tools = REPO / "build" / "node-tools" / "node_modules" / ".bin"
    if not (tools / "mcpb").exists():
        pytest.skip("the MCPB CLI is not installed here: `make node-tools` installs it")
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(tools / "mcpb"), "validate", str(MANIFEST)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passes" in done.stdout, done.stdout
