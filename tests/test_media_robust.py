"""Bad, odd and hostile files: each gives a sensible result or a typed, actionable error."""

from __future__ import annotations

import os
import shutil
import stat

import numpy as np
import pytest

from model.media import (
    CorruptMedia,
    DecodeTimeout,
    LoadOptions,
    MediaError,
    MediaTooLarge,
    UnsupportedMedia,
    load_media,
)
from tests import media_factory as mf

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _mean_rgb(frame: np.ndarray) -> np.ndarray:
    return frame.reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("suffix,vcodec,acodec", [
    ("mp4", "libx264", "aac"), ("mov", "libx264", "aac"), ("mkv", "libx264", "libopus"),
    ("webm", "libvpx", "libopus"), ("avi", "mpeg4", "libmp3lame"), ("ts", "libx264", "aac"),
    ("mpg", "mpeg2video", "mp2"), ("flv", "libx264", "aac"),
])
def test_containers(tmp_path, suffix, vcodec, acodec):
    path = mf.video(tmp_path / f"blue.{suffix}", source="color", color="blue", audio="sine",
                    vcodec=vcodec, acodec=acodec, duration=1.0)
    m = load_media(path)
    assert m.kind == "video" and m.frames.shape == (8, 3, 224, 224) and m.has_audio
    n = mf.count_frames(path)
    assert m.frame_indices == [int(i * n / 8) for i in range(8)]
    assert np.abs(_mean_rgb(m.frames_uint8[-1]) - [0, 0, 255]).max() < 15
    assert m.audio.shape == (8, 1, 128, 204)


@pytest.mark.parametrize("suffix", ["ts", "mkv", "mov"])
def test_exact_frames_in_other_containers(tmp_path, suffix):
    # MPEG-TS has no index and its seeks can land after the target: they must be retried.
    path = mf.video(tmp_path / f"ramp.{suffix}", source="ramp", duration=2.0, gop=10)
    for n in (8, 32):
        m = load_media(path, LoadOptions(num_frames=n))
        shown = [mf.ramp_index(_mean_rgb(f).mean()) for f in m.frames_uint8]
        assert shown == m.frame_indices == [int(i * 50 / n) for i in range(n)]


def test_no_audio_track_is_flagged(tmp_path):
    m = load_media(mf.video(tmp_path / "mute.mp4"))
    assert m.frames.shape[0] == 8 and m.audio is None and not m.has_audio
    assert "this video has no sound" in m.notes


def test_audio_shorter_than_a_clip_in_a_video(tmp_path):
    path = mf.video(tmp_path / "v.mp4", duration=2.0, audio="sine", audio_duration=0.5)
    m = load_media(path)
    assert m.has_audio and m.clip_starts == [0.0] * 8 and m.audio.shape == (8, 1, 128, 204)
    assert any("only 0.5 s" in n for n in m.notes)


def test_video_shorter_than_eight_frames_and_a_single_frame(tmp_path):
    five = load_media(mf.video(tmp_path / "five.mp4", source="ramp", duration=0.2))
    assert five.frame_indices == [0, 1, 2, 3, 4] and five.frames.shape == (5, 3, 224, 224)
    assert [mf.ramp_index(_mean_rgb(f).mean()) for f in five.frames_uint8] == [0, 1, 2, 3, 4]
    one = load_media(mf.video(tmp_path / "one.mp4", duration=0.04))
    assert one.frame_indices == [0] and one.frames.shape == (1, 3, 224, 224)
    assert one.frame_message == "The video contains 1 frames sampled at 0.0 seconds. "


def test_variable_frame_rate_picks_the_frame_shown_at_each_time(tmp_path):
    # Drop frames 10..29 of a 25 fps ramp and keep the timestamps: a 0.8 s hole.
    path = mf.video(tmp_path / "vfr.mkv", source="ramp", duration=2.0,
                    vf="select='not(between(n\\,10\\,29))'", extra=("-fps_mode", "vfr"))
    m = load_media(path)
    assert len(m.timestamps) == 8 and m.timestamps == sorted(m.timestamps)
    for frame, t in zip(m.frames_uint8, m.timestamps, strict=True):
        shown = mf.ramp_index(_mean_rgb(frame).mean())
        assert shown == round(t * 25)  # the frame's content matches its timestamp
        assert not 10 <= shown <= 29


def test_tiny_2x2_video(tmp_path):
    m = load_media(mf.video(tmp_path / "tiny.mp4", size="2x2", source="color", color="white"))
    assert m.frames.shape == (8, 3, 224, 224) and (m.width, m.height) == (2, 2)
    assert _mean_rgb(m.frames_uint8[0]).min() > 200


@pytest.mark.slow
def test_8k_video_decodes_and_the_pixel_limit_refuses_it(tmp_path):
    path = mf.video(tmp_path / "8k.mp4", size="7680x4320", source="color", color="green", duration=0.08)
    m = load_media(path)
    assert (m.width, m.height) == (7680, 4320) and m.frames.shape == (2, 3, 224, 224)
    with pytest.raises(MediaTooLarge, match="pixel"):
        load_media(path, LoadOptions(max_pixels=3840 * 2160))


def test_pixel_duration_and_size_limits(tmp_path):
    path = mf.video(tmp_path / "v.mp4", duration=1.0, audio="sine")
    with pytest.raises(MediaTooLarge, match="max_pixels"):
        load_media(path, LoadOptions(max_pixels=1000))
    with pytest.raises(MediaTooLarge, match="max_duration_s"):
        load_media(path, LoadOptions(max_duration_s=0.5))
    with pytest.raises(MediaTooLarge, match="max_bytes"):
        load_media(path, LoadOptions(max_bytes=100))
    sound = mf.audio(tmp_path / "a.wav", duration=3.0)
    with pytest.raises(MediaTooLarge, match="max_duration_s"):
        load_media(sound, LoadOptions(max_duration_s=2.0))
    big = mf.image(tmp_path / "big.png", size="200x200")
    with pytest.raises(MediaTooLarge, match="max_pixels"):
        load_media(big, LoadOptions(max_pixels=100 * 100))


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(CorruptMedia, match="empty"):
        load_media(tmp_path / "empty.mp4")


def test_text_file_renamed_mp4(tmp_path):
    (tmp_path / "notes.mp4").write_text("shopping list:\n- milk\n- eggs\n")
    with pytest.raises(UnsupportedMedia, match="text file"):
        load_media(tmp_path / "notes.mp4")


def test_truncated_file_without_its_index(tmp_path):
    data = mf.video(tmp_path / "v.mp4", duration=1.0).read_bytes()  # moov at the end
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptMedia, match="truncated or damaged"):
        load_media(tmp_path / "cut.mp4")


def test_truncated_streamable_file_gives_the_frames_it_has(tmp_path):
    path = mf.video(tmp_path / "v.mp4", source="ramp", duration=2.0, extra=("-movflags", "+faststart"))
    data = path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    m = load_media(tmp_path / "cut.mp4")
    assert m.frames.shape[0] == 8
    shown = [mf.ramp_index(_mean_rgb(f).mean()) for f in m.frames_uint8]
    assert shown == sorted(shown) and shown[0] == 0  # real frames, in order, up to the cut


def test_damaged_bytes_in_the_middle(tmp_path):
    data = bytearray(mf.video(tmp_path / "v.mp4", duration=1.0, extra=("-movflags", "+faststart")).read_bytes())
    rng = np.random.default_rng(0)
    data[len(data) // 3 : 2 * len(data) // 3] = rng.integers(0, 256, len(data) // 3, dtype=np.uint8).tobytes()
    (tmp_path / "bad.mp4").write_bytes(bytes(data))
    # Decoded, as players and the original's decord do: the frames before the damage are exact,
    # and the ones the decoder cannot reach repeat the last good frame, which a note says.
    m = load_media(tmp_path / "bad.mp4")
    clean = load_media(tmp_path / "v.mp4")
    assert m.frames.shape == (8, 3, 224, 224) and np.isfinite(m.frames.numpy()).all()
    assert np.array_equal(m.frames_uint8[0], clean.frames_uint8[0])
    assert any("past the last frame that could be decoded" in note for note in m.notes)
    assert not any("past the last frame" in note for note in clean.notes)


def test_unsupported_codec(tmp_path):
    data = mf.video(tmp_path / "v.mp4", duration=0.2).read_bytes()
    (tmp_path / "odd.mp4").write_bytes(data.replace(b"avc1", b"zzz9"))  # a codec nobody knows
    with pytest.raises(UnsupportedMedia, match="codec is not supported"):
        load_media(tmp_path / "odd.mp4")


def test_timeout(tmp_path):
    path = mf.video(tmp_path / "v.mp4", duration=1.0)
    with pytest.raises(DecodeTimeout, match="timeout_s"):
        load_media(path, LoadOptions(timeout_s=1e-4))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        load_media(tmp_path / "nope.mp4")
    with pytest.raises(UnsupportedMedia, match="not a file"):
        load_media(tmp_path)
    assert issubclass(MediaError, ValueError)


def test_unicode_and_spaces_in_the_name(tmp_path):
    path = mf.video(tmp_path / "vidéo été 日本 (1).mp4", audio="sine", duration=1.0)
    m = load_media(path)
    assert m.frames.shape[0] == 8 and m.has_audio and len(m.sha256) == 64


def test_browser_recording_without_duration_is_remuxed(tmp_path):
    path = mf.browser_webm(tmp_path / "recording.webm", duration=1.0)
    m = load_media(path)
    assert m.duration == pytest.approx(1.0, abs=0.1) and m.frames.shape[0] == 8
    n = mf.count_frames(path)
    assert m.frame_indices == [int(i * n / 8) for i in range(8)] and m.has_audio


def test_read_only_location_is_left_untouched(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    mf.browser_webm(ro / "rec.webm")  # the remux must go to a temp dir, not next to the file
    shutil.copy(mf.video(tmp_path / "v.mp4", audio="sine"), ro / "v.mp4")
    for f in ro.iterdir():
        f.chmod(stat.S_IRUSR)
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        before = sorted(p.name for p in ro.iterdir())
        assert load_media(ro / "rec.webm").frames.shape[0] == 8
        assert load_media(ro / "v.mp4").has_audio
        assert sorted(p.name for p in ro.iterdir()) == before
    finally:
        ro.chmod(stat.S_IRWXU)


def test_music_file_with_cover_art_is_audio(tmp_path):
    tone = mf.audio(tmp_path / "tone.mp3", duration=2.5)
    cover = mf.image(tmp_path / "cover.jpg")
    out = tmp_path / "song.mp3"
    mf.run_ffmpeg("-i", str(tone), "-i", str(cover), "-map", "0", "-map", "1", "-c", "copy",
                  "-disposition:v", "attached_pic", str(out))
    m = load_media(out)
    assert m.kind == "audio" and m.frames is None and m.audio.shape == (8, 1, 128, 204)


def test_same_content_same_hash(tmp_path):
    a = mf.image(tmp_path / "a.png")
    shutil.copy(a, tmp_path / "b.png")
    c = mf.image(tmp_path / "c.png", color="blue")
    assert load_media(a).sha256 == load_media(tmp_path / "b.png").sha256 != load_media(c).sha256


def test_hash_follows_what_the_encoders_receive_not_the_file(tmp_path):
    clip = mf.video(tmp_path / "v.mp4", duration=1.0, audio="sine")
    eight, four = load_media(clip), load_media(clip, LoadOptions(num_frames=4))
    assert eight.sha256 != four.sha256  # other frames sampled: another cache entry
    low, high = mf.audio(tmp_path / "low.wav", freq=300.0), mf.audio(tmp_path / "high.wav", freq=1200.0)
    assert load_media(low).sha256 != load_media(high).sha256
    # The same pictures in another container: the encoders get the same input, one key. (Not
    # with AAC sound: containers place its priming samples differently, so the clips differ.)
    silent = mf.video(tmp_path / "silent.mp4", duration=1.0)
    copy = tmp_path / "copy.mkv"
    mf.run_ffmpeg("-i", str(silent), "-c", "copy", str(copy))
    assert load_media(copy).sha256 == load_media(silent).sha256 != four.sha256


def test_transcoding_fallback_writes_a_playable_copy_in_the_temp_dir(tmp_path):
    from model.media import loader as media

    src = mf.browser_webm(tmp_path / "rec.webm")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = media._transcode(str(src), str(out_dir), LoadOptions(), copy=False)  # re-encode to H.264/AAC
    assert os.path.dirname(out) == str(out_dir)
    m = load_media(out)
    assert m.frames.shape[0] == 8 and m.has_audio and m.duration == pytest.approx(1.0, abs=0.1)
