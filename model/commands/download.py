"""`launch.py download NAME`: fetch the released Video-LLaMA files (needs internet).

The Video-LLaMA-2 repositories on Hugging Face hold the VL/AL adapters, ``imagebind_huge.pth``
and the LLaMA-2-chat folder; the two BLIP-2 files (EVA ViT-g and the Q-Former) come from the
LAVIS storage bucket, as the original code fetched them. Nothing else in this project ever
downloads. After downloading, the command prints the ``launch.py convert`` line to run.
"""

from __future__ import annotations

import argparse
import shutil
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


def fetch_url(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` via a ``.part`` file, so an interrupted fetch leaves no bad file."""
    if dest.is_file():
        return dest
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url) as response, part.open("wb") as out:
        shutil.copyfileobj(response, out, length=1 << 24)
    part.rename(dest)
    return dest


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
