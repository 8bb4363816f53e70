"""`launch.py media`: the JSON and text reports, and errors as a non-zero exit."""

from __future__ import annotations

import json
import os

import launch
from tests import media_factory as mf

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_json_report(tmp_path, capsys):
    path = mf.video(tmp_path / "clip one.mp4", duration=1.0, audio="sine")
    assert launch.main(["media", str(path), "--frames", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 4 and report["frame_indices"] == [0, 6, 12, 18]
    assert report["timestamps"] == [0.0, 0.24, 0.48, 0.72]
    assert report["audio_clips"] == 8 and report["has_audio"] is True
    assert report["audio_shape"] == [8, 1, 128, 204] and report["frame_shape"] == [4, 3, 224, 224]
    assert report["decode_seconds"] > 0 and len(report["clip_starts"]) == 8


def test_json_report_without_sound(tmp_path, capsys):
    path = mf.video(tmp_path / "mute.mp4", duration=0.5)
    assert launch.main(["media", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["audio_clips"] == 0 and report["has_audio"] is False
    assert "this video has no sound" in report["notes"]


def test_text_report(tmp_path, capsys):
    path = mf.video(tmp_path / "v.mp4", duration=1.0, audio="sine")
    assert launch.main(["media", str(path)]) == 0
    out = capsys.readouterr().out
    assert "frames: 8 -> tensor (8, 3, 224, 224)" in out
    assert "audio: found, 8 clips -> tensor (8, 1, 128, 204)" in out
    assert "The video contains 8 frames sampled at" in out and "decoded in" in out


def test_bad_file_exits_non_zero_with_the_reason(tmp_path, capsys):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert launch.main(["media", str(tmp_path / "empty.mp4")]) == 2
    assert "empty" in capsys.readouterr().err
    assert launch.main(["media", str(tmp_path / "empty.mp4"), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["error_type"] == "CorruptMedia"
    assert launch.main(["media", str(tmp_path / "empty.mp4"), "--frames", "40"]) == 2
    assert "num_frames" in capsys.readouterr().err


def test_keyframe_snap_flag_moves_samples_to_keyframes_and_says_so(tmp_path, capsys):
    path = mf.video(tmp_path / "gop.mp4", duration=2.0, gop=10)  # keyframes every 10 frames
    assert launch.main(["media", str(path), "--json"]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert launch.main(["media", str(path), "--json", "--keyframe-snap", "0.4"]) == 0
    snapped = json.loads(capsys.readouterr().out)
    moved = [(a, b) for a, b in zip(exact["frame_indices"], snapped["frame_indices"], strict=True) if a != b]
    assert moved and all(b % 10 == 0 and abs(a - b) <= 2.5 for a, b in moved)
    assert any("keyframe" in note for note in snapped["notes"])
    assert launch.main(["media", str(path), "--keyframe-snap", "0.7"]) == 2  # out of range: a clear error
    assert "keyframe_snap" in capsys.readouterr().err
