"""Plugin discovery: first-party modules, entry points, `*.py` folders, and config secrets.

Nothing here imports a plugin yet: each candidate carries a loader that the host calls
inside its own guard, so one broken plugin cannot stop the others from loading.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bygheartd.hooks.errors import SecretError

ENTRY_POINT_GROUP = "bygheartd"
FIRST_PARTY_PACKAGE = "bygheartd_plugins"
LOCAL_MODULE_PREFIX = "bygheartd_plugins_local"


def resolve_secrets(
    table: Mapping[str, Any], *, where: str, found: list[str] | None = None
) -> dict[str, Any]:
    """Replace `{ env = "VAR" }` and `{ file = "path" }` values, recursively.

    Errors name the key and the variable or file, never a value. Resolved values are
    appended to `found` so that error texts can be scrubbed of them later.
    """
    resolved: dict[str, Any] = {}
    for key, value in table.items():
        here = f"{where}.{key}"
        if isinstance(value, Mapping) and set(value) == {"env"}:
            var = str(value["env"])
            if var not in os.environ:
                raise SecretError(f"{here}: environment variable {var} is not set")
            resolved[key] = os.environ[var]
        elif isinstance(value, Mapping) and set(value) == {"file"}:
            path = Path(str(value["file"])).expanduser()
            try:
                resolved[key] = path.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise SecretError(f"{here}: cannot read secret file {path}: {reason}") from None
        elif isinstance(value, Mapping):
            resolved[key] = resolve_secrets(value, where=here, found=found)
            continue
        else:
            resolved[key] = value
            continue
        if found is not None and resolved[key]:
            found.append(resolved[key])
    return resolved


@dataclass
class Candidate:
    name: str
    source: str
    version: str | None
    load: Callable[[], object]
    first_party: bool = False


def _bygheartd_version() -> str | None:
    try:
        return importlib.metadata.version("bygheartd")
    except importlib.metadata.PackageNotFoundError:
        return None


def first_party_candidates() -> list[Candidate]:
    try:
        package = importlib.import_module(FIRST_PARTY_PACKAGE)
    except ImportError:  # pragma: no cover - broken install
        return []
    version = _bygheartd_version()
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module_name = f"{FIRST_PARTY_PACKAGE}.{info.name}"
        found.append(
            Candidate(
                info.name,
                "first-party",
                version,
                functools.partial(importlib.import_module, module_name),
                first_party=True,
            )
        )
    return found


def entry_point_candidates() -> list[Candidate]:
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.name if dist is not None else "unknown"
        version = dist.version if dist is not None else None
        found.append(Candidate(ep.name, f"entry-point:{dist_name}", version, ep.load))
    return found


def _load_file(path: Path) -> ModuleType:
    module_name = f"{LOCAL_MODULE_PREFIX}.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def path_candidates(paths: Iterable[Path]) -> list[Candidate]:
    found = []
    for folder in paths:
        folder = Path(folder).expanduser()
        files = [folder] if folder.suffix == ".py" else sorted(folder.glob("*.py"))
        for file in files:
            if file.name.startswith(("_", ".")):
                continue
            found.append(
                Candidate(
                    file.stem,
                    f"path:{file}",
                    None,
                    functools.partial(_load_file, file),
                )
            )
    return found
