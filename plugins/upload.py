"""First-party plugin `upload`: copies finished songs into a music library and/or S3.

Paths come from a template; an existing file is never overwritten (a numbered suffix is
added), and local copies appear atomically. S3 needs the `s3` extra (boto3).
"""

from __future__ import annotations

import os
import re
import shutil
import string
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Any

from bygheartd import hookimpl
from bygheartd.jobs import Job

DEFAULT_TEMPLATE = "{artist}/{album}/{title}{ext}"
DEFAULTS: dict[str, Any] = {
    "library": "",
    "template": DEFAULT_TEMPLATE,
    "artist": "",  # "": the file's own artist tag (what `tags` wrote), else FALLBACK
    "album": "",
    "bucket": "",
    "prefix": "",
    "endpoint_url": "",
    "region": "",
    "access_key": "",
    "secret_key": "",
}
FALLBACK = {"artist": "Bygheart", "album": "bygheartd"}  # the tags plugin's defaults too
FIELDS = ("title", "slug", "artist", "album", "model", "job_id", "date", "year", "ext", "take")
_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]+')


def slugify(text: str) -> str:
    """ASCII `[a-z0-9-]`, at most 80 characters (the output folder's naming rule)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    return slug[:80].rstrip("-") or "song"


def _safe(text: str) -> str:
    """One path component: no separators, no control characters, never `.` or `..`."""
    cleaned = _UNSAFE.sub("_", text).strip().strip(".")
    return cleaned[:150] or "_"


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **config}
    if not settings["library"] and not settings["bucket"]:
        raise ValueError("set 'library' (a folder) or 'bucket' (S3), or both")
    used = {name for _, name, _, _ in string.Formatter().parse(settings["template"]) if name}
    if used - set(FIELDS):
        raise ValueError(
            f"template uses unknown field(s) {sorted(used - set(FIELDS))}; "
            f"fields: {', '.join(FIELDS)}"
        )
    return settings


def relative_path(job: Job, path: Path, take: int, settings: dict[str, Any]) -> PurePosixPath:
    """Where one file goes, relative to the library (or the bucket prefix)."""
    when = job.completed_at or job.created_at
    values = {
        "title": job.title,
        "slug": job.base_name or slugify(job.title),
        "artist": str(settings["artist"]) or _tag(path, "artist"),
        "album": str(settings["album"]) or _tag(path, "album"),
        "model": job.model or "default",
        "job_id": job.id,
        "date": when.strftime("%Y-%m-%d"),
        "year": when.strftime("%Y"),
        "take": str(take),
    }
    safe: dict[str, str] = {key: _safe(value) for key, value in values.items()}
    safe["ext"] = path.suffix.lower()
    rendered = str(settings["template"]).format(**safe)
    parts = [p for p in rendered.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"template {settings['template']!r} gives an empty path")
    return PurePosixPath(*parts)


def _tag(path: Path, name: str) -> str:
    """The file's own tag, so the library agrees with what `tags` wrote into the file."""
    import mutagen

    try:
        audio = mutagen.File(str(path), easy=True)
        values = audio.get(name) if audio is not None and audio.tags is not None else None
    except Exception:  # an unreadable or untagged file: the default names
        values = None
    return str(values[0]) if values else FALLBACK[name]


def _numbered(relative: PurePosixPath, n: int) -> PurePosixPath:
    return relative if n == 1 else relative.with_name(f"{relative.stem}-{n}{relative.suffix}")


def copy_into_library(source: Path, library: Path, relative: PurePosixPath) -> Path:
    """Copy atomically, never overwriting: a clash gets `-2`, `-3`, ... before the suffix."""
    target_dir = library.joinpath(*relative.parent.parts)
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{relative.stem}.", suffix=".part", dir=target_dir)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(source, tmp)  # mkstemp made it 0600: the library's players need more
        for n in range(1, 10_000):
            target = library.joinpath(*_numbered(relative, n).parts)
            try:
                os.link(tmp, target)  # atomic, and fails instead of replacing
            except FileExistsError:
                continue
            except OSError:  # no hard links here (some network shares): check, then rename
                if target.exists():
                    continue
                os.replace(tmp, target)
            return target
        raise FileExistsError(f"no free name for {relative} in {library}")
    finally:
        tmp.unlink(missing_ok=True)


def _s3_client(settings: dict[str, Any]) -> Any:
    try:
        import boto3
    except ImportError:
        raise ImportError("S3 upload needs boto3: pip install 'bygheartd[s3]'") from None
    options: dict[str, Any] = {}
    if settings["endpoint_url"]:
        options["endpoint_url"] = settings["endpoint_url"]
    if settings["region"]:
        options["region_name"] = settings["region"]
    if settings["access_key"] or settings["secret_key"]:
        options["aws_access_key_id"] = settings["access_key"]
        options["aws_secret_access_key"] = settings["secret_key"]
    return boto3.session.Session().client("s3", **options)


def _s3_exists(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def upload_to_s3(client: Any, source: Path, bucket: str, prefix: str, rel: PurePosixPath) -> str:
    """Upload under the first free key; returns `s3://bucket/key`."""
    base = prefix.strip("/")
    for n in range(1, 10_000):
        key = "/".join(p for p in (base, str(_numbered(rel, n))) if p)
        if not _s3_exists(client, bucket, key):
            client.upload_file(str(source), bucket, key)
            return f"s3://{bucket}/{key}"
    raise FileExistsError(f"no free key for {rel} in s3://{bucket}/{base}")


@hookimpl
def on_complete(job: Job, files: list[Path], config: dict[str, Any]) -> dict[str, Any]:
    """Copy each file to the library and/or bucket; the destinations go to the sidecar."""
    settings = _settings(config)
    library = Path(str(settings["library"])).expanduser() if settings["library"] else None
    client = _s3_client(settings) if settings["bucket"] else None
    copied: list[str] = []
    uploaded: list[str] = []
    for take, path in enumerate(files, start=1):
        relative = relative_path(job, path, take, settings)
        if library is not None:
            copied.append(str(copy_into_library(path, library, relative)))
        if client is not None:
            bucket, prefix = str(settings["bucket"]), str(settings["prefix"])
            uploaded.append(upload_to_s3(client, path, bucket, prefix, relative))
    sidecar: dict[str, Any] = {}
    if copied:
        sidecar["library"] = copied
    if uploaded:
        sidecar["s3"] = uploaded
    return {"files": [], "sidecar": sidecar}
