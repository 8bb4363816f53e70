"""Questions whose answers must cover every part: two-part questions and free descriptions."""

from __future__ import annotations

import numpy as np

from train.world.qa import SKILLS, captions, make_qa, qa_description, qa_two_part, score_answer
from train.world.scene import Scene, Shape, SoundSegment, WorldConfig, sample_scene, scene_rng


def _shape(shape="circle", colour="blue", motion="left", appear=0.0):
    return Shape(shape=shape, colour=colour, rgb=(0, 0, 255), size="small", radius=0.1, motion=motion,
                 start_xy=(0.5, 0.5), end_xy=(0.2, 0.5), appear=appear, leave=4.0)


def _scene(shapes, sounds, mode="ambient"):
    return Scene(shapes=shapes, sounds=sounds, background=(40, 40, 40), sound_mode=mode, axis="horizontal",
                 config=WorldConfig())


BEEP = SoundSegment(start=0.0, end=4.0, pattern="beeping", pitch="high", freq=1000.0, freq_end=1000.0)


def test_two_part_answers_count_only_when_both_parts_are_right():
    qa = qa_two_part(_scene([_shape()], [BEEP]), np.random.default_rng(0))[0]
    assert qa.skill == "two_part" and "and" in qa.question
    right = ["Blue, and a high beeping tone.", "The circle is blue. I hear high beeps.",
             qa.answer, qa.full]
    wrong = ["Blue.",  # the answer: the sound part is missing
             "A high beeping tone.",  # the colour part is missing
             "Red, and a high beeping tone.",  # the colour is wrong
             "Blue, and a low beeping tone.",  # the pitch is wrong
             "Blue, and a high steady tone.",  # the pattern is wrong
             "Blue or red, and a high beeping tone."]  # two colours: a guess
    assert [score_answer(qa, a) for a in right] == [True] * len(right)
    assert [score_answer(qa, a) for a in wrong] == [False] * len(wrong)


def test_two_part_about_a_silent_clip_and_sweeps():
    silent = qa_two_part(_scene([_shape(colour="green")], [], mode="silent"), np.random.default_rng(1))[0]
    assert score_answer(silent, "Green, and there is no sound.")
    assert not score_answer(silent, "Green, and a steady tone.")
    assert not score_answer(silent, "There is no sound.")
    sweep = SoundSegment(start=0.0, end=4.0, pattern="rising", pitch=None, freq=300.0, freq_end=1200.0)
    qa = qa_two_part(_scene([_shape(colour="red")], [sweep]), np.random.default_rng(2))[0]
    assert score_answer(qa, "Red, and a rising sweep.") and not score_answer(qa, "Red, and a falling sweep.")
    # two shapes or two sounds: no single answer, so no two-part question
    assert qa_two_part(_scene([_shape(), _shape("square", "red")], [BEEP]), np.random.default_rng(3)) == []


def test_description_must_name_every_shape_colour_motion_and_the_sound():
    scene = _scene([_shape(), _shape("square", "red", "still", appear=1.0)], [BEEP])
    qa = qa_description(scene, np.random.default_rng(0))[0]
    assert score_answer(qa, captions(scene)[0])
    full = "A blue circle moves to the left and a red square stays still. A high beeping tone plays."
    assert score_answer(qa, full)
    misses = ["A blue circle moves to the left and a red square stays still.",  # no sound
              "A blue circle and a red square. A high beeping tone plays.",  # no motion
              "A blue circle moves to the left. A high beeping tone plays.",  # a shape missing
              "A blue circle moves to the left and a green square stays still. A high beeping tone.",  # colour
              "A blue circle moves to the left and a red square stays still. A low beeping tone plays.",  # pitch
              "A blue star moves to the left and a red square stays still. A high beeping tone plays."]  # absent shape
    assert [score_answer(qa, a) for a in misses] == [False] * len(misses)


def test_every_canonical_answer_scores_right_on_many_scenes():
    # Stage 2 teaches open questions either form (train.recipes.OPEN_ANSWERS): both must score right.
    seen = set()
    for i in range(300):
        rng = scene_rng(5, "train", i)
        for qa in make_qa(sample_scene(rng, "train"), rng):
            if qa.kind == "open":
                seen.add(qa.skill)
                assert score_answer(qa, qa.full), (qa.question, qa.full)
                assert score_answer(qa, qa.answer[:1].upper() + qa.answer[1:] + "."), (qa.question, qa.answer)
    assert seen == set(SKILLS)
