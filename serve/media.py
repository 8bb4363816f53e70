"""Media URLs to local files, within what the operator allows.

- ``data:`` URLs (base64) are always accepted, up to ``max_bytes`` decoded;
- local paths and ``file://`` URLs only inside a folder given with ``--allowed-media-dir``;
- ``http(s)://`` URLs only with ``--allow-remote-media``, with a size limit and a time limit;
- anything else is refused, naming what would be accepted.

Downloaded and inline media are written once to ``store_dir`` under their content hash, so a
client that resends the same file with every request (as stateless clients do) hits the
engine's decoded-file and feature caches instead of decoding it again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import os
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serve.errors import ApiError

MAX_MEDIA_BYTES = 64 * 1024**2
FETCH_TIMEOUT_S = 20.0
# What audio "format" names map to (OpenAI's input_audio sends the format, not a MIME type).
AUDIO_SUFFIXES = {"wav": ".wav", "mp3": ".mp3", "flac": ".flac", "ogg": ".ogg", "m4a": ".m4a", "aac": ".aac",
                  "opus": ".opus", "webm": ".webm"}


@dataclass
class MediaPolicy:
    """The operator's media rules (``launch.py serve`` options)."""

    allowed_dirs: tuple[Path, ...] = ()
    allow_remote: bool = False
    max_bytes: int = MAX_MEDIA_BYTES
    fetch_timeout_s: float = FETCH_TIMEOUT_S
    store_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "videollama-serve-media")


def resolve_url(url: str, policy: MediaPolicy) -> str:
    """A local file holding the media at ``url``; ``ApiError`` 400 (refused) or 413 (too large)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "data":
        mime, data = _parse_data_url(url)
        return store_bytes(_decode_base64(data, policy), suffix_for_mime(mime), policy)
    if scheme in ("http", "https"):
        return _fetch(url, policy)
    if scheme == "file":
        return local_path(urllib.parse.unquote(urllib.parse.urlsplit(url).path), policy)
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return local_path(url, policy)
    raise ApiError(400, f"media URL scheme {scheme!r} is not supported; send a data: URL (base64), a file "
                        "path inside an allowed folder, or an http(s) URL if the server allows remote media",
                   param="messages", code="unsupported_media_url")


def resolve_audio(data: str, fmt: str, policy: MediaPolicy) -> str:
    """OpenAI's ``input_audio``: base64 data with a format name."""
    suffix = AUDIO_SUFFIXES.get(fmt.lower().strip("."))
    if suffix is None:
        raise ApiError(400, f"input_audio format {fmt!r} is not supported; use one of "
                            f"{', '.join(sorted(AUDIO_SUFFIXES))}", param="messages", code="invalid_media")
    return store_bytes(_decode_base64(data, policy), suffix, policy)


def local_path(path: str, policy: MediaPolicy) -> str:
    if not policy.allowed_dirs:
        raise ApiError(400, "local media paths are off on this server; send the file as a data: URL, or ask "
                            "the operator to allow a folder with --allowed-media-dir", param="messages",
                       code="media_path_not_allowed")
    real = Path(os.path.realpath(path))  # symlinks resolved: a link may not lead out of the folders
    if not any(real.is_relative_to(Path(os.path.realpath(d))) for d in policy.allowed_dirs):
        raise ApiError(400, f"media path {path!r} is outside the folders this server allows "
                            f"({', '.join(str(d) for d in policy.allowed_dirs)})", param="messages",
                       code="media_path_not_allowed")
    if not real.is_file():
        raise ApiError(400, f"media file not found: {path!r}", param="messages", code="invalid_media")
    size = real.stat().st_size
    if size > policy.max_bytes:
        raise _too_large(size, policy)
    return str(real)


def store_bytes(data: bytes, suffix: str, policy: MediaPolicy) -> str:
    """Write ``data`` under its content hash (once) and return the path."""
    policy.store_dir.mkdir(parents=True, exist_ok=True)
    path = policy.store_dir / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a concurrent request never sees half a file
    return str(path)


def suffix_for_mime(mime: str) -> str:
    """A file suffix for a MIME type (the loader checks the content; the suffix is a hint)."""
    return mimetypes.guess_extension(mime or "") or ".bin"


def _parse_data_url(url: str) -> tuple[str, str]:
    header, sep, data = url[len("data:"):].partition(",")
    if not sep or not header.endswith(";base64"):
        raise ApiError(400, "a data: URL must be base64 encoded: data:<mime type>;base64,<data>",
                       param="messages", code="invalid_media")
    return header[: -len(";base64")], data


def _decode_base64(data: str, policy: MediaPolicy) -> bytes:
    if len(data) * 3 // 4 > policy.max_bytes + 3:  # refuse before decoding
        raise _too_large(len(data) * 3 // 4, policy)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ApiError(400, f"the media's base64 data does not decode ({err})", param="messages",
                       code="invalid_media") from None
    if not raw:
        raise ApiError(400, "the media data is empty", param="messages", code="invalid_media")
    if len(raw) > policy.max_bytes:  # the estimate above allows for up to 3 bytes of padding
        raise _too_large(len(raw), policy)
    return raw


def _fetch(url: str, policy: MediaPolicy) -> str:
    if not policy.allow_remote:
        raise ApiError(400, "remote media URLs are off on this server; send the file as a data: URL, or ask the "
                            "operator to start it with --allow-remote-media", param="messages",
                       code="remote_media_not_allowed")
    deadline = time.monotonic() + policy.fetch_timeout_s
    chunks, size = [], 0
    try:
        with httpx.stream("GET", url, timeout=policy.fetch_timeout_s, follow_redirects=True) as response:
            if response.status_code != 200:
                raise ApiError(400, f"fetching {url} gave HTTP {response.status_code}", param="messages",
                               code="invalid_media")
            declared = int(response.headers.get("content-length") or 0)
            if declared > policy.max_bytes:
                raise _too_large(declared, policy)
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > policy.max_bytes:
                    raise _too_large(size, policy)
                if time.monotonic() > deadline:
                    raise httpx.TimeoutException("total time limit")
                chunks.append(chunk)
            mime = response.headers.get("content-type", "").split(";")[0].strip()
    except httpx.TimeoutException:
        raise ApiError(400, f"fetching {url} took longer than {policy.fetch_timeout_s:g} s", param="messages",
                       code="media_fetch_timeout") from None
    except httpx.HTTPError as err:
        raise ApiError(400, f"could not fetch {url}: {err}", param="messages", code="invalid_media") from None
    suffix = Path(urllib.parse.urlsplit(url).path).suffix or suffix_for_mime(mime)
    return store_bytes(b"".join(chunks), suffix, policy)


def _too_large(size: int, policy: MediaPolicy) -> ApiError:
    return ApiError(413, f"the media is {size / 2**20:.1f} MiB; this server accepts at most "
                         f"{policy.max_bytes / 2**20:.1f} MiB (--max-media-mb)", param="messages",
                    code="media_too_large")
