"""`launch.py download NAME`: fetch the released Video-LLaMA files (needs internet).

The Video-LLaMA-2 repositories on Hugging Face hold the VL/AL adapters, ``imagebind_huge.pth``
and the LLaMA-2-chat folder; the two BLIP-2 files (EVA ViT-g and the Q-Former) come from the
LAVIS storage bucket, as the original code fetched them. Nothing else in this project ever
downloads. After downloading, the command prints the ``launch.py convert`` line to run.

Hub files go through ``huggingface_hub.snapshot_download``: it resumes, checks each file
against the Hub's hash and shows progress. The plain URLs (LAVIS, Meta's ImageBind) have no
such client; ``fetch_url`` gives them a read timeout, retries with back-off, resumes a
``.part`` file with an HTTP range request, checks the size the server announced (and the
MD5 that Google Cloud Storage sends in ``x-goog-hash``) and shows a progress bar.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

LAVIS = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/"
IMAGEBIND_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
BLIP2_FILES = {"eva": "eva_vit_g.pth", "blip2": "blip2_pretrained_flant5xxl.pth"}


@dataclass(frozen=True)
class Release:
    repo: str
    vl: str
    al: str | None = None
    imagebind: str | None = None
    llm_dir: str | None = None  # None: the LLM is not in the repo (Vicuna v0 must be built from deltas)
    preset: str | None = None  # architecture preset when it differs from the release name


RELEASES: dict[str, Release] = {
    "video-llama-2-7b": Release("DAMO-NLP-SG/Video-LLaMA-2-7B-Finetuned", "VL_LLaMA_2_7B_Finetuned.pth",
                                "AL_LLaMA_2_7B_Finetuned.pth", "imagebind_huge.pth", "llama-2-7b-chat-hf"),
    "video-llama-2-13b": Release("DAMO-NLP-SG/Video-LLaMA-2-13B-Finetuned", "VL_LLaMA_2_13B_Finetuned.pth",
                                 "AL_LLaMA_2_13B_Finetuned.pth", "imagebind_huge.pth", "llama-2-13b-chat-hf"),
    "video-llama-vicuna-7b": Release("DAMO-NLP-SG/Video-LLaMA-Series", "finetune-vicuna7b-v2.pth",
                                     "finetune_vicuna7b_audiobranch.pth"),
    "video-llama-vicuna-13b": Release("DAMO-NLP-SG/Video-LLaMA-Series", "finetune-vicuna13b-v2.pth"),
    # Stage-1 (caption pre-training) weights, for comparing stages side by side.
    "video-llama-2-7b-pretrained": Release(
        "DAMO-NLP-SG/Video-LLaMA-2-7B-Pretrained", "VL_LLaMA_2_7B_Pretrained.pth", "AL_LLaMA_2_7B_Pretrained.pth",
        "imagebind_huge.pth", "llama-2-7b-chat-hf", preset="video-llama-2-7b"),
    "video-llama-2-13b-pretrained": Release(
        "DAMO-NLP-SG/Video-LLaMA-2-13B-Pretrained", "VL_LLaMA_2_13B_Pretrained.pth", "AL_LLaMA_2_13B_Pretrained.pth",
        "imagebind_huge.pth", "llama-2-13b-chat-hf", preset="video-llama-2-13b"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(RELEASES), help="which release to fetch")
    parser.add_argument("--dir", type=Path, default=Path("checkpoints/official"), help="where to put the files")
    parser.add_argument("--no-audio", action="store_true", help="skip the audio branch (saves ~5 GB)")


TIMEOUT_S = 60.0  # per connect and per read: a stalled server fails the attempt instead of hanging
RETRIES = 5  # further attempts after a failed one, each resuming where the file stopped
BACKOFF_S = 2.0  # wait before retry k: BACKOFF_S * 2**k


class DownloadError(OSError):
    """A plain-URL download failed for good; the message names the URL and what to do."""


@dataclass
class _Expected:
    size: int | None = None  # the whole file's bytes, from Content-Length or Content-Range
    md5: str | None = None  # base64 MD5 of the whole file (x-goog-hash), when the server sends it


def fetch_url(url: str, dest: Path, retries: int = RETRIES, timeout: float = TIMEOUT_S,
              backoff: float = BACKOFF_S) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming the part after a failure
    (this run's or an earlier one's), and rename it only once it is complete and checked."""
    if dest.is_file():
        return dest
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            expected = _fetch_into(url, part, timeout)
            break
        except urllib.error.HTTPError as err:
            if err.code < 500 and err.code not in (408, 429):  # refused for good: retrying will not help
                raise DownloadError(f"{url}: the server answered {err.code} {err.reason}; check the URL") from None
            failure: Exception = err
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets, short reads
            failure = err
        if attempt == retries:
            raise DownloadError(f"{url}: {failure} after {retries + 1} attempts; run the command again to resume "
                                f"from the {part.stat().st_size if part.exists() else 0} bytes in {part}") from None
        print(f"download of {dest.name} interrupted ({failure}); retrying in {backoff * 2**attempt:g} s")
        time.sleep(backoff * 2**attempt)
    _check(part, expected, url)
    part.rename(dest)
    return dest


def _fetch_into(url: str, part: Path, timeout: float) -> _Expected:
    """One attempt: append the rest of ``url`` to ``part`` (all of it when the server ignores ranges)."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing after ``have``: the part is already whole
            return _Expected()
        raise
    with response:
        if response.status != 206:
            have = 0  # a full answer: start the part again
        expected = _expected(response, have)
        with part.open("ab" if have else "wb") as out, \
                tqdm(total=expected.size, initial=have, unit="B", unit_scale=True, desc=part.name[:-5]) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if expected.size is not None and size < expected.size:  # the connection ended early: retry the rest
        raise http.client.IncompleteRead(b"", expected.size - size)
    return expected


def _expected(response, have: int) -> _Expected:
    total = None
    if response.status == 206:  # Content-Range: bytes first-last/total
        total_text = (response.headers.get("Content-Range") or "").rpartition("/")[2]
        total = int(total_text) if total_text.isdigit() else None
    elif response.headers.get("Content-Length", "").isdigit():
        total = int(response.headers["Content-Length"])
    md5 = None
    for item in (response.headers.get("x-goog-hash") or "").split(","):
        name, _, value = item.strip().partition("=")
        if name == "md5":
            md5 = value
    return _Expected(size=total, md5=md5)


def _check(part: Path, expected: _Expected, url: str) -> None:
    size = part.stat().st_size
    if expected.size is not None and size != expected.size:
        raise DownloadError(f"{url}: got {size} bytes of {expected.size}; run the command again to resume")
    if expected.md5 is not None:
        digest = hashlib.md5(usedforsecurity=False)
        with part.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
        if base64.b64encode(digest.digest()).decode() != expected.md5:
            part.unlink()
            raise DownloadError(f"{url}: the file's MD5 does not match the server's; it was deleted, run the "
                                "command again")


def snapshot(repo: str, patterns: list[str], dest: Path) -> Path:
    from huggingface_hub import snapshot_download  # imported here: only this command needs it

    return Path(snapshot_download(repo_id=repo, allow_patterns=patterns, local_dir=dest))


def main(args: argparse.Namespace) -> int:
    release = RELEASES[args.name]
    audio = release.al is not None and not args.no_audio
    patterns = [release.vl]
    if audio:
        patterns += [release.al] + ([release.imagebind] if release.imagebind else [])
    if release.llm_dir:
        patterns.append(f"{release.llm_dir}/*")
    repo_dir = snapshot(release.repo, patterns, args.dir / release.repo.split("/")[-1])
    blip2 = {key: fetch_url(LAVIS + name, args.dir / name) for key, name in BLIP2_FILES.items()}

    llm = repo_dir / release.llm_dir if release.llm_dir else Path("PATH/TO/vicuna-v0-hf")
    parts = [f"python launch.py convert --preset {release.preset or args.name}", f"--vl {repo_dir / release.vl}"]
    if audio:
        if release.imagebind:
            imagebind = repo_dir / release.imagebind
        else:  # the Series repo does not carry it: fetch Meta's release
            imagebind = fetch_url(IMAGEBIND_URL, args.dir / "imagebind_huge.pth")
        parts += [f"--al {repo_dir / release.al}", f"--imagebind {imagebind}"]
    parts += [f"--eva {blip2['eva']}", f"--blip2 {blip2['blip2']}", f"--llm {llm}",
              f"--out checkpoints/{args.name}"]
    if not release.llm_dir:
        print("note: this release has no LLM; build Vicuna v0 from its delta weights (a Hugging Face folder)")
    print("downloaded. Now run:\n  " + " \\\n    ".join(parts))
    return 0
