"""Long videos, faster: several decoders give exactly one decoder's frames; the opt-in keyframe snap."""

from __future__ import annotations

import os

import numpy as np
import pytest

import model.media.video as mv
from model.media import LoadOptions, load_media
from tests import media_factory as mf

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _ramp_indices(m) -> list[int]:
    return [mf.ramp_index(f.reshape(-1, 3).mean()) for f in m.frames_uint8]


@pytest.fixture
def parts_seen(monkeypatch):
    """Every small video splits (no minimum work per decoder); records the helpers' target lists."""
    seen: list[list[int]] = []
    real = mv._decode_part

    def spy(source, index, info, targets, *rest):
        seen.append(list(targets))
        return real(source, index, info, targets, *rest)

    monkeypatch.setattr(mv, "MIN_PART_PIXELS", 0)
    monkeypatch.setattr(mv, "_decode_part", spy)
    return seen


def test_split_keeps_each_keyframe_interval_on_one_decoder():
    keys = [0, 100, 200, 300]
    # All targets after one keyframe: one decoder reads them in one pass, never split.
    assert mv.split_targets([0, 10, 20, 30], keys[:1], 2, 0) == [[0, 10, 20, 30]]
    # Four intervals of equal cost: two each.
    assert mv.split_targets([5, 105, 205, 305], keys, 2, 0) == [[5, 105], [205, 305]]
    # Costs 50, 50, 50, 50 + 40 (350 reads on from 310): the smallest maximum is 100 | 140.
    assert mv.split_targets([50, 150, 250, 310, 350], keys, 2, 0) == [[50, 150], [250, 310, 350]]
    # Three decoders: 50 | 50 | 50 + 50 is the best cut with the runs in order.
    assert mv.split_targets([50, 150, 250, 350], keys, 3, 0) == [[50], [150], [250, 350]]
    # Below the minimum cost per decoder: fewer decoders, then one.
    assert mv.split_targets([50, 150, 250, 350], keys, 3, 60) == [[50, 150], [250, 350]]
    assert mv.split_targets([50, 150, 250, 350], keys, 2, 200) == [[50, 150, 250, 350]]
    # One worker asked: never split.
    assert mv.split_targets([5, 105, 205, 305], keys, 1, 0) == [[5, 105, 205, 305]]


def test_targets_of_one_frame_stay_on_one_decoder():
    # 99 and 101 are within the tolerance (the same frame) though a keyframe lies between.
    assert mv.split_targets([0, 99, 101, 250], [0, 100, 200], 2, 0, tolerance=2) == [[0, 99, 101], [250]]


# Matroska is left out: its cues list cluster starts only (one per 5 s), nothing to split in 2 s.
@pytest.mark.parametrize("suffix,vcodec,gop,extra,audio", [
    ("mp4", "libx264", 10, (), "sine"),
    ("mp4", "libx264", 7, ("-preset", "medium", "-bf", "3", "-b_strategy", "0"), "sine"),  # B-frames
    ("mov", "libx264", 12, (), None),
    ("avi", "mpeg4", 10, ("-q:v", "1"), "sine"),  # keyframes from AVI's idx1 index
])
def test_split_decoding_gives_the_same_frames(tmp_path, parts_seen, suffix, vcodec, gop, extra, audio):
    path = mf.video(tmp_path / f"ramp.{suffix}", source="ramp", duration=2.0, gop=gop, extra=extra, audio=audio,
                    vcodec=vcodec, acodec="libmp3lame" if suffix == "avi" else "aac")
    for n in (8, 32):
        parts_seen.clear()
        split = load_media(path, LoadOptions(num_frames=n, frame_workers=3))
        assert len(parts_seen) == 2, "the split path was not taken"
        one = load_media(path, LoadOptions(num_frames=n, frame_workers=1))
        assert split.frame_indices == one.frame_indices and len(split.frame_indices) == n
        assert np.array_equal(split.frames_uint8, one.frames_uint8)
        assert split.timestamps == one.timestamps and split.has_audio == (audio is not None)
        if audio:
            assert np.array_equal(split.audio.numpy(), one.audio.numpy())
        if vcodec == "libx264":  # MPEG-4 part 2 shifts the ramp's grey levels: no colour check
            assert _ramp_indices(split) == split.frame_indices == [int(i * 50 / n) for i in range(n)]


def test_split_with_variable_frame_rate(tmp_path, parts_seen):
    path = mf.video(tmp_path / "vfr.mp4", source="ramp", duration=2.0, gop=5,
                    vf="select='not(between(n\\,10\\,29))'", extra=("-fps_mode", "vfr"))
    split = load_media(path, LoadOptions(frame_workers=2))
    one = load_media(path, LoadOptions(frame_workers=1))
    assert parts_seen
    assert split.timestamps == one.timestamps and np.array_equal(split.frames_uint8, one.frames_uint8)
    assert [round(t * 25) for t in split.timestamps] == _ramp_indices(split)


def test_small_videos_and_one_interval_stay_on_one_decoder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(mv, "_decode_part", lambda *args: calls.append(args))
    small = mf.video(tmp_path / "small.mp4", source="ramp", duration=2.0, gop=10)  # tiny frames: not worth it
    one_gop = mf.video(tmp_path / "big.mp4", size="1280x720", duration=2.0)  # x264's 250-frame interval
    assert load_media(small).frame_indices == [int(i * 50 / 8) for i in range(8)]
    assert load_media(one_gop).frames.shape == (8, 3, 224, 224)
    assert calls == []


def test_a_helper_error_reaches_the_caller(tmp_path, parts_seen, monkeypatch):
    def broken(*args):
        raise mv.CorruptMedia("helper failed")

    monkeypatch.setattr(mv, "_decode_part", broken)
    path = mf.video(tmp_path / "ramp.mp4", source="ramp", duration=2.0, gop=10)
    with pytest.raises(mv.CorruptMedia, match="helper failed"):
        load_media(path, LoadOptions(use_audio=False))


def test_frame_workers_and_keyframe_snap_are_validated():
    cases = [(LoadOptions(frame_workers=0), "frame_workers"), (LoadOptions(keyframe_snap=0.5), "keyframe_snap"),
             (LoadOptions(keyframe_snap=-0.1), "keyframe_snap")]
    for bad, name in cases:
        with pytest.raises(ValueError, match=name):
            load_media(__file__, bad)


def test_snap_moves_a_target_to_the_nearest_keyframe_within_the_bound():
    keys = [0, 10, 20, 30, 40]
    assert mv.snap_to_keyframes([0, 12, 25, 37], keys, 5) == [0, 10, 20, 40]  # 25: a tie goes to the earlier
    assert mv.snap_to_keyframes([0, 12, 25, 37], keys, 2) == [0, 10, 25, 37]  # 25 and 37 are too far
    assert mv.snap_to_keyframes([3, 45], keys, 5) == [0, 40]  # before the first and after the last keyframe too


def test_keyframe_snap_is_off_by_default_and_reports_the_frames_it_took(tmp_path):
    path = mf.video(tmp_path / "ramp.mp4", source="ramp", duration=2.0, gop=10)  # keyframes 0, 10, ..., 40
    exact = load_media(path, LoadOptions(num_frames=4, use_audio=False))
    assert exact.frame_indices == _ramp_indices(exact) == [0, 12, 25, 37]
    assert not any("keyframe" in note for note in exact.notes)
    # Spacing 12.5 frames; 0.4 of it is 5 frames: 12 -> 10, 25 -> 20 (a tie), 37 -> 40.
    snapped = load_media(path, LoadOptions(num_frames=4, use_audio=False, keyframe_snap=0.4))
    assert snapped.frame_indices == _ramp_indices(snapped) == [0, 10, 20, 40]
    assert snapped.timestamps == [0.0, 0.4, 0.8, 1.6]
    assert snapped.frame_message.startswith("The video contains 4 frames sampled at 0.0, 0.4, 0.8, 1.6 seconds")
    assert any("keyframe_snap=0.4" in note for note in snapped.notes)
    narrow = load_media(path, LoadOptions(num_frames=4, use_audio=False, keyframe_snap=0.1))  # 1.25 frames
    assert narrow.frame_indices == _ramp_indices(narrow) == [0, 12, 25, 37]


@pytest.mark.parametrize("suffix,vcodec,extra", [("mp4", "libx264", ("-bf", "3")), ("avi", "mpeg4", ())])
def test_keyframes_near_targets_match_a_walk_of_the_whole_index(tmp_path, suffix, vcodec, extra):
    import av

    path = mf.video(tmp_path / f"gop.{suffix}", source="ramp", duration=2.0, gop=7, vcodec=vcodec, extra=extra)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        walked = sorted(e.timestamp for e in stream.index_entries if e.is_keyframe)
        assert len(walked) >= 7
        every = list(range(walked[0] - 5, walked[-1] + 50, 3))  # before, on, between and after keyframes
        near = mv.keyframes_near(stream, every)
        assert mv.keyframes_near(stream, []) == []
    assert set(near) <= set(walked)
    for target in every:
        before = [k for k in walked if k <= target]
        after = [k for k in walked if k >= target]
        if before:
            assert mv._last_at_or_before(near, target) == before[-1]
        if after:
            assert after[0] in near
