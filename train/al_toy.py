"""The paper's audio-branch training path at toy-world scale (``--set audio_from=vision``).

Video-LLaMA never trains its audio branch on audio (``train/al_visual.py``, reference section
8.1): frames go through ImageBind's *vision* encoder, whose embeddings share a space with its
audio encoder, and the audio Q-Former and projection learn from those; at inference they read
audio clip embeddings. The toy world has no ImageBind, so this module makes a small one:

* stage 0 (``audio_from="vision"``) also trains an ``ImageTower``, a small conv net from one
  frame into the audio encoder's embedding space, ImageBind-style: InfoNCE between frames and
  audio clips, a frame and an audio clip of the same scene being positives. The audio side is
  **detached** (its embeddings are targets, computed without gradients): ImageBind binds each
  new modality to a space that does not move for it, and the audio encoder that inference reads
  then gets exactly the gradients it gets without the switch (no clipping, no dropout, the same
  batches), so the two arms of the ablation share it up to float rounding. Each frame is paired
  with the audio clip whose window centre is nearest its time.
* stages 1 and 2 (``audio_from="vision"``) feed the audio branch the tower's embeddings of the
  frames nearest each audio window's centre, (N, C, E) like the audio clip embeddings it reads
  at inference: the toy audio position embedding has C = ``audio.num_clips`` rows (4) for 8
  sampled frames, as the paper's has 8 rows for 8 frames, and position k then means the same
  stretch of time in training and at inference. The video branch is unchanged.
* the audio branch learns from what the paper had, the video branch's texts: in stage 1 a video
  (visual) caption of the clip replaces the sound caption of its audio example (the paper's AL
  stage 1 used WebVid's video captions); stage 2 is unchanged, its conversations already being
  the toy world's video instructions (the paper's AL stage 2 used VL stage 2's data).

The tower's embeddings have the audio embeddings' norm (``audio.logit_scale``): the paper's
unit-norm quirk (``al_visual.py``, ``scale``) is a separate question from the shared space.
The tower is never saved in the model folder; inference always reads real audio. It lives in
stage 0's training state, so ``--resume`` restores it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import AudioConfig, VideoLlamaConfig
from model.media.audio import clip_starts
from model.media.common import normalise
from train import stage0

AUDIO_FROM = ("audio", "vision")  # StageSpec.audio_from: real fbank clips, or frames through the image tower
PREFIX = "image_tower."  # its parameters' names in stage 0's training state


class ImageTower(nn.Module):
    """The toy "ImageBind vision side": frames (B, 3, S, S) -> (B, E) with the audio embeddings' norm."""

    def __init__(self, out_dim: int, norm: float, width: int = 32) -> None:
        super().__init__()
        # Three strided convolutions and a global pool: 112 px -> 28 -> 14 -> 7 -> one vector.
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 8, stride=4, padding=2), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(4 * width), nn.Linear(4 * width, out_dim))
        self.norm = norm
        self.logit_scale = nn.Parameter(torch.tensor(2.66))  # log(1/0.07), as CLIP and ImageBind start

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(frames), dim=-1) * self.norm  # (B, E)


def build_tower(cfg: VideoLlamaConfig, device, seed: int) -> ImageTower:
    """A fresh tower, drawn from a forked random stream so that the rest of the recipe (heads, LoRA)
    starts from the same random numbers with or without it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tower = ImageTower(cfg.audio.out_dim, cfg.audio.logit_scale)
    return tower.to(device)


def named_parameters(tower: ImageTower | None) -> list[tuple[str, nn.Parameter]]:
    """The tower's parameters under stage 0's names (none without a tower)."""
    if tower is None:
        return []
    return [(PREFIX + n, p) for n, p in tower.named_parameters()]


def freeze(tower: ImageTower | None) -> None:
    if tower is not None:
        tower.eval()
        for p in tower.parameters():
            p.requires_grad_(False)


def window_centres(duration: float, cfg: AudioConfig) -> torch.Tensor:
    """Centres (C,) in seconds of the audio clips the media loader cuts from ``duration`` seconds."""
    starts = clip_starts(duration, cfg.num_clips, cfg.clip_duration)
    return torch.tensor([float(s) + cfg.clip_duration / 2 for s in starts])


def nearest_window(times: list[float], duration: float, cfg: AudioConfig) -> list[int]:
    """For each frame time, the audio clip whose centre is nearest."""
    centres = window_centres(duration, cfg)
    return [int((centres - t).abs().argmin()) for t in times]


def window_frames(times: list[float], duration: float, cfg: AudioConfig) -> list[int]:
    """For each audio clip, the sampled frame nearest its centre (C indices into ``times``)."""
    t = torch.tensor(times)
    return [int((t - c).abs().argmin()) for c in window_centres(duration, cfg).tolist()]


@dataclass
class TowerBatch:
    frames: torch.Tensor  # (B, 3, S, S) CLIP-normalised
    fbank: torch.Tensor  # (B, 1, M, F): the audio clip nearest each frame's time
    clips: list[int]  # the scene of each pair: pairs of one scene are positives


def tower_batch(pool, g: torch.Generator, batch: int, cfg: AudioConfig) -> TowerBatch:
    """``batch`` (frame, audio clip) pairs: a random frame of a random clip and its nearest audio clip."""
    clips = torch.randint(len(pool.scenes), (batch,), generator=g).tolist()
    T = pool.frames.shape[1]
    ks = torch.randint(T, (batch,), generator=g).tolist()
    frames, fbank = [], []
    for c, k in zip(clips, ks, strict=True):
        w = nearest_window([pool.frame_times[c][k]], pool.scenes[c].config.duration, cfg)[0]
        frames.append(pool.frames[c, k])
        fbank.append(pool.fbank[c, w])
    x = normalise(torch.stack(frames).numpy())  # (B, 3, S, S)
    return TowerBatch(frames=x, fbank=torch.stack(fbank).float(), clips=clips)


def tower_loss(model, tower: ImageTower, batch: TowerBatch) -> torch.Tensor:
    """InfoNCE between the tower's frame embeddings and the (detached) audio clip embeddings."""
    device = next(tower.parameters()).device
    with torch.no_grad():  # the audio side is the fixed target (see the module doc)
        target = model.audio_encoder(batch.fbank.to(device))  # (B, E)
    seen = tower(batch.frames.to(device))  # (B, E)
    return stage0.info_nce(seen, target, batch.clips, tower.logit_scale)


@torch.no_grad()
def frame_features(tower: ImageTower, pool, cfg: AudioConfig, chunk: int = 64) -> torch.Tensor:
    """The audio branch's training input: per clip, the tower's embeddings of the frames nearest
    each audio window's centre, (N, C, E) fp16 like the audio clip embeddings of ``precompute``."""
    device = next(tower.parameters()).device
    picks = [window_frames(pool.frame_times[i], s.config.duration, cfg) for i, s in enumerate(pool.scenes)]
    frames = torch.stack([pool.frames[i, k] for i, ks in enumerate(picks) for k in ks])  # (N*C, S, S, 3)
    out = []
    for i in range(0, len(frames), chunk):
        out.append(tower(normalise(frames[i:i + chunk].numpy()).to(device)).cpu().half())
    return torch.cat(out).view(len(picks), len(picks[0]), -1)  # (N, C, E)


def check_stages(specs) -> None:
    """Refuse an unknown ``audio_from``, and stages 1-2 reading the image tower while stage 0 trains none."""
    for spec in specs:
        if spec.audio_from not in AUDIO_FROM:
            raise ValueError(f"{spec.name}.audio_from must be one of {', '.join(AUDIO_FROM)}, not {spec.audio_from!r}")
    first, *rest = specs
    for spec in rest:
        if spec.audio_from == "vision" and first.audio_from != "vision":
            raise ValueError(f"{spec.name}.audio_from=vision feeds the audio branch the image tower that "
                             f"{first.name} trains only with {first.name}.audio_from=vision; set audio_from=vision "
                             "for every stage (--set audio_from=vision)")


def stage_features(feats: dict[str, torch.Tensor], seen: torch.Tensor | None, spec) -> dict[str, torch.Tensor]:
    """The frozen features one stage trains on: with ``audio_from="vision"`` the audio branch's
    come from the frames (``seen``, from ``frame_features``), else from the audio clips."""
    if spec.audio_from != "vision":
        return feats
    if seen is None:
        raise ValueError(f"{spec.name}.audio_from=vision needs the image tower of stage 0")
    return {**feats, "audio": seen}


def audio_captions(pool, spec) -> list[str] | None:
    """Stage 1's text for the audio branch: the paper's (a video caption of each clip) with
    ``audio_from="vision"``, else None (the clip's sound caption)."""
    if spec.audio_from != "vision":
        return None
    return [caps[i % len(caps)] for i, caps in enumerate(pool.video_captions)]  # phrasings in turn
