"""Audio clips: start times, Kaldi fbank against torchaudio called directly, seeking parity."""

from __future__ import annotations

import os
import wave
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torchaudio

from model.media import LoadOptions, load_media
from model.media import audio as media_audio
from model.media.common import Deadline
from tests import media_factory as mf

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _read_wav(path) -> tuple[np.ndarray, int]:
    """(channels, samples) float in [-1, 1] with the standard library: independent of PyAV."""
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return data.reshape(-1, w.getnchannels()).T.astype(np.float32) / 32768.0, w.getframerate()


def _reference_fbank(clip: torch.Tensor, bins: int = 128, frames: int = 204) -> torch.Tensor:
    """ImageBind's recipe written out with literal numbers (reference section 4.3)."""
    clip = clip - clip.mean()
    mel = torchaudio.compliance.kaldi.fbank(
        clip[None], htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
        num_mel_bins=bins, dither=0.0, frame_length=25, frame_shift=10).T
    mel = torch.nn.functional.pad(mel, (0, frames - mel.shape[1])) if mel.shape[1] < frames else mel[:, :frames]
    return ((mel + 4.268) / 9.138)[None]


def _reference_clips(wave_16k: torch.Tensor, n: int = 8, c: float = 2.0):
    """ImageBind's clips: each one's mean removed in place on the track, so overlapping clips shift."""
    wave_16k = wave_16k.clone()
    duration = wave_16k.numel() / 16000
    starts = [Fraction(max(duration - c, 0)) / n * i for i in range(n)]
    fbanks = []
    for s in starts:
        clip = wave_16k[int(s * 16000) : int((s + 2) * 16000)]
        clip -= clip.mean()
        fbanks.append(_reference_fbank(clip))
    return starts, torch.stack(fbanks)


def test_clip_starts_follow_pytorchvideo_0_1_5():
    assert media_audio.clip_starts(10.0, 8, 2.0) == [i * Fraction(8, 8) for i in range(8)]
    assert media_audio.clip_starts(600.0, 8, 2.0)[7] == Fraction(598 * 7, 8)
    assert media_audio.clip_starts(1.5, 8, 2.0) == [0] * 8


def test_fbank_of_a_tone_matches_torchaudio_called_directly(tmp_path):
    path = mf.audio(tmp_path / "tone.wav", freq=440, duration=3.0, rate=16000)
    samples, rate = _read_wav(path)
    assert rate == 16000
    starts, ref = _reference_clips(torch.from_numpy(samples[0]))
    m = load_media(path)
    assert m.kind == "audio" and m.frames is None and m.has_audio
    assert m.audio.shape == (8, 1, 128, 204)
    assert m.clip_starts == pytest.approx([float(s) for s in starts], abs=1e-3)
    assert torch.allclose(m.audio, ref, atol=1e-4)
    # The tone is where it should be: 440 Hz is loudest in a low mel bin, not a high one.
    energy = m.audio[0, 0, :, :190].mean(dim=1)
    assert int(energy.argmax()) < 40 and float(energy[100]) < float(energy.max()) - 1


@pytest.mark.parametrize("lengths", [[32000] * 8, [32000, 32000, 20000], [32000], [32010, 32010]])
def test_fbank_of_several_clips_in_one_call_equals_one_call_per_clip(lengths):
    # Equal lengths on the frame-shift grid go through one Kaldi call; others one call each.
    torch.manual_seed(0)
    clips = [torch.randn(n) * 0.1 + 0.05 * i for i, n in enumerate(lengths)]  # distinct means
    joined = media_audio.fbank_clips(clips)
    one_by_one = torch.stack([media_audio.fbank_clip(c) for c in clips])
    assert joined.shape == (len(lengths), 1, 128, 204)
    assert torch.equal(joined, one_by_one)


def test_cached_resampler_gives_torchaudio_functional_resample_exactly():
    wave = torch.randn(44100 * 2)
    for native in (44100, 48000, 8000):
        expected = torchaudio.functional.resample(wave, orig_freq=native, new_freq=16000)
        assert torch.equal(media_audio._resample(wave.numpy(), 0, native, 16000), expected)


def test_fbank_size_follows_the_options(tmp_path):
    """A smaller audio encoder (the tiny preset: 32 mel bins x 44 frames) gets its own size."""
    path = mf.audio(tmp_path / "tone.wav", freq=440, duration=3.0, rate=16000)
    samples, _ = _read_wav(path)
    m = load_media(path, LoadOptions(num_mel_bins=32, target_length=44))
    starts = media_audio.clip_starts(3.0, 8, 2.0)
    wave_16k = torch.from_numpy(samples[0])
    ref = torch.stack([_reference_fbank(wave_16k[int(s * 16000) : int((s + 2) * 16000)], 32, 44) for s in starts])
    assert m.audio.shape == (8, 1, 32, 44)
    assert torch.allclose(m.audio, ref, atol=1e-4)


@pytest.mark.parametrize("whole_track_max", [1000.0, 0.0])  # read whole / seek per clip
def test_resampled_stereo_clips_match_the_whole_track_reference(tmp_path, monkeypatch, whole_track_max):
    monkeypatch.setattr(media_audio, "WHOLE_TRACK_MAX_S", whole_track_max)
    src = "aevalsrc=sin(2*PI*(300+40*t)*t)|0.5*sin(2*PI*1000*t):s=44100:d=12"
    path = mf.audio(tmp_path / "sweep.wav", source=src, rate=44100, channels=2)
    samples, rate = _read_wav(path)
    mono = torch.from_numpy(samples.mean(axis=0))  # the opt-in mix averages channels
    wave_16k = torchaudio.functional.resample(mono, orig_freq=rate, new_freq=16000)
    _, ref = _reference_clips(wave_16k)
    m = load_media(path, LoadOptions(audio_channels="mix"))
    assert m.audio_waveforms.shape == (8, 32000)
    assert torch.allclose(m.audio, ref, atol=2e-3)


def test_seeking_into_aac_gives_the_same_clips_as_reading_it_whole(tmp_path):
    src = "aevalsrc=sin(2*PI*(300+40*t)*t):s=44100:d=12"
    path = mf.audio(tmp_path / "sweep.m4a", source=src, rate=44100, codec="aac")
    starts = media_audio.clip_starts(12.0, 8, 2.0)
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        samples, first, native = media_audio._decode_range(c, s, None, None, Deadline(30))
        whole = media_audio._resample(samples, first, native, 16000)
        by_seek = media_audio._clips_by_seeking(c, s, starts, 2.0, Deadline(30), 16000)
    for start, clip in zip(starts, by_seek, strict=True):
        expected = media_audio._cut(whole, 0, start, 2.0, 16000)
        assert clip.shape == expected.shape == (1, 32000)
        assert torch.allclose(clip, expected, atol=2e-3)


def test_matches_the_original_pipeline_on_a_video(tmp_path):
    # The original: torchaudio.load on the video file, resample all of it, cut, fbank channel 0.
    path = mf.video(tmp_path / "v.mp4", duration=5.0, audio="sine", extra=("-ac", "2"))
    waveform, rate = torchaudio.load(str(path))  # torchcodec on the system FFmpeg
    wave_16k = torchaudio.functional.resample(waveform[0], orig_freq=rate, new_freq=16000)
    starts, ref = _reference_clips(wave_16k)
    m = load_media(path)
    assert m.has_audio and m.audio.shape == (8, 1, 128, 204)
    ref_waves = torch.stack([wave_16k[int(s * 16000) : int(s * 16000) + 32000] for s in starts])
    assert torch.allclose(m.audio_waveforms, ref_waves, atol=1e-4)
    # Two FFmpeg versions decode AAC a few 1e-6 apart; log-mel bins with almost no energy
    # magnify that, so compare the fbank on average and bound the worst bin.
    diff = (m.audio - ref).abs()
    assert float(diff.mean()) < 1e-4 and float(diff.max()) < 0.1


@pytest.mark.parametrize("suffix,codec", [("wav", None), ("mp3", None), ("m4a", "aac"), ("flac", None),
                                          ("ogg", "libvorbis"), ("opus", "libopus")])
def test_audio_only_formats(tmp_path, suffix, codec):
    rate = 48000 if suffix == "opus" else 22050
    path = mf.audio(tmp_path / f"tone.{suffix}", duration=4.0, rate=rate, codec=codec)
    m = load_media(path)
    assert m.kind == "audio" and m.frames is None and m.frames_uint8 is None
    assert m.audio.shape == (8, 1, 128, 204) and torch.isfinite(m.audio).all()
    assert m.duration == pytest.approx(4.0, abs=0.1)
    assert m.clip_starts == pytest.approx([i * (m.duration - 2) / 8 for i in range(8)], abs=1e-3)
    assert not m.audio_silent and float(m.audio_waveforms.abs().max()) > 0.05


def test_sound_shorter_than_a_clip_is_padded_like_the_original(tmp_path):
    path = mf.audio(tmp_path / "short.wav", duration=0.5, rate=16000)
    samples, _ = _read_wav(path)
    m = load_media(path)
    assert m.clip_starts == [0.0] * 8
    ref = _reference_fbank(torch.from_numpy(samples[0]))
    assert torch.allclose(m.audio[3], ref, atol=1e-4)
    assert (m.audio_waveforms[:, 8000:] == 0).all() and m.audio_waveforms[:, :8000].abs().max() > 0.05
    assert any("only 0.5 s" in n for n in m.notes)


def test_sound_shorter_than_one_fbank_window(tmp_path):
    path = mf.audio(tmp_path / "blip.wav", duration=0.01, rate=16000)
    m = load_media(path)
    assert m.audio.shape == (8, 1, 128, 204) and torch.isfinite(m.audio).all()


def test_silent_sound_track_is_flagged(tmp_path):
    path = mf.video(tmp_path / "quiet.mp4", audio="silence", duration=2.5)
    m = load_media(path)
    assert m.has_audio and m.audio_silent and "the sound track is silent" in m.notes
    assert torch.isfinite(m.audio).all()


def test_use_audio_false_skips_the_track(tmp_path):
    path = mf.video(tmp_path / "v.mp4", audio="sine", duration=1.0)
    m = load_media(path, LoadOptions(use_audio=False))
    assert m.audio is None and not m.has_audio and "this video has no sound" not in m.notes
    n = load_media(path, LoadOptions(num_clips=3, clip_duration=0.5))
    assert n.audio.shape == (3, 1, 128, 204) and n.audio_waveforms.shape == (3, 8000)
