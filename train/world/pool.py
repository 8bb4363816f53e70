"""Synthetic-world training data, preprocessed the way inference preprocesses files.

``render_pool`` draws scenes, renders them in memory and keeps, per clip, the frames the
media loader would sample (resized to the model's image size, uint8) and the fbank clips it
would compute (fp16), plus the texts every stage needs: per-frame descriptions and per-clip
sound descriptions (stage 0), captions (stage 1), question-answer pairs (stage 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch

from model.config import VideoLlamaConfig
from model.media.common import normalise
from train.world.qa import QA, _sound_sentence, captions, make_qa
from train.world.render import render_arrays
from train.world.scene import Scene, WorldConfig, sample_scene, scene_rng

POSITION_BINS = 5  # per axis, in the stage-0 frame descriptions


# -- preprocessing (mirrors model/media*.py) ----------------------------------------------
def frame_indices(num_total: int, num_frames: int) -> np.ndarray:
    """Uniform indices as the original: arange(0, n, n / k) truncated to int."""
    k = min(num_frames, num_total)
    return np.arange(0, num_total, num_total / k).astype(np.int64)[:k]


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size, size, 3) uint8 as the PyAV loader: the picture goes
    through yuv420p (what the H.264 files hold) and libswscale's bicubic "squash" resize."""
    import av

    out = []
    for rgb in frames:
        yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
        out.append(yuv.to_ndarray(width=size, height=size, format="rgb24", interpolation="BICUBIC"))
    return np.stack(out)


def fbank_clips(wave: np.ndarray, sample_rate: int, cfg) -> torch.Tensor:
    """Mono waveform -> (S, 1, mel, frames) fbank clips, cut and computed as the media loader."""
    from model.media.audio import clip_starts, fbank_clip

    if sample_rate != cfg.sample_rate:
        raise ValueError(f"waveform at {sample_rate} Hz; resample to {cfg.sample_rate} Hz first")
    w = torch.from_numpy(np.ascontiguousarray(wave)).float()
    starts = clip_starts(len(w) / sample_rate, cfg.num_clips, cfg.clip_duration)
    clips = []
    for s in starts:
        first = int(s * sample_rate)
        last = int((s + Fraction(cfg.clip_duration)) * sample_rate)
        clips.append(fbank_clip(w[first:last], cfg))
    return torch.stack(clips), [float(s) for s in starts]  # (S, 1, mel, frames)


# -- descriptions for stage 0 --------------------------------------------------------------
def _bin(v: float, size: int) -> int:
    return min(POSITION_BINS - 1, int(v / size * POSITION_BINS))


def frame_objects(scene: Scene, t: float) -> list[tuple[str, str, str, int, int]]:
    """(size, colour, shape, x bin, y bin) of each shape visible at ``t``, left to right."""
    cfg = scene.config
    out = []
    for s in scene.shapes:
        if s.visible(t):
            x, y = s.position(t, cfg.duration)
            out.append((s.size, s.colour, s.shape, _bin(x, cfg.size), _bin(y, cfg.size)))
    return sorted(out, key=lambda o: (o[3], o[4]))


def describe_objects(objects: list[tuple[str, str, str, int, int]]) -> str:
    count = {0: "empty", 1: "one shape", 2: "two shapes", 3: "three shapes"}[len(objects)]
    return f"{count}: " + ", ".join(f"{z} {c} {k} x{x} y{y}" for z, c, k, x, y in objects)


def frame_description(scene: Scene, t: float) -> str:
    """What one frame shows: each visible shape with size, colour and position bins."""
    return describe_objects(frame_objects(scene, t))


def corrupt_objects(objects: list, rng: np.random.Generator) -> list:
    """The same objects with one attribute changed (or one object dropped): a hard negative."""
    from train.world.scene import COLOURS, SHAPES, SIZES

    if not objects:
        return [("small", COLOURS[int(rng.integers(len(COLOURS)))], SHAPES[int(rng.integers(len(SHAPES)))],
                 int(rng.integers(POSITION_BINS)), int(rng.integers(POSITION_BINS)))]
    objs = [list(o) for o in objects]
    i = int(rng.integers(len(objs)))
    kind = int(rng.integers(7))
    if kind == 0:
        objs[i][1] = _other(COLOURS, objs[i][1], rng)
    elif kind in (1, 2):  # shape and position are the hard attributes: ask for them more often
        objs[i][2] = _other(SHAPES, objs[i][2], rng)
    elif kind == 3:
        objs[i][0] = _other(SIZES, objs[i][0], rng)
    elif kind in (4, 5):
        axis = 3 + int(rng.integers(2))
        v = objs[i][axis]
        objs[i][axis] = v + 1 if v == 0 or (v < POSITION_BINS - 1 and rng.random() < 0.5) else v - 1
    else:
        del objs[i]
    return [tuple(o) for o in objs]


def _other(options, value, rng):
    rest = [o for o in options if o != value]
    return rest[int(rng.integers(len(rest)))]


def sound_description(scene: Scene, start: float, length: float) -> str:
    """What one audio clip window [start, start + length) contains."""
    end = start + length
    parts = []
    for seg in scene.sounds:
        overlap = min(end, seg.end) - max(start, seg.start)
        if overlap < 0.15:
            continue
        name = f"{seg.pattern} sweep" if seg.pitch is None else f"{seg.pitch} {seg.pattern} tone"
        if seg.start > start + 0.2:
            name += " onset"
        if seg.end < end - 0.2:
            name += " offset"
        parts.append(name)
    return ", ".join(parts) if parts else "silence"


# -- the pool --------------------------------------------------------------------------------
@dataclass
class Pool:
    """Preprocessed clips of one split; row i of every array belongs to ``scenes[i]``."""

    scenes: list[Scene]
    frames: torch.Tensor  # (N, T, S, S, 3) uint8
    frame_texts: list[list[str]]  # N x T
    frame_objs: list[list[list]]  # N x T x objects (for hard negatives)
    fbank: torch.Tensor  # (N, C, 1, M, F) fp16
    sound_texts: list[list[str]]  # N x C
    video_captions: list[list[str]]  # visual part of each caption phrasing
    sound_captions: list[str]
    qas: list[list[QA]] = field(default_factory=list)
    frame_times: list[list[float]] = field(default_factory=list)  # N x T seconds, for the frame message


def _widen_colours(scene: Scene, rng: np.random.Generator, amount: int = 30) -> None:
    """Jitter shape colours further than the world does (training only), so colour names
    also fit other renderers' shades (e.g. ffmpeg's "gold" for yellow)."""
    for s in scene.shapes:
        s.rgb = tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in s.rgb)


def visual_caption(scene: Scene, caption: str) -> str:
    """A caption without its sound sentence (what the video branch can see)."""
    return caption[: -len(_sound_sentence(scene))].strip()


def render_pool(model_cfg: VideoLlamaConfig, n: int, seed: int, split: str = "train",
                num_frames: int = 8, world: WorldConfig | None = None, widen_colours: bool = True) -> Pool:
    """Render ``n`` scenes of ``split`` and preprocess them for training."""
    world = world or WorldConfig()
    a = model_cfg.audio
    fobjs, times = [], []
    scenes, frames, ftexts, fbanks, stexts, vcaps, scaps, qas = [], [], [], [], [], [], [], []
    for i in range(n):
        rng = scene_rng(seed, split, i)
        scene = sample_scene(rng, split, world)
        if widen_colours:
            _widen_colours(scene, np.random.default_rng([seed, 99, i]))
        video, fps, wave, sr = render_arrays(scene)
        idx = frame_indices(len(video), num_frames)
        frames.append(torch.from_numpy(resize_frames(video[idx], model_cfg.vision.image_size)))
        times.append([k / fps for k in idx])
        objs = [frame_objects(scene, t) for t in times[-1]]
        fobjs.append(objs)
        ftexts.append([describe_objects(o) for o in objs])
        fb, starts = fbank_clips(wave, sr, a)
        fbanks.append(fb.to(torch.float16))
        stexts.append([sound_description(scene, float(s), a.clip_duration) for s in starts])
        caps = captions(scene)
        vcaps.append([visual_caption(scene, c) for c in caps])
        scaps.append(_sound_sentence(scene))
        qas.append(make_qa(scene, rng))
        scenes.append(scene)
    return Pool(scenes=scenes, frames=torch.stack(frames), frame_texts=ftexts, frame_objs=fobjs,
                fbank=torch.stack(fbanks), sound_texts=stexts, video_captions=vcaps, sound_captions=scaps, qas=qas,
                frame_times=times)


@torch.no_grad()
def precompute(model, pool: Pool, chunk: int = 32) -> dict[str, torch.Tensor]:
    """Frozen-encoder outputs of every clip: video (N, T, Qi, H) and audio (N, C, E), fp16."""
    video, audio = [], []
    for i in range(0, len(pool.scenes), chunk):
        frames = pool.frames[i:i + chunk]  # (b, T, S, S, 3)
        b, T = frames.shape[:2]
        x = normalise(frames.flatten(0, 1).numpy()).view(b, T, 3, *frames.shape[2:4])  # (b, T, 3, S, S)
        video.append(model.encode_frames(x).cpu().half())
        audio.append(model.encode_clips(pool.fbank[i:i + chunk].float()).cpu().half())
    return {"video": torch.cat(video), "audio": torch.cat(audio)}
