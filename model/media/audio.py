"""Audio clips for the ImageBind audio encoder: where clips start, decoding, Kaldi fbank.

The numbers follow ImageBind's ``load_and_transform_audio_data`` as Video-LLaMA calls it
(reference section 4.3): 16 kHz, clips of 2 s, per-clip mean removed, a 128-bin Kaldi
log-mel fbank with 25 ms windows every 10 ms, padded or cut to 204 frames, normalised.

Channels, as ImageBind (``LoadOptions.audio_channels="first"``, the default): every channel is
resampled, each clip's mean over all its channels and samples is subtracted, and the fbank
reads channel 0 only (torchaudio's ``kaldi.fbank`` takes channel 0 of a 2-D wave).
``audio_channels="mix"`` averages the channels first instead. ImageBind subtracts the mean in
place on a view of the whole track, so a clip overlapping earlier ones starts from samples
already shifted by their means; we reproduce that (``_cut_centred``). It matters: Kaldi removes
each 25 ms frame's own mean, but the shift covers only the overlapping part of the clip, and
frames across its edge and the clip's own mean change (up to 0.6 in the normalised fbank on a
4 s stereo clip, ``tests/test_media_fidelity.py``). Clips overlap only on sound shorter than
``num_clips * clip_duration + clip_duration`` (18 s by default), which is read whole; read by
seeking, overlapping clips share one decoded piece, and the same holds.

The original reads and resamples the whole track and then cuts clips; for a 10-minute
video that is most of its loading time. Here a short track is still read whole, but a long
one is read around each clip only (one seek per clip), and each piece is resampled with
the same torchaudio function on a 16 kHz grid aligned with the whole-track one, so the
result matches the original's to float rounding (tested).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
import torch
import torchaudio

from model.config import AudioConfig
from model.media.common import Deadline, LoadOptions
from model.media.errors import CorruptMedia

AUDIO = AudioConfig()
FRAME_LENGTH_MS = 25.0  # ImageBind's Kaldi fbank window
FRAME_SHIFT_MS = 10.0  # ImageBind's DEFAULT_AUDIO_FRAME_SHIFT_MS
WHOLE_TRACK_MAX_S = 40.0  # shorter tracks are decoded whole: one pass beats several seeks
SPAN_MARGIN_S = 0.05  # decoded around each clip: covers the resampler's filter (under 1 ms)
MERGE_GAP_S = 1.0  # clips closer than this are decoded in one pass rather than two seeks
PREROLL_S = 0.1  # seek this much before the wanted time (decoder warm-up, see _decode_range)
SILENCE_PEAK = 1e-4  # peak amplitude below which a sound track counts as silent


@dataclass
class AudioClips:
    fbank: torch.Tensor  # (S, 1, mel_bins, target_length), normalised
    waveforms: torch.Tensor  # (S, samples) at 16 kHz, zero-padded to clip length
    starts: list[float]  # seconds
    duration: float  # seconds of sound
    silent: bool
    notes: list[str] = field(default_factory=list)


def clip_starts(duration: float, num_clips: int, clip_duration: float) -> list[Fraction]:
    """Start times as pytorchvideo 0.1.5's ``ConstantClipsPerVideoSampler`` computes them.

    ``start_i = i * max(D - c, 0) / n``. Video-LLaMA pins pytorchvideo 0.1.5, which divides
    by n (newer pytorchvideo and the transformers ImageBind port divide by n - 1, so their
    last clip ends exactly at the end). We match the pinned version: it is what the
    released checkpoints saw. All clips start at 0 when the sound lasts ``c`` or less.
    """
    max_start = Fraction(max(duration - clip_duration, 0))
    step = max_start / num_clips
    return [step * i for i in range(num_clips)]


def fbank_clip(clip: torch.Tensor, config: AudioConfig = AUDIO) -> torch.Tensor:
    """(N,) or (channels, N) 16 kHz samples -> (1, mel_bins, target_length) normalised log-mel fbank.

    As ImageBind: the mean of the whole clip (all channels) is removed, then channel 0 is read.
    """
    window = int(config.sample_rate * FRAME_LENGTH_MS / 1000)
    wave = clip - clip.mean() if clip.numel() else clip
    wave = wave[0] if wave.dim() == 2 else wave
    if wave.numel() < window:  # Kaldi needs one full window; pad with silence
        wave = torch.nn.functional.pad(wave, (0, window - wave.numel()))
    return _finish_fbank(_kaldi_fbank(wave, config).T, config)


def fbank_clips(clips: list[torch.Tensor], config: AudioConfig = AUDIO) -> torch.Tensor:
    """``fbank_clip`` of each clip, stacked: (S, 1, mel_bins, target_length).

    Every Kaldi fbank step works inside one 25 ms frame, so clips of one length that is a
    whole number of frame shifts can go through a single call, end to end: clip i's frames
    are then rows ``i * L / shift`` onwards. One call instead of S saves the per-call set-up
    (window, mel banks), which matters most for long videos, whose sound competes with the
    frame decoders for the cores. Other lengths take one call per clip.
    """
    shift = int(config.sample_rate * FRAME_SHIFT_MS / 1000)
    window = int(config.sample_rate * FRAME_LENGTH_MS / 1000)
    length = clips[0].shape[-1] if clips else 0
    if len(clips) < 2 or length < window or length % shift or any(c.shape != clips[0].shape for c in clips):
        return torch.stack([fbank_clip(c, config) for c in clips])
    waves = torch.stack(clips).reshape(len(clips), -1, length)  # (S, channels, L)
    waves = waves - waves.mean(dim=(1, 2), keepdim=True)  # per-clip mean over all channels, as fbank_clip
    mel = _kaldi_fbank(waves[:, 0].flatten(), config)  # channel 0 of each clip: (frames of the joined wave, mel_bins)
    per_clip = length // shift  # rows between clip starts
    own = 1 + (length - window) // shift  # frames lying wholly inside one clip
    rows = torch.arange(len(clips))[:, None] * per_clip + torch.arange(own)  # (S, own)
    return torch.stack([_finish_fbank(mel[r].T, config) for r in rows])


def _kaldi_fbank(wave: torch.Tensor, config: AudioConfig) -> torch.Tensor:
    """(N,) samples -> (frames, mel_bins) log-mel fbank with ImageBind's settings."""
    return torchaudio.compliance.kaldi.fbank(
        wave.unsqueeze(0), htk_compat=True, sample_frequency=config.sample_rate, use_energy=False,
        window_type="hanning", num_mel_bins=config.num_mel_bins, dither=0.0,
        frame_length=FRAME_LENGTH_MS, frame_shift=FRAME_SHIFT_MS,
    )


def _finish_fbank(mel: torch.Tensor, config: AudioConfig) -> torch.Tensor:
    """(mel_bins, frames) -> padded or cut to target_length, normalised: (1, mel_bins, target_length)."""
    missing = config.target_length - mel.shape[1]
    mel = torch.nn.functional.pad(mel, (0, missing)) if missing > 0 else mel[:, : config.target_length]
    return ((mel - config.fbank_mean) / config.fbank_std).unsqueeze(0)


def load_clips(container, stream, options: LoadOptions, deadline: Deadline,
               config: AudioConfig = AUDIO) -> AudioClips:
    """Decode ``options.num_clips`` clips of ``options.clip_duration`` s from an audio stream.

    The fbank size comes from ``options`` (the model's ``AudioConfig``); the other
    preprocessing numbers (sample rate, normalisation) from ``config``.
    """
    config = dataclasses.replace(config, num_mel_bins=options.num_mel_bins, target_length=options.target_length)
    duration = _stream_duration(container, stream)
    rate = config.sample_rate
    for other in container.streams:  # let the demuxer skip video packets instead of reading them
        if other is not stream:
            other.discard = type(other.discard).all
    mix = options.audio_channels == "mix"
    if duration is None or duration <= WHOLE_TRACK_MAX_S:
        wave = _resample(*_decode_range(container, stream, None, None, deadline, mix), rate)  # (channels, N)
        duration = wave.shape[-1] / rate  # exact, as the original computes it
        if wave.shape[-1] == 0:
            raise CorruptMedia("the sound track contains no decodable audio; re-export the file")
        starts = clip_starts(duration, options.num_clips, options.clip_duration)
        clips = _cut_centred(wave, starts, options.clip_duration, rate)
    else:
        starts = clip_starts(duration, options.num_clips, options.clip_duration)
        clips = _clips_by_seeking(container, stream, starts, options.clip_duration, deadline, rate, mix)
    return _finish(clips, starts, duration, options, config)


def _finish(clips, starts, duration, options: LoadOptions, config: AudioConfig) -> AudioClips:
    length = int(options.clip_duration * config.sample_rate)
    waveforms = torch.zeros(len(clips), length)
    for i, clip in enumerate(clips):  # the channel the fbank reads (channel 0, or the mix)
        waveforms[i, : min(length, clip.shape[-1])] = clip[0, :length]
    fbank = fbank_clips(clips, config)  # (S, 1, mel_bins, target_length)
    silent = float(waveforms.abs().max()) < SILENCE_PEAK
    notes = []
    if silent:
        notes.append("the sound track is silent")
    if duration < options.clip_duration:
        notes.append(f"the sound lasts only {duration:.1f} s; each {options.clip_duration:g} s clip "
                     "is padded")
    return AudioClips(fbank=fbank, waveforms=waveforms, starts=[round(float(s), 3) for s in starts],
                      duration=duration, silent=silent, notes=notes)


def _cut(wave: torch.Tensor, base: int, start: Fraction, clip_duration: float, rate: int) -> torch.Tensor:
    """Samples [int(start*rate), int((start+c)*rate)) of a (channels, N) 16 kHz wave whose first sample is ``base``."""
    first = int(start * rate) - base
    last = int((start + Fraction(clip_duration)) * rate) - base
    return wave[..., max(first, 0) : max(last, 0)]


def _cut_centred(wave: torch.Tensor, starts: list[Fraction], clip_duration: float, rate: int,
                 base: int = 0) -> list[torch.Tensor]:
    """The clips of a (channels, N) track whose first sample is ``base``, each one's mean removed
    in place on the track, in order, as ImageBind does: a clip overlapping earlier ones starts
    from their shifted samples. Each clip is copied once centred, before later clips shift it
    (the original computes each clip's fbank before cutting the next); the fbank's own mean
    removal then finds a mean of ~0.
    """
    clips = []
    for start in starts:
        clip = _cut(wave, base, start, clip_duration, rate)  # a view of the track
        if clip.numel():
            clip -= clip.mean()
        clips.append(clip.clone())
    return clips


def _clips_by_seeking(container, stream, starts, clip_duration, deadline, rate, mix=False) -> list[torch.Tensor]:
    spans: list[list[float]] = []  # [t0, t1] in seconds, merged when close
    for s in starts:
        t0, t1 = float(s) - SPAN_MARGIN_S, float(s) + clip_duration + SPAN_MARGIN_S
        if spans and t0 <= spans[-1][1] + MERGE_GAP_S:
            spans[-1][1] = max(spans[-1][1], t1)
        else:
            spans.append([t0, t1])
    pieces = []
    for t0, t1 in spans:
        samples, first_index, native = _decode_range(container, stream, t0, t1, deadline, mix)
        samples, first_index = _align(samples, first_index, native, rate)
        pieces.append((_resample(samples, first_index, native, rate), first_index * rate // native))
    clips = []
    for s in starts:
        t = float(s)
        wave, base = next(p for p, (t0, t1) in zip(pieces, spans, strict=True) if t0 <= t <= t1)
        clips += _cut_centred(wave, [s], clip_duration, rate, base)  # overlapping clips share ``wave``
    return clips


def _align(samples: np.ndarray, first_index: int, native: int, rate: int) -> tuple[np.ndarray, int]:
    """Drop leading samples so the piece starts on a sample shared by both rates' grids.

    Then sample k of the resampled piece is sample ``base + k`` of the whole resampled track.
    """
    step = native // math.gcd(native, rate)
    drop = (-first_index) % step
    return samples[..., drop:], first_index + drop


def _resample(samples: np.ndarray, first_index: int, native: int, rate: int) -> torch.Tensor:
    wave = torch.from_numpy(samples)  # (channels, N)
    if native != rate and wave.numel():
        wave = _resampler(native, rate)(wave)  # each channel on its own
    return wave


@functools.lru_cache(maxsize=8)
def _resampler(native: int, rate: int) -> torchaudio.transforms.Resample:
    """``torchaudio.functional.resample``'s filter, built once per rate pair (a long video's
    clips are resampled piece by piece; the filter is the same each time). Built in float32,
    as the function builds it for float32 input: the samples come out bit for bit the same."""
    return torchaudio.transforms.Resample(orig_freq=native, new_freq=rate, dtype=torch.float32)


def _stream_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _decode_range(container, stream, t0: float | None, t1: float | None, deadline: Deadline, mix: bool = False):
    """(channels, N) float32 samples at the native rate covering [t0, t1] seconds (None: whole
    track); one channel, the average, with ``mix``.

    Returns (samples, index of the first sample counted from the stream start, native rate).
    Raises ``CorruptMedia`` on samples that are not finite (NaN or infinity in a float file):
    one of them would turn most of the fbank into NaN.
    """
    tb = stream.time_base
    origin = stream.start_time or 0
    # Always seek (the video may have been read first), and to before the wanted time: a
    # decoder restarted exactly at the first packet lacks the encoder's priming frame and
    # returns a damaged first frame (AAC), while a target before the start keeps it.
    target = origin + int(((t0 or 0.0) - PREROLL_S) / tb)
    try:
        container.seek(target, stream=stream, backward=True)
    except av.error.FFmpegError:
        container.seek(origin, stream=stream, backward=True)
    chunks, first_index, native, total = [], None, None, 0
    for frame in _audio_frames(container, stream, deadline):
        native = native or frame.sample_rate
        if first_index is None:
            pts = frame.pts if (t0 is not None and frame.pts is not None) else origin
            first_index = round(float((pts - origin) * tb) * native)
        chunks.append(_planes(frame))
        total += frame.samples
        if t1 is not None and first_index + total >= t1 * native:
            break
    if not chunks:
        return np.zeros((1, 0), np.float32), 0, native or stream.rate or AUDIO.sample_rate
    if len({len(c) for c in chunks}) > 1:  # the channel layout changed mid-stream: no channel 0 to follow
        chunks = [[np.stack(c).mean(axis=0)] for c in chunks]
    planes = np.stack([np.concatenate(channel) for channel in zip(*chunks, strict=True)])  # (channels, samples)
    if not np.isfinite(planes).all():
        bad = int(planes.size - np.isfinite(planes).sum())
        raise CorruptMedia(f"the sound holds {bad} samples that are not numbers (NaN or infinity), as a "
                           "damaged float WAV can; re-export the sound as 16-bit PCM or repair the file")
    if mix and planes.shape[0] > 1:
        planes = planes.mean(axis=0, keepdims=True, dtype=np.float32)
    return np.ascontiguousarray(planes, dtype=np.float32), first_index, native


def _audio_frames(container, stream, deadline: Deadline):
    bad = 0
    for packet in container.demux(stream):
        deadline.check("decoding the sound track")
        try:
            frames = packet.decode()
        except (av.error.InvalidDataError, av.error.UndefinedError, av.error.BugError):
            bad += 1
            if bad > 50:
                raise CorruptMedia("the sound track is damaged: too many packets cannot be decoded; "
                                   "re-export the file") from None
            continue
        yield from frames


_SCALE = {"s16": 32768.0, "s32": 2147483648.0, "u8": 128.0, "s64": 9.223372036854776e18}


def _planes(frame: av.AudioFrame) -> list[np.ndarray]:
    """A decoded frame as one float32 array in [-1, 1] per channel; averaging waits for the end."""
    if frame.format.name == "fltp":  # AAC's output: views of the planes, joined once per channel at the end
        return [np.frombuffer(p, np.float32, frame.samples) for p in frame.planes]
    return list(_channels_via_ndarray(frame))


def _channels_via_ndarray(frame: av.AudioFrame) -> np.ndarray:
    """Other sample formats through ``to_ndarray``: (channels, samples) float32."""
    arr = frame.to_ndarray()
    if not frame.format.is_planar:
        arr = arr.reshape(-1, len(frame.layout.channels)).T  # (channels, samples)
    name = frame.format.name.rstrip("p")
    if name == "flt":  # AAC, Opus, Vorbis, MP3: the common case, no conversion
        return arr
    if name == "u8":
        arr = arr.astype(np.float32) - 128.0
    return (arr.astype(np.float64) / _SCALE.get(name, 1.0)).astype(np.float32)
