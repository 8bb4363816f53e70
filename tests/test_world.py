"""The synthetic world: determinism, pixel/frequency labels, QA consistency, splits, files."""

from __future__ import annotations

import json
import os
import re

import av
import numpy as np
import pytest

from train.world.data import make_dataset, make_item, read_manifest, write_dataset
from train.world.qa import MOTION_PHRASE, NUMBER_WORDS, QA, SKILLS, score_answer
from train.world.render import render_arrays, render_clip, render_ffmpeg_clip
from train.world.scene import (
    HELDOUT_PAIRS,
    HIGH_HZ,
    LOW_HZ,
    PALETTE,
    Scene,
    sample_scene,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ITEMS = make_dataset(seed=3, n_clips=60, split="train")


def dominant_hz(wave: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sample_rate)[int(np.argmax(spectrum))])


def nearest_colour(rgb) -> str:
    return min(PALETTE, key=lambda c: sum((int(a) - b) ** 2 for a, b in zip(rgb, PALETTE[c], strict=True)))


def pack(rgb) -> int:
    return int(rgb[0]) << 16 | int(rgb[1]) << 8 | int(rgb[2])


def packed_rgb(frames: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) int32, one number per colour."""
    f = frames.astype(np.int32)
    return f[..., 0] << 16 | f[..., 1] << 8 | f[..., 2]


def decode(path) -> tuple[np.ndarray, np.ndarray, int]:
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        chunks = [f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    return frames, np.concatenate(chunks), rate


# -- determinism ---------------------------------------------------------------------
def test_same_seed_same_scene_arrays_and_qa():
    a, b = make_item(7, "train", 4), make_item(7, "train", 4)
    assert a.to_dict() == b.to_dict()
    fa, _, wa, _ = render_arrays(a.scene)
    fb, _, wb, _ = render_arrays(b.scene)
    assert np.array_equal(fa, fb) and np.array_equal(wa, wb)
    assert make_item(8, "train", 4).to_dict() != a.to_dict()


def test_scene_dict_round_trip_renders_the_same():
    scene = ITEMS[5].scene
    again = Scene.from_dict(json.loads(json.dumps(scene.to_dict())))
    assert np.array_equal(render_arrays(again)[0], render_arrays(scene)[0])
    with pytest.raises(ValueError, match="scene description"):
        Scene.from_dict({"shapes": []})


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="unknown split"):
        sample_scene(np.random.default_rng(0), split="validation")


# -- pixels --------------------------------------------------------------------------
def test_shape_centres_have_their_colour_and_frames_hold_exactly_the_visible_shapes():
    for item in ITEMS[:30]:
        scene = item.scene
        frames, fps, _, _ = render_arrays(scene)
        assert frames.shape == (32, 224, 224, 3) and frames.dtype == np.uint8
        for k in (0, 9, 17, 31):
            t = k / fps
            visible = [s for s in scene.shapes if s.visible(t)]
            for s in visible:
                x, y = s.position(t, scene.config.duration)
                assert tuple(frames[k, int(round(y)), int(round(x))]) == s.rgb
            colours = set(np.unique(packed_rgb(frames[k])).tolist()) - {pack(scene.background)}
            assert colours == {pack(s.rgb) for s in visible}  # the count of visible shapes is right


def test_rendered_motion_matches_label():
    seen = set()
    for item in ITEMS:
        frames, fps, _, _ = render_arrays(item.scene)
        packed = packed_rgb(frames)  # (N, H, W)
        for s in item.scene.shapes:
            ks = [k for k in range(len(frames)) if s.visible(k / fps)]
            centres = [np.argwhere(packed[k] == pack(s.rgb)).mean(0) for k in ks]  # (y, x)
            dy, dx = centres[-1] - centres[0]
            ys = [c[0] for c in centres]
            expected = {"left": dx < -20, "right": dx > 20, "up": dy < -20, "down": dy > 20,
                        "still": abs(dx) < 1 and abs(dy) < 1,
                        "bouncing": abs(dx) < 1 and max(ys) - min(ys) > 20}[s.motion]
            assert expected, (s.motion, dx, dy)
            seen.add(s.motion)
    assert seen == {"left", "right", "up", "down", "still", "bouncing"}


# -- sound ---------------------------------------------------------------------------
def test_tone_segments_have_the_labelled_pitch_and_pattern():
    checked = set()
    for item in ITEMS:
        scene = item.scene
        _, _, wave, sr = render_arrays(scene)
        if scene.sound_mode == "silent":
            assert not wave.any()
        for seg in scene.sounds:
            part = wave[int(seg.start * sr):int(seg.end * sr)]
            if seg.pitch is not None:
                lo, hi = LOW_HZ if seg.pitch == "low" else HIGH_HZ
                assert lo - 10 <= dominant_hz(part, sr) <= hi + 10
                rms = np.sqrt((part[: len(part) // 160 * 160].reshape(-1, 160) ** 2).mean(1))  # 10 ms windows
                quiet = float((rms < 0.02).mean())
                assert (quiet > 0.3) if seg.pattern == "beeping" else (quiet < 0.05)
            else:
                quarter = len(part) // 4
                f0, f1 = dominant_hz(part[:quarter], sr), dominant_hz(part[-quarter:], sr)
                assert (f1 > 2 * f0) if seg.pattern == "rising" else (f0 > 2 * f1)
            checked.add(seg.pattern)
        if scene.sound_mode == "event":  # silence until the first event the sound is tied to
            first = scene.sounds[0]
            assert first.start == scene.shapes[first.event_shape].appear or first.event_kind == "leave"
            assert not wave[: int(first.start * sr)].any() and wave[int(first.start * sr):].any()
    assert checked == {"steady", "beeping", "rising", "falling"}


# -- questions -----------------------------------------------------------------------
def _named_shape(scene, question):
    hits = [s for s in scene.shapes if f"{s.colour} {s.shape}" in question]
    return hits[0] if len(hits) == 1 else None


def test_qa_answers_agree_with_the_scene():
    for item in ITEMS:
        scene, qa = item.scene, item.qa
        # every skill is asked; two-part questions only where each part has one answer
        single = len(scene.shapes) == 1 and len(scene.sounds) <= 1
        assert {q.skill for q in qa} == set(SKILLS) - (set() if single else {"two_part"})
        for q in qa:
            assert score_answer(q, q.answer) and score_answer(q, q.full), q
            if m := re.fullmatch(r"What colour is the (\w+)\?", q.question):
                assert q.answer == next(s.colour for s in scene.shapes if s.shape == m[1])
            if m := re.fullmatch(r"Is there a (\w+) shape in the video\?", q.question):
                assert q.answer == ("yes" if any(s.colour == m[1] for s in scene.shapes) else "no")
            if m := re.fullmatch(r"Is there a (\w+) in the video\?", q.question):
                assert q.answer == ("yes" if any(s.shape == m[1] for s in scene.shapes) else "no")
            if q.skill == "count" and q.kind == "open":
                assert q.answer == NUMBER_WORDS[len(scene.shapes)]
            if q.skill == "motion" and q.kind == "open":
                assert q.answer == _named_shape(scene, q.question).motion
            if q.question.startswith("Which appears first"):
                first = min(scene.shapes, key=lambda s: s.appear if s.name in q.question else 99)
                assert q.answer == f"the {first.name}"
            if q.question == "Is the sound high or low?":
                assert {s.pitch for s in scene.sounds} == {q.answer}
            if q.question == "Is the video silent?":
                assert q.answer == ("yes" if not scene.sounds else "no")


def test_yes_no_answers_state_what_the_clip_shows_then_the_verdict():
    """The fact before the verdict holds whatever the claim; the verdict matches the truth."""
    seen = set()
    for item in ITEMS:
        scene = item.scene
        for q in item.qa:
            if q.kind != "yes_no":
                continue
            fact, verdict = q.full.rsplit(", so ", 1)
            assert verdict == f"{q.answer}." and "yes" not in fact.lower().split()
            if q.skill == "colour" and (m := re.fullmatch(r"Is the (\w+) (\w+)\?", q.question)):
                colour = next(s.colour for s in scene.shapes if s.shape == m[1])
                assert fact == f"The {m[1]} is {colour}" and (q.answer == "yes") == (m[2] == colour)
                seen.add("colour")
            if m := re.fullmatch(r"Is the (\w+) object a (\w+)\?", q.question):
                shape = next(s.shape for s in scene.shapes if s.colour == m[1])
                assert fact == f"The {m[1]} object is a {shape}" and (q.answer == "yes") == (m[2] == shape)
                seen.add("shape")
            if q.skill == "count":
                assert NUMBER_WORDS[len(scene.shapes)] in fact.split()
                seen.add("count")
            if q.skill == "motion":
                assert fact.endswith(MOTION_PHRASE[_named_shape(scene, q.question).motion])
                seen.add("motion")
            if q.question == "Is the video silent?":
                assert (fact == "The video is silent") == (not scene.sounds)
                seen.add("silent")
    assert seen == {"colour", "shape", "count", "motion", "silent"}


def test_yes_no_questions_include_false_premises():
    answers = [q.answer for item in ITEMS for q in item.qa if q.kind == "yes_no"]
    assert 0.3 < answers.count("no") / len(answers) < 0.7


def test_score_answer_counts_right_and_wrong():
    colour = QA("colour", "What colour is the circle?", "red", "The circle is red.", [["red"]], ["blue", "green"])
    assert score_answer(colour, "Red.") and score_answer(colour, "the circle is RED")
    assert not score_answer(colour, "blue") and not score_answer(colour, "red or blue")
    assert not score_answer(colour, "reddish")  # whole words only
    count = QA("count", "How many?", "two", "There are two shapes.", [["two", "2"]], ["one", "three"])
    assert score_answer(count, "2") and not score_answer(count, "three")
    both = QA("audio_visual", "?", "high beeping", "", [["high"], ["beeping", "beep"]], ["low"])
    assert score_answer(both, "a high beep") and not score_answer(both, "high") and not score_answer(both, "low beep")


# -- splits --------------------------------------------------------------------------
def test_heldout_split_is_disjoint_from_training():
    test_items = make_dataset(seed=3, n_clips=40, split="test")
    for item in ITEMS:
        assert not {(s.colour, s.shape) for s in item.scene.shapes} & HELDOUT_PAIRS
    for item in test_items:
        assert {(s.colour, s.shape) for s in item.scene.shapes} & HELDOUT_PAIRS
    train_scenes = {json.dumps(i.scene.to_dict(), sort_keys=True) for i in ITEMS}
    assert not train_scenes & {json.dumps(i.scene.to_dict(), sort_keys=True) for i in test_items}


# -- files ---------------------------------------------------------------------------
def test_mp4_decodes_with_drawn_colours_and_pitch(tmp_path):
    item = next(i for i in ITEMS if i.scene.sound_mode == "ambient" and i.scene.sounds[0].pitch
                and i.scene.sounds[0].pattern == "steady" and any(s.size == "large" for s in i.scene.shapes))
    path = render_clip(item.scene, tmp_path / "clip.mp4")
    frames, wave, rate = decode(path)
    assert frames.shape == (32, 224, 224, 3)
    s = next(s for s in item.scene.shapes if s.size == "large")
    k = next(k for k in range(32) if s.visible(k / 8))
    x, y = s.position(k / 8, 4.0)
    assert np.abs(frames[k, int(round(y)), int(round(x))].astype(int) - s.rgb).max() < 25
    seg = item.scene.sounds[0]
    assert rate == 16000 and abs(dominant_hz(wave[4000:60000], rate) - seg.freq) < 5


def test_world_tones_cover_the_eval_sine_range_octave_by_octave():
    """The eval's ffmpeg sine tones (evaluation.toy_world.ANOTHER_WAY_HZ) fall inside the world's
    pitch classes, and the world's tones fill each class evenly per octave: a model that only ever
    heard 900-1500 Hz called 2-5 kHz tones low."""
    from evaluation.toy_world import ANOTHER_WAY_HZ

    for pitch, (lo, hi) in ANOTHER_WAY_HZ.items():
        world_lo, world_hi = LOW_HZ if pitch == "low" else HIGH_HZ
        assert world_lo <= lo and hi <= world_hi, pitch
    freqs = {"low": [], "high": []}
    for i in range(400):
        for seg in sample_scene(np.random.default_rng([5, i]), split="train").sounds:
            if seg.pitch is not None:
                freqs[seg.pitch].append(seg.freq)
    for pitch, (lo, hi) in (("low", LOW_HZ), ("high", HIGH_HZ)):
        octaves = np.log2(np.array(freqs[pitch]) / lo) / np.log2(hi / lo)  # 0..1 across the class
        halves = np.histogram(octaves, bins=2, range=(0, 1))[0]
        assert len(freqs[pitch]) > 50 and halves.min() > 0.35 * halves.sum(), (pitch, halves)


@pytest.mark.parametrize(("colour", "pitch", "shape"), [("red", "high", "square"), ("green", "low", "circle"),
                                                        ("blue", "low", "square"), ("yellow", "high", "circle")])
def test_ffmpeg_drawn_clip_has_expected_colour_and_pitch(tmp_path, colour, pitch, shape):
    labels = render_ffmpeg_clip(colour, pitch, tmp_path / "ff.mp4", shape=shape)
    frames, wave, rate = decode(labels["path"])
    assert len(frames) == 32
    centre = frames[16, 112, 112]
    corner = frames[16, 5, 5]
    assert nearest_colour(centre) == colour and np.abs(corner.astype(int) - 0x30).max() < 12
    hz = dominant_hz(wave[: rate * 3], rate)
    lo, hi = LOW_HZ if pitch == "low" else HIGH_HZ
    assert lo <= hz <= hi and abs(hz - labels["freq_hz"]) < 3


def test_manifest_round_trip_and_bad_line(tmp_path):
    items = make_dataset(seed=1, n_clips=2, split="test")
    manifest = write_dataset(items, tmp_path)
    back = read_manifest(manifest)
    assert [b.to_dict() | {"video": None} for b in back] == [i.to_dict() | {"video": None} for i in items]
    assert all(os.path.exists(b.video) for b in back)
    with manifest.open("a") as f:
        f.write('{"clip_id": "x"}\n')
    with pytest.raises(ValueError, match=r"manifest.jsonl:3"):
        read_manifest(tmp_path)


# -- still images ---------------------------------------------------------------------
def test_a_frame_as_a_still_image_renders_that_frame_and_its_questions_fit_it():
    from train.world.qa import frame_scene, image_caption, image_qa

    checked = 0
    for item in ITEMS[:20]:
        frames, fps, _, _ = render_arrays(item.scene)
        for k in (3, 20, 31):
            still = frame_scene(item.scene, k / fps)
            visible = [s for s in item.scene.shapes if s.visible(k / fps)]
            assert [s.name for s in still.shapes] == [s.name for s in visible]
            # The still scene draws exactly the frame the video showed at that time.
            assert np.array_equal(render_arrays(still)[0][0], frames[k])
            if not visible:
                with pytest.raises(ValueError, match="without shapes"):
                    image_qa(still, np.random.default_rng(0))
                continue
            caption = image_caption(still)
            left_to_right = sorted(visible, key=lambda s: s.position(k / fps, item.scene.config.duration))
            assert caption.lower().rstrip(".").replace(" and ", ", ").split(", ") == [
                f"a {s.size} {s.colour} {s.shape}" for s in left_to_right]
            qas = image_qa(still, np.random.default_rng(k))
            assert {q.skill for q in qas} == {"colour", "shape", "count", "description"}
            assert qas[-1].skill == "description" and qas[-1].answer == caption
            for qa in qas:
                assert "video" not in qa.question + qa.full
                assert score_answer(qa, qa.full) and not score_answer(qa, qa.distractors[0])
                if qa.skill == "count" and qa.kind == "open":
                    assert qa.answer == NUMBER_WORDS[len(visible)]
            checked += 1
    assert checked > 20
