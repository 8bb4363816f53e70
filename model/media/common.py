"""Pieces shared by the media loaders: options, deadlines, resizing.

Public names are re-exported by ``model/media/__init__.py``; import them from there. They
live here so that the ``video``, ``audio`` and ``image`` decoders can use them without
importing the loader (which imports them).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from model.config import CLIP_MEAN, CLIP_STD, AudioConfig, VideoLlamaConfig
from model.media.errors import DecodeTimeout

# The loader's own limit: the rows of the default frame position embedding. A model with fewer
# rows (its config's max_frame_pos) is held to those by the chat engine.
MAX_FRAMES = VideoLlamaConfig.max_frame_pos
RESIZE_MODES = ("squash", "pad", "crop")
BACKENDS = ("pyav", "decord")
AUDIO_CHANNELS = ("first", "mix")
_AUDIO = AudioConfig()


# -- options -----------------------------------------------------------------------
@dataclass
class LoadOptions:
    """How to sample a media file. Defaults reproduce the original Video-LLaMA inference.

    The limits protect a shared server: a 2-hour 8K 2 GiB file is still accepted, bigger
    ones are refused with ``MediaTooLarge`` before any decoding.
    """

    num_frames: int = 8  # the one default frame count; 1..MAX_FRAMES; with ``fps`` the maximum
    fps: float | None = None  # None: ``num_frames`` uniformly over the video (original)
    # A time window in seconds (both or neither): frames come only from [start, end], the part of
    # the video a benchmark's question is about (MVBench's "bound"); see ``video.sample_indices``.
    start: float | None = None
    end: float | None = None
    resize: str = "squash"  # "squash" (original), "pad" or "crop" (both keep aspect)
    image_size: int = 224
    num_clips: int = _AUDIO.num_clips
    clip_duration: float = _AUDIO.clip_duration
    num_mel_bins: int = _AUDIO.num_mel_bins  # fbank size: the audio encoder's AudioConfig decides
    target_length: int = _AUDIO.target_length  # fbank frames per clip (padded or cut)
    use_audio: bool = True
    # "first" (original): ImageBind's fbank reads channel 0 of the clip; "mix": average the channels.
    audio_channels: str = "first"
    backend: str = "pyav"  # "decord" decodes frames the way the original did (parity checks)
    # FFmpeg frame threads per video decoder; 0 = one per core (decord's choice). One, measured
    # on a shared 2-core machine (bench/media_bench.py): frame threads cost 20-30% more CPU time,
    # lose their pipeline at every seek, and the second core is better spent on the sound track.
    decode_threads: int = 1
    # Containers decoding frames side by side, each seeking to its own keyframes (the target
    # list is cut where a keyframe lies between targets, so every frame is the same one a
    # single decoder gives). Two, measured (bench/media_bench.py): on a 10-minute file the 8
    # targets sit in 8 keyframe intervals and their decoding halves; a short clip whose targets
    # share one interval stays on one decoder (splitting it would decode the same frames twice).
    frame_workers: int = 2
    # Off (0) by default: exact frames, as the original. A fraction f of the spacing between
    # sampled frames lets each one move to the nearest keyframe within f * spacing, so a sample
    # costs one decoded frame instead of up to a keyframe interval (x264's default is 10 s at
    # 25 fps). Below 0.5, samples keep their order; reported indices and times are the real ones.
    keyframe_snap: float = 0.0
    max_bytes: int = 2 * 1024**3
    max_duration_s: float = 2 * 3600.0
    max_pixels: int = 7680 * 4320  # one frame; 8K is the largest accepted by default
    timeout_s: float = 60.0

    def validate(self) -> None:
        if not 1 <= self.num_frames <= MAX_FRAMES:
            raise ValueError(f"num_frames must be between 1 and {MAX_FRAMES}, got {self.num_frames}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive or None, got {self.fps}")
        if (self.start is None) != (self.end is None):
            raise ValueError("start and end (seconds) go together: give both or neither")
        if self.start is not None and not 0 <= self.start < self.end:
            raise ValueError(f"the window must satisfy 0 <= start < end, got start={self.start}, end={self.end}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.audio_channels not in AUDIO_CHANNELS:
            raise ValueError(f"audio_channels must be one of {AUDIO_CHANNELS}, got {self.audio_channels!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 0.0 <= self.keyframe_snap < 0.5:
            raise ValueError(f"keyframe_snap must be at least 0 and below 0.5, got {self.keyframe_snap}")
        if self.frame_workers < 1:
            raise ValueError(f"frame_workers must be 1 or more, got {self.frame_workers}")
        if self.decode_threads < 0:
            raise ValueError(f"decode_threads must be 0 (automatic) or more, got {self.decode_threads}")
        if min(self.image_size, self.num_clips, self.num_mel_bins, self.target_length) < 1 \
                or not self.clip_duration > 0:
            raise ValueError("image_size, num_clips, clip_duration, num_mel_bins and target_length must be positive")
        if min(self.max_bytes, self.max_duration_s, self.max_pixels, self.timeout_s) <= 0:
            raise ValueError("limits (max_bytes, max_duration_s, max_pixels, timeout_s) must be positive")


class Deadline:
    """A point in time after which decoding loops give up (checked between packets)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self, what: str = "decoding") -> None:
        if time.monotonic() > self.end:
            raise DecodeTimeout(
                f"{what} took longer than the {self.seconds:g} s limit; try a shorter or smaller "
                "file, or raise LoadOptions.timeout_s"
            )


class Background:
    """``work()`` running on a daemon thread; ``result()`` waits, then returns its value or raises its error.

    Starting a thread costs about 0.1 ms, nothing next to decoding.
    """

    def __init__(self, work, name: str):
        self._box: dict = {}
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True, name=name)
        self._thread.start()

    def _run(self, work) -> None:
        try:
            self._box["result"] = work()
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            self._box["error"] = err

    def result(self, timeout: float | None = None):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError
        if "error" in self._box:
            raise self._box["error"]
        return self._box["result"]


# -- geometry ----------------------------------------------------------------------
def scaled_size(width: int, height: int, size: int, mode: str) -> tuple[int, int]:
    """Size to scale a (width, height) picture to before ``place`` makes it size x size."""
    if mode == "squash":
        return size, size
    scale = size / max(width, height) if mode == "pad" else size / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def pad_value() -> np.ndarray:
    """Padding colour: the CLIP mean, so padded pixels are exactly 0 after normalisation."""
    return np.round(np.array(CLIP_MEAN) * 255).astype(np.uint8)


def place(image: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Centre-pad or centre-crop an (H, W, 3) uint8 image, already scaled, to (size, size, 3)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    if mode == "crop":
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        image = image[top : top + size, left : left + size]
        h, w = image.shape[:2]
        if (h, w) == (size, size):
            return image
    out = np.empty((size, size, 3), dtype=np.uint8)
    out[:] = pad_value()
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = image[:size, :size]
    return out


def rotate(image: np.ndarray, degrees_clockwise: int) -> np.ndarray:
    """Rotate an (H, W, C) image by a multiple of 90 degrees clockwise."""
    quarter_turns = (degrees_clockwise // 90) % 4
    # np.rot90 turns counter-clockwise for positive k.
    return np.ascontiguousarray(np.rot90(image, k=-quarter_turns)) if quarter_turns else image


def normalise(frames_uint8: np.ndarray) -> torch.Tensor:
    """(T, S, S, 3) uint8 -> (T, 3, S, S) float32 normalised with the CLIP mean and std."""
    t, h, w, _ = frames_uint8.shape
    # One pass transposes and converts into a contiguous tensor, then the same arithmetic in
    # place: equal values to ``(x / 255 - mean) / std``, at less than half the time.
    x = torch.empty(t, 3, h, w).copy_(torch.from_numpy(np.ascontiguousarray(frames_uint8)).permute(0, 3, 1, 2))
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return x.div_(255.0).sub_(mean).div_(std)  # (T, 3, S, S)
