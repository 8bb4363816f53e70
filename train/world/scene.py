"""The synthetic audio-visual world: scene descriptions, sampled deterministically from a seed.

A ``Scene`` is plain data (JSON round-trip through ``to_dict`` / ``Scene.from_dict``): one to
three shapes on a plain background, each with a colour, size, motion and appear/leave times,
and a sound track of tone or sweep segments, some tied to a shape's appear/leave event.
Rendering lives in ``train/world/render.py``; captions and questions in ``train/world/qa.py``.

Layout rule that keeps labels unambiguous: every shape in a scene has a different colour and
a different shape name, and all motions of a scene share one axis (horizontal: left, right,
still; vertical: up, down, bouncing, still), with each shape in its own lane across that axis,
so shapes never overlap.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

# Named colours far apart in RGB; the rendered colour is jittered around these.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (40, 180, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 215, 40),
    "purple": (150, 55, 200),
    "white": (235, 235, 235),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
MOTIONS = ("left", "right", "up", "down", "still", "bouncing")
HORIZONTAL_MOTIONS = ("left", "right", "still")
VERTICAL_MOTIONS = ("up", "down", "bouncing", "still")
PITCHES = ("low", "high")
PATTERNS = ("steady", "beeping", "rising", "falling", "silent")
SOUND_MODES = ("ambient", "event", "silent")
SPLITS = ("train", "test")

# (colour, shape) pairs that never occur in the training split and occur in every test scene,
# so the held-out split tests composition, not memorised pairs.
HELDOUT_PAIRS = frozenset({("red", "star"), ("green", "circle"), ("blue", "triangle"), ("yellow", "square")})

# Frequency ranges (Hz) of the two pitch classes, drawn log-uniformly (equal odds per octave); sweeps
# run from one range to the other. They span most of what the 16 kHz audio can carry, so a sine tone
# drawn anywhere (the eval's ffmpeg clips) is not new: a model trained on 200-350 / 900-1500 Hz
# called every tone above 1.9 kHz low.
LOW_HZ = (50.0, 500.0)
HIGH_HZ = (750.0, 7000.0)
BEEP_ON_S = 0.12  # a beep's length; the gap after it is the same
EVENT_SOUND_S = 0.9  # how long an event-tied sound lasts
COLOUR_JITTER = 18  # +- per RGB channel around the palette colour
APPEAR_TIMES = (1.0, 1.5, 2.0)  # a shape that does not start visible appears at one of these
LEAVE_TIMES = (2.5, 3.0)  # a shape that does not stay leaves at one of these (for 4 s clips)
MIN_VISIBLE_S = 1.5


@dataclass
class WorldConfig:
    """Clip geometry and timing; every scene carries its own copy."""

    size: int = 224  # frames are size x size RGB
    fps: int = 8
    duration: float = 4.0  # seconds
    sample_rate: int = 16000
    small_radius: float = 0.085  # fraction of size
    large_radius: float = 0.15


@dataclass
class Shape:
    """One object. Positions are pixel centres; motion is linear from start to end over the clip."""

    shape: str
    colour: str
    rgb: tuple[int, int, int]
    size: str
    radius: float
    motion: str
    start_xy: tuple[float, float]
    end_xy: tuple[float, float]
    appear: float  # seconds; 0 means visible from the first frame
    leave: float  # seconds; == duration means it stays to the end
    bounce_period: float = 0.0  # seconds, bouncing only
    bounce_height: float = 0.0  # pixels, bouncing only

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def position(self, t: float, duration: float) -> tuple[float, float]:
        """Centre (x, y) at time ``t`` seconds."""
        a = min(max(t / duration, 0.0), 1.0)
        x = self.start_xy[0] + a * (self.end_xy[0] - self.start_xy[0])
        y = self.start_xy[1] + a * (self.end_xy[1] - self.start_xy[1])
        if self.motion == "bouncing":
            y -= self.bounce_height * abs(np.sin(np.pi * t / self.bounce_period))
        return x, y

    def visible(self, t: float) -> bool:
        return self.appear <= t < self.leave


@dataclass
class SoundSegment:
    """A tone (``pitch`` low/high, ``pattern`` steady/beeping) or a sweep (``pattern`` rising/falling)."""

    start: float
    end: float
    pattern: str
    pitch: str | None  # None for sweeps
    freq: float  # Hz at the start
    freq_end: float  # Hz at the end (== freq for tones)
    event_shape: int | None = None  # index into Scene.shapes when tied to a visual event
    event_kind: str | None = None  # "appear" or "leave"


@dataclass
class Scene:
    shapes: list[Shape]
    sounds: list[SoundSegment]
    background: tuple[int, int, int]
    sound_mode: str  # "ambient", "event" or "silent"
    axis: str  # "horizontal" or "vertical"
    config: WorldConfig = field(default_factory=WorldConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        try:
            shapes = [Shape(**{**s, "rgb": tuple(s["rgb"]), "start_xy": tuple(s["start_xy"]),
                               "end_xy": tuple(s["end_xy"])}) for s in data["shapes"]]
            sounds = [SoundSegment(**s) for s in data["sounds"]]
            return cls(shapes=shapes, sounds=sounds, background=tuple(data["background"]),
                       sound_mode=data["sound_mode"], axis=data["axis"],
                       config=WorldConfig(**data.get("config", {})))
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a scene description ({err}); write it with Scene.to_dict()") from err

    def shape_event_sounds(self, index: int, kind: str) -> list[SoundSegment]:
        return [s for s in self.sounds if s.event_shape == index and s.event_kind == kind]


# -- sampling -------------------------------------------------------------------------
def _pick_pairs(rng: np.random.Generator, n: int, split: str) -> list[tuple[str, str]]:
    """Distinct colours and distinct shapes; train avoids HELDOUT_PAIRS, test includes one."""
    while True:
        colours = [COLOURS[i] for i in rng.permutation(len(COLOURS))[:n]]
        shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:n]]
        pairs = list(zip(colours, shapes, strict=True))
        held = [p in HELDOUT_PAIRS for p in pairs]
        if (split == "train" and not any(held)) or (split == "test" and any(held)):
            return pairs


def _lane_layout(rng, axis: str, motion: str, lane: int, n: int, radius: float, cfg: WorldConfig):
    """Start/end centres for a shape in lane ``lane`` of ``n`` across ``axis``."""
    size = cfg.size
    margin = radius + 3
    across = (lane + 0.5) * size / n  # lane centre on the cross axis
    travel = rng.uniform(0.35, 0.5) * size
    along0 = rng.uniform(margin, size - margin)
    if motion in ("left", "up"):
        along0 = rng.uniform(margin + travel, size - margin)
        along1 = along0 - travel
    elif motion in ("right", "down"):
        along0 = rng.uniform(margin, size - margin - travel)
        along1 = along0 + travel
    elif motion == "bouncing":
        along0 = along1 = rng.uniform(size - margin - 0.1 * size, size - margin)  # rests near the floor
    else:
        along1 = along0
    if axis == "horizontal":
        return (along0, across), (along1, across)
    return (across, along0), (across, along1)


def _sample_times(rng: np.random.Generator, duration: float) -> tuple[float, float]:
    appear = 0.0 if rng.random() < 0.55 else float(rng.choice(APPEAR_TIMES))
    leave = duration
    if rng.random() < 0.35:
        options = [t for t in LEAVE_TIMES if t - appear >= MIN_VISIBLE_S]
        if options:
            leave = float(rng.choice(options))
    return appear, leave


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def sample_shapes(rng: np.random.Generator, split: str, cfg: WorldConfig) -> tuple[list[Shape], str]:
    n = int(rng.integers(1, 4))
    axis = "horizontal" if rng.random() < 0.5 else "vertical"
    motions = HORIZONTAL_MOTIONS if axis == "horizontal" else VERTICAL_MOTIONS
    shapes = []
    for lane, (colour, shape) in enumerate(_pick_pairs(rng, n, split)):
        size = SIZES[int(rng.integers(2))]
        radius = (cfg.small_radius if size == "small" else cfg.large_radius) * cfg.size
        motion = motions[int(rng.integers(len(motions)))]
        start, end = _lane_layout(rng, axis, motion, lane, n, radius, cfg)
        appear, leave = _sample_times(rng, cfg.duration)
        shapes.append(Shape(
            shape=shape, colour=colour, rgb=_jitter(rng, PALETTE[colour], COLOUR_JITTER), size=size,
            radius=float(radius), motion=motion, start_xy=(float(start[0]), float(start[1])),
            end_xy=(float(end[0]), float(end[1])), appear=appear, leave=leave,
            bounce_period=float(rng.uniform(0.9, 1.3)) if motion == "bouncing" else 0.0,
            bounce_height=float(0.3 * cfg.size) if motion == "bouncing" else 0.0,
        ))
    return shapes, axis


def _log_uniform(rng, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _tone(rng, start, end, pitch=None, pattern=None) -> SoundSegment:
    pitch = pitch or PITCHES[int(rng.integers(2))]
    pattern = pattern or ("steady", "beeping")[int(rng.integers(2))]
    freq = _log_uniform(rng, *(LOW_HZ if pitch == "low" else HIGH_HZ))
    return SoundSegment(start=start, end=end, pattern=pattern, pitch=pitch, freq=freq, freq_end=freq)


def _sweep(rng, start, end, pattern) -> SoundSegment:
    low, high = _log_uniform(rng, *LOW_HZ), _log_uniform(rng, *HIGH_HZ)
    f0, f1 = (low, high) if pattern == "rising" else (high, low)
    return SoundSegment(start=start, end=end, pattern=pattern, pitch=None, freq=f0, freq_end=f1)


def _events(shapes: list[Shape], duration: float) -> list[tuple[float, int, str]]:
    out = [(s.appear, i, "appear") for i, s in enumerate(shapes) if s.appear > 0]
    out += [(s.leave, i, "leave") for i, s in enumerate(shapes) if s.leave < duration]
    return sorted(out)


def sample_sounds(rng: np.random.Generator, shapes: list[Shape], cfg: WorldConfig) -> tuple[list[SoundSegment], str]:
    events = _events(shapes, cfg.duration)
    r = rng.random()
    mode = "silent" if r < 0.2 else ("event" if r < 0.6 and events else "ambient")
    if mode == "silent":
        return [], mode
    if mode == "ambient":
        if rng.random() < 0.7:
            return [_tone(rng, 0.0, cfg.duration)], mode
        return [_sweep(rng, 0.0, cfg.duration, ("rising", "falling")[int(rng.integers(2))])], mode
    # Event sounds: up to two, on events at least one sound-length apart, never overlapping.
    chosen: list[tuple[float, int, str]] = []
    for k in rng.permutation(len(events)):
        t, i, kind = events[int(k)]
        if all(abs(t - c[0]) >= EVENT_SOUND_S + 0.1 for c in chosen) and len(chosen) < 2:
            chosen.append((t, i, kind))
    sounds = []
    for t, i, kind in sorted(chosen):
        seg = _tone(rng, t, min(t + EVENT_SOUND_S, cfg.duration))
        seg.event_shape, seg.event_kind = i, kind
        sounds.append(seg)
    return sounds, mode


def sample_scene(rng: np.random.Generator, split: str = "train", config: WorldConfig | None = None) -> Scene:
    """Draw one scene. Same generator state in, same scene out.

    Args:
        rng: a ``numpy.random.Generator`` (e.g. ``np.random.default_rng(seed)``).
        split: "train" (no held-out colour/shape pairs) or "test" (at least one held-out pair).
        config: clip geometry and timing; ``WorldConfig()`` if None.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    cfg = config or WorldConfig()
    shapes, axis = sample_shapes(rng, split, cfg)
    sounds, mode = sample_sounds(rng, shapes, cfg)
    grey = int(rng.integers(0, 90))
    background = _jitter(rng, (grey, grey, grey), 8)
    return Scene(shapes=shapes, sounds=sounds, background=background, sound_mode=mode, axis=axis, config=cfg)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for clip ``index`` of ``split``; splits draw from disjoint seed streams."""
    return np.random.default_rng([int(seed), SPLITS.index(split), int(index)])
