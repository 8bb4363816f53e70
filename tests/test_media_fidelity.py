"""The default media loader gives the model exactly what the original's preprocessing gave it.

Frames: the original reads ``decord.VideoReader(path, width=224, height=224)`` and takes
``get_batch(np.arange(0, n, n / T).astype(int))``. Sound: ImageBind's ``load_and_transform_audio_data``
(mean removed, Kaldi fbank of channel 0). Both are computed here directly with decord and
torchaudio, independently of the loader.
"""

from __future__ import annotations

from fractions import Fraction

import decord
import numpy as np
import pytest
import torch
import torchaudio

from model.media import CorruptMedia, LoadOptions, load_media
from model.media import audio as media_audio
from model.media import video as video_module
from tests import media_factory as mf


def _decord_frames(path, indices) -> np.ndarray:
    reader = decord.VideoReader(str(path), width=224, height=224, num_threads=1)
    return reader.get_batch(list(indices)).asnumpy()  # (T, 224, 224, 3)


def _original_indices(path, num_frames: int) -> list[int]:
    n = len(decord.VideoReader(str(path), num_threads=1))
    count = min(num_frames, n)
    return np.arange(0, n, n / count).astype(int).tolist()


@pytest.mark.parametrize("size,fps,gop,pix_fmt,seconds", [
    ("640x360", 25, 12, "yuv420p", 2.0), ("320x240", 30000 / 1001, 30, "yuv420p", 2.0),
    ("97x61", 10, 7, "yuv444p", 2.0),  # odd sizes: x264 needs full chroma for them
    ("1280x720", 24, 10, "yuv420p", 4.0),  # enough 720p frames that two decoders share the targets
])
def test_frames_equal_decord_bit_for_bit(tmp_path, monkeypatch, size, fps, gop, pix_fmt, seconds):
    parts = []
    split = video_module.split_targets
    monkeypatch.setattr(video_module, "split_targets", lambda *a, **k: parts.append(split(*a, **k)) or parts[-1])
    path = mf.video(tmp_path / "clip.mp4", size=size, fps=fps, duration=seconds, gop=gop, extra=("-pix_fmt", pix_fmt))
    for num_frames in (1, 5, 8, 32):
        ours = load_media(path, LoadOptions(use_audio=False, num_frames=num_frames))
        indices = _original_indices(path, num_frames)
        assert ours.frame_indices == indices
        assert np.array_equal(ours.frames_uint8, _decord_frames(path, indices)), (size, num_frames)
    if size == "1280x720":
        assert max(len(p) for p in parts) == 2  # the frames of two decoders were checked too


def test_frames_sampled_by_rate_equal_decord(tmp_path):
    path = mf.video(tmp_path / "clip.mp4", size="320x240", fps=25, duration=3.0, gop=10)
    ours = load_media(path, LoadOptions(use_audio=False, fps=2.0, num_frames=32))
    assert ours.frame_indices == np.arange(0, 75, 25 / 2.0).astype(int).tolist() == [0, 12, 25, 37, 50, 62]
    assert np.array_equal(ours.frames_uint8, _decord_frames(path, ours.frame_indices))


def test_decord_backend_and_default_agree_and_aspect_modes_stay(tmp_path):
    path = mf.video(tmp_path / "clip.mp4", size="320x180", fps=25, duration=1.0)
    ours = load_media(path, LoadOptions(use_audio=False))
    theirs = load_media(path, LoadOptions(use_audio=False, backend="decord"))
    assert np.array_equal(ours.frames_uint8, theirs.frames_uint8)
    padded = load_media(path, LoadOptions(use_audio=False, resize="pad")).frames_uint8
    assert padded.shape == (8, 224, 224, 3)
    assert np.all(padded[:, :30] == padded[0, 0, 0]) and not np.array_equal(padded, ours.frames_uint8)
    cropped = load_media(path, LoadOptions(use_audio=False, resize="crop")).frames_uint8
    assert cropped.shape == (8, 224, 224, 3) and not np.array_equal(cropped, ours.frames_uint8)


# -- sound --------------------------------------------------------------------------
KALDI = dict(htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
             num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)


def _imagebind_fbank(path, in_place: bool = True) -> torch.Tensor:
    """ImageBind's ``load_and_transform_audio_data`` steps with torchaudio, 8 clips of 2 s.

    ``in_place``: subtract each clip's mean from a view of the whole track, as ImageBind does
    (``waveform -= waveform.mean()``), so overlapping clips see the shift of earlier ones.
    """
    waveform, rate = torchaudio.load(str(path))  # (channels, N)
    waveform = torchaudio.functional.resample(waveform, orig_freq=rate, new_freq=16000)
    duration = Fraction(waveform.size(1), 16000)
    out = []
    for i in range(8):
        start = max(duration - 2, 0) * i / 8  # pytorchvideo 0.1.5's ConstantClipsPerVideoSampler
        clip = waveform[:, int(start * 16000) : int((start + 2) * 16000)]
        if in_place:
            clip -= clip.mean()
        else:
            clip = clip - clip.mean()
        mel = torchaudio.compliance.kaldi.fbank(clip, **KALDI).T  # reads channel 0
        mel = torch.nn.functional.pad(mel, (0, 204 - mel.shape[1])) if mel.shape[1] < 204 else mel[:, :204]
        out.append(((mel + 4.268) / 9.138)[None])
    return torch.stack(out)  # (8, 1, 128, 204)


def _stereo(tmp_path, seconds: float = 6.0):
    """Left and right carry different sounds (and offsets): channel 0 and the mix differ."""
    src = (f"aevalsrc=0.4*sin(2*PI*(300+50*t)*t)+0.05*random(0)+0.1"
           f"|0.3*sin(2*PI*1700*t)+0.2*sin(2*PI*90*t)-0.05:s=44100:d={seconds}")
    return mf.audio(tmp_path / "stereo.wav", source=src, rate=44100, channels=2)


@pytest.mark.parametrize("whole_track_max", [1000.0, 0.0])  # read whole / seek around each clip
def test_fbank_is_imagebinds_first_channel_on_stereo(tmp_path, monkeypatch, whole_track_max):
    monkeypatch.setattr(media_audio, "WHOLE_TRACK_MAX_S", whole_track_max)
    path = _stereo(tmp_path)
    ref = _imagebind_fbank(path)
    ours = load_media(path).audio
    assert torch.allclose(ours, ref, atol=1e-3), float((ours - ref).abs().max())
    mixed = load_media(path, LoadOptions(audio_channels="mix")).audio  # the option stays
    assert float((mixed - ref).abs().max()) > 0.5


def test_imagebinds_in_place_shift_of_overlapping_clips_is_reproduced(tmp_path):
    # ImageBind's ``waveform -= waveform.mean()`` works on a view of the whole track, so a clip
    # overlapping earlier ones starts shifted; Kaldi's per-frame mean removal does not undo it.
    path = _stereo(tmp_path, seconds=4.0)  # 8 clips of 2 s in 4 s: they overlap
    shifted, plain = _imagebind_fbank(path, in_place=True), _imagebind_fbank(path, in_place=False)
    assert float((shifted - plain).abs().max()) > 0.1
    assert torch.allclose(load_media(path).audio, shifted, atol=1e-3)


def _float_wav(path, samples: np.ndarray) -> str:
    raw = path.with_suffix(".f32")
    samples.astype("<f4").tofile(raw)
    mf.run_ffmpeg("-f", "f32le", "-ar", "16000", "-ac", "1", "-i", str(raw), "-c:a", "pcm_f32le", str(path))
    return str(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(tmp_path, bad):
    samples = 0.1 * np.sin(np.arange(48000) / 10.0)
    samples[1000] = bad
    path = _float_wav(tmp_path / "bad.wav", samples)
    with pytest.raises(CorruptMedia, match="not numbers .NaN or infinity"):
        load_media(path)
    samples[1000] = 0.0
    assert torch.isfinite(load_media(_float_wav(tmp_path / "good.wav", samples)).audio).all()
