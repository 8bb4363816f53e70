"""Render synthetic-world scenes: in memory (numpy) or to an H.264/AAC mp4 file.

Also ``render_ffmpeg_clip``: a clip drawn by ffmpeg's own filters (a box or a ``geq`` disc over
a plain ``color`` source, a ``sine`` tone), used to check that answers generalise beyond our
renderer.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from train.world.scene import BEEP_ON_S, HIGH_HZ, LOW_HZ, PALETTE, Scene, SoundSegment

AMPLITUDE = 0.3
RAMP_S = 0.005  # fade in/out of each beep and segment so there are no clicks


# -- pictures ------------------------------------------------------------------------
def _star_mask(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Inside-test for a five-pointed star (outer radius r, inner 0.45 r) by ray crossing."""
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    px, py = radii * np.cos(angles), radii * np.sin(angles)
    inside = np.zeros(dx.shape, dtype=bool)
    for k in range(10):
        x0, y0, x1, y1 = px[k], py[k], px[(k + 1) % 10], py[(k + 1) % 10]
        crosses = (y0 > dy) != (y1 > dy)
        x_at = x0 + (dy - y0) * (x1 - x0) / np.where(y1 == y0, 1e-9, y1 - y0)
        inside ^= crosses & (dx < x_at)
    return inside


@functools.lru_cache(maxsize=64)
def shape_mask(shape: str, radius: float) -> np.ndarray:
    """Boolean sprite (2R+1, 2R+1) of a shape centred in the array; R = ceil(radius)."""
    half = int(np.ceil(radius))
    dy, dx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    if shape == "circle":
        mask = dx**2 + dy**2 <= radius**2
    elif shape == "square":
        side = radius * 0.85  # same visual area class as the circle
        mask = (np.abs(dx) <= side) & (np.abs(dy) <= side)
    elif shape == "triangle":
        # Upward triangle with its centroid at the centre: apex at -r, base at +r/2.
        top, base = -radius, radius * 0.5
        half_width = (dy - top) / (base - top) * radius * np.sqrt(3) / 2  # equilateral
        mask = (dy >= top) & (dy <= base) & (np.abs(dx) <= half_width)
    elif shape == "star":
        mask = _star_mask(dx, dy, radius)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask.setflags(write=False)
    return mask


def _paint(frame: np.ndarray, mask: np.ndarray, cx: float, cy: float, rgb) -> None:
    """Write ``rgb`` where ``mask`` (centred at cx, cy) falls inside the frame."""
    h, w, _ = frame.shape
    half = mask.shape[0] // 2
    x0, y0 = int(round(cx)) - half, int(round(cy)) - half
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + mask.shape[1], w), min(y0 + mask.shape[0], h)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    sub = mask[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    frame[fy0:fy1, fx0:fx1][sub] = rgb


def render_frames(scene: Scene) -> np.ndarray:
    """All frames of the clip, uint8 (N, H, W, 3), N = fps * duration."""
    cfg = scene.config
    n = int(round(cfg.fps * cfg.duration))
    frames = np.empty((n, cfg.size, cfg.size, 3), dtype=np.uint8)
    frames[:] = np.asarray(scene.background, dtype=np.uint8)
    for k in range(n):
        t = k / cfg.fps
        for s in scene.shapes:
            if s.visible(t):
                cx, cy = s.position(t, cfg.duration)
                _paint(frames[k], shape_mask(s.shape, s.radius), cx, cy, s.rgb)
    return frames


# -- sound ---------------------------------------------------------------------------
def _segment_wave(seg: SoundSegment, sample_rate: int) -> np.ndarray:
    n = max(int(round((seg.end - seg.start) * sample_rate)), 0)
    t = np.arange(n) / sample_rate
    if seg.pattern in ("rising", "falling"):
        # Exponential sweep: equal time per octave, as pitch is heard.
        ratio = seg.freq_end / seg.freq
        dur = max(seg.end - seg.start, 1e-6)
        freq = seg.freq * ratio ** (t / dur)
    else:
        freq = np.full(n, seg.freq)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    wave = AMPLITUDE * np.sin(phase)
    ramp = max(int(RAMP_S * sample_rate), 1)
    if seg.pattern == "beeping":
        period = 2 * BEEP_ON_S
        pos = np.mod(t, period)
        # Trapezoid gate: on for BEEP_ON_S with short ramps, then off for the same time.
        gate = np.clip(np.minimum(pos, BEEP_ON_S - pos) * sample_rate / ramp, 0.0, 1.0)
        wave *= gate
    env = np.ones(n)
    k = min(ramp, n // 2)
    if k:
        env[:k] = np.linspace(0, 1, k)
        env[-k:] = np.linspace(1, 0, k)
    return wave * env


def render_waveform(scene: Scene) -> np.ndarray:
    """Mono float32 waveform in [-1, 1] for the whole clip."""
    cfg = scene.config
    total = int(round(cfg.duration * cfg.sample_rate))
    out = np.zeros(total, dtype=np.float64)
    for seg in scene.sounds:
        start = int(round(seg.start * cfg.sample_rate))
        wave = _segment_wave(seg, cfg.sample_rate)[: total - start]
        out[start:start + len(wave)] += wave
    return out.astype(np.float32)


def render_arrays(scene: Scene) -> tuple[np.ndarray, int, np.ndarray, int]:
    """In-memory clip: (frames uint8 (N,H,W,3), fps, waveform float32 (samples,), sample_rate)."""
    return render_frames(scene), scene.config.fps, render_waveform(scene), scene.config.sample_rate


# -- files ---------------------------------------------------------------------------
def write_mp4(path: str | Path, frames: np.ndarray, fps: int, waveform: np.ndarray, sample_rate: int) -> Path:
    """Encode frames (N,H,W,3 uint8) as H.264 and a mono waveform as AAC into an mp4 via PyAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "18", "preset": "veryfast"}
        audio = container.add_stream("aac", rate=sample_rate)
        audio.layout = "mono"
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        chunk = 1024
        for i in range(0, len(waveform), chunk):
            piece = av.AudioFrame.from_ndarray(waveform[None, i:i + chunk].astype(np.float32),
                                               format="fltp", layout="mono")
            piece.sample_rate = sample_rate
            piece.pts = i
            piece.time_base = Fraction(1, sample_rate)
            container.mux(audio.encode(piece))
        container.mux(audio.encode())
    return path


def render_clip(scene: Scene, path: str | Path) -> Path:
    """Render ``scene`` to an H.264/AAC mp4 at ``path``; returns the path."""
    frames, fps, wave, sr = render_arrays(scene)
    return write_mp4(path, frames, fps, wave, sr)


# -- clips drawn by ffmpeg itself --------------------------------------------------
# ffmpeg colour names close to each palette colour, but not equal to it.
FFMPEG_COLOURS = {"red": "red", "green": "limegreen", "blue": "royalblue", "yellow": "gold",
                  "purple": "darkviolet", "white": "white"}
FFMPEG_PITCH_HZ = {"low": 262, "high": 1047}  # C4 and C6, inside LOW_HZ / HIGH_HZ
assert LOW_HZ[0] <= FFMPEG_PITCH_HZ["low"] <= LOW_HZ[1] and HIGH_HZ[0] <= FFMPEG_PITCH_HZ["high"] <= HIGH_HZ[1]


def _ffmpeg_rgb(name: str) -> tuple[int, int, int]:
    table = {"red": (255, 0, 0), "limegreen": (50, 205, 50), "royalblue": (65, 105, 225),
             "gold": (255, 215, 0), "darkviolet": (148, 0, 211), "white": (255, 255, 255)}
    return table[name]


def render_ffmpeg_clip(colour: str, pitch: str, path: str | Path, shape: str = "square",
                       size: int = 224, fps: int = 8, duration: float = 4.0,
                       sample_rate: int = 16000, background: str = "0x303030", extent: float = 1 / 3,
                       centre: tuple[float, float] = (0.5, 0.5), freq_hz: float | None = None) -> dict:
    """Draw a still shape with ffmpeg filters and a ``sine`` tone; write an mp4 and return its labels.

    Args:
        colour: a PALETTE name; drawn with the nearby ffmpeg colour FFMPEG_COLOURS[colour].
        pitch: "low" or "high": the label; the tone is ``freq_hz``, by default FFMPEG_PITCH_HZ[pitch].
        shape: "square" (``drawbox``) or "circle" (``geq`` disc).
        extent: the shape's side (diameter) as a fraction of the frame.
        centre: the shape's centre (x, y) as fractions of the frame; the shape must fit inside.
    """
    half = extent / 2
    if not 0 < extent < 1 or not all(half <= v <= 1 - half for v in centre):
        raise ValueError(f"a shape of extent {extent} centred at {centre} does not fit in the frame")
    if colour not in PALETTE:
        raise ValueError(f"unknown colour {colour!r}; use one of {sorted(PALETTE)}")
    if pitch not in FFMPEG_PITCH_HZ:
        raise ValueError(f"unknown pitch {pitch!r}; use 'low' or 'high'")
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("the ffmpeg command is missing; install it with `apt-get install -y ffmpeg`")
    name = FFMPEG_COLOURS[colour]
    side, cx, cy = int(size * extent), int(size * centre[0]), int(size * centre[1])
    if shape == "square":
        draw = f"drawbox=x={cx - side // 2}:y={cy - side // 2}:w={side}:h={side}:color={name}@1:t=fill"
    elif shape == "circle":
        r, g, b = _ffmpeg_rgb(name)
        inside = f"lte(hypot(X-{cx},Y-{cy}),{side // 2})"
        draw = (f"format=gbrp,geq=r='if({inside},{r},r(X,Y))':g='if({inside},{g},g(X,Y))'"
                f":b='if({inside},{b},b(X,Y))'")
    else:
        raise ValueError(f"unknown shape {shape!r}; use 'square' or 'circle'")
    freq = FFMPEG_PITCH_HZ[pitch] if freq_hz is None else freq_hz
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"color=c={background}:s={size}x{size}:r={fps}:d={duration}",
           "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={sample_rate}:duration={duration}",
           "-vf", f"{draw},format=yuv420p", "-c:v", "libx264", "-crf", "18",
           "-c:a", "aac", "-ac", "1", "-shortest", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed drawing {colour} {shape}: {result.stderr.strip()[-400:]}")
    return {"path": str(path), "colour": colour, "pitch": pitch, "shape": shape, "extent": extent, "centre": centre,
            "freq_hz": freq,
            "ffmpeg_colour": name, "rgb": _ffmpeg_rgb(name)}
