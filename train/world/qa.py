"""Captions and question-answer pairs for synthetic-world scenes, and a free-text answer scorer.

Every QA has a short canonical ``answer`` ("red", "two", "left", "high", "beeping", "yes"), a
full-sentence form, and scoring data: ``keywords`` is a list of groups, each a list of
alternatives, and an answer is right when every group has a whole-word match and no word of
``distractors`` appears (so "red" is right for "It is red." and wrong for "red or blue").
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np

from train.world.scene import COLOURS, PATTERNS, SHAPES, Scene, Shape, SoundSegment

SKILLS = ("colour", "shape", "count", "motion", "temporal_order", "sound_pitch", "sound_pattern",
          "audio_visual", "description", "two_part")
# what a video without its sound cannot answer
SOUND_SKILLS = ("sound_pitch", "sound_pattern", "audio_visual", "two_part")

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
MOTION_PHRASE = {"left": "moves to the left", "right": "moves to the right", "up": "moves up",
                 "down": "moves down", "still": "stays still", "bouncing": "bounces up and down"}
MOTION_VERB = {"left": "move to the left", "right": "move to the right", "up": "move up",
               "down": "move down", "still": "stay still", "bouncing": "bounce"}
MOTION_WORDS = {"left": ["left"], "right": ["right"], "up": ["up", "upward", "upwards"],
                "down": ["down", "downward", "downwards"],
                "still": ["still", "stationary", "not moving", "does not move", "doesn't move"],
                "bouncing": ["bouncing", "bounces", "bounce"]}
# What must not appear in an answer about each motion ("bounces up and down" contains up/down).
MOTION_WRONG = {"left": ["right", "up", "down", "still", "bouncing", "bounces"],
                "right": ["left", "up", "down", "still", "bouncing", "bounces"],
                "up": ["down", "left", "right", "still", "bouncing", "bounces"],
                "down": ["up", "left", "right", "still", "bouncing", "bounces"],
                "still": ["left", "right", "up", "down", "bouncing", "bounces"],
                "bouncing": ["left", "right", "still"]}
PATTERN_WORDS = {"steady": ["steady", "constant", "continuous"], "beeping": ["beeping", "beeps", "beep"],
                 "rising": ["rising", "rises", "goes up"], "falling": ["falling", "falls", "goes down"],
                 "silent": ["silent", "silence", "no sound", "nothing", "quiet"]}
PATTERN_NOUN = {"steady": "a steady tone", "beeping": "beeping", "rising": "a rising sweep",
                "falling": "a falling sweep", "silent": "silence"}
YES, NO = [["yes"]], ["no"]


@dataclass
class QA:
    skill: str
    question: str
    answer: str  # short canonical answer
    full: str  # full-sentence answer
    keywords: list[list[str]]  # every group needs one whole-word match
    distractors: list[str] = field(default_factory=list)  # any whole-word match makes it wrong
    kind: str = "open"  # "open" or "yes_no"


def score_answer(qa: QA, text: str) -> bool:
    """True when free ``text`` answers ``qa`` right (see the module docstring)."""
    low = " " + re.sub(r"[^a-z0-9']+", " ", text.lower()) + " "

    def has(word: str) -> bool:
        return f" {word.lower()} " in low

    return all(any(has(w) for w in group) for group in qa.keywords) and not any(has(w) for w in qa.distractors)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _balanced(rng: np.random.Generator, true_options: list, false_options: list):
    """A true option or a false one, each half of the time when both exist."""
    if true_options and (not false_options or rng.random() < 0.5):
        return _pick(rng, true_options)
    return _pick(rng, false_options)


def _yes_no(skill: str, question: str, truth: bool, fact: str) -> QA:
    """A yes/no QA whose full answer states what the clip shows, then the verdict.

    "The circle is red, so no.": the frozen LLM names the attribute first (as it does for an
    open question) and then only has to compare two words of its own context, instead of
    deciding yes or no from the media tokens at the first answer token. ``fact`` must hold
    whatever the claim and must not contain the word "yes" (nor "no" when the claim is true).
    """
    if truth:
        return QA(skill, question, "yes", f"{fact}, so yes.", YES, NO, "yes_no")
    return QA(skill, question, "no", f"{fact}, so no.", [["no"]], ["yes"], "yes_no")


def _listing(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" and {words[-1]}"


def _distinct(values) -> list:
    return list(dict.fromkeys(values))


def _the(s: Shape) -> str:
    return f"the {s.colour} {s.shape}"


# -- captions ------------------------------------------------------------------------
def _shape_clause(s: Shape, duration: float) -> str:
    verb = MOTION_PHRASE[s.motion]
    if s.appear > 0:
        verb = f"appears later and {verb}"
    if s.leave < duration:
        verb += ", then leaves"
    return verb


def _sound_sentence(scene: Scene) -> str:
    if scene.sound_mode == "silent" or not scene.sounds:
        return "There is no sound."
    parts = []
    for seg in scene.sounds:
        if seg.pattern in ("rising", "falling"):
            way = "rises from low to high" if seg.pattern == "rising" else "falls from high to low"
            parts.append(f"A tone {way}")
        elif seg.event_shape is None:
            parts.append(f"A {seg.pitch} {seg.pattern} tone plays throughout")
        else:
            what = "appears" if seg.event_kind == "appear" else "leaves"
            parts.append(f"A {seg.pitch} {seg.pattern} tone plays when {_the(scene.shapes[seg.event_shape])} {what}")
    return ". ".join(parts) + "."


def captions(scene: Scene) -> list[str]:
    """Three phrasings of one description; the first is canonical."""
    order = sorted(scene.shapes, key=lambda s: s.appear)
    dur = scene.config.duration
    forms = ["A {size} {colour} {shape} {rest}.", "There is a {size} {colour} {shape} that {rest}.",
             "We see a {size} {colour} {shape}; it {rest}."]
    out = []
    for form in forms:
        body = " ".join(form.format(size=s.size, colour=s.colour, shape=s.shape, rest=_shape_clause(s, dur))
                        for s in order)
        out.append(f"{body} {_sound_sentence(scene)}")
    return out


# -- visual skills -------------------------------------------------------------------
def qa_colour(scene: Scene, rng) -> list[QA]:
    s = _pick(rng, scene.shapes)
    others = [c for c in COLOURS if c != s.colour]
    q = _pick(rng, ["What colour is the {0}?", "Which colour does the {0} have?", "What is the colour of the {0}?",
                    "Tell me the colour of the {0}."]).format(s.shape)
    out = [QA("colour", q, s.colour, f"The {s.shape} is {s.colour}.", [[s.colour]], others)]
    present = {x.colour for x in scene.shapes}
    c = _balanced(rng, [s.colour], others)
    if rng.random() < 0.5:
        out.append(_yes_no("colour", f"Is the {s.shape} {c}?", c == s.colour, f"The {s.shape} is {s.colour}"))
    else:
        c = _balanced(rng, sorted(present), [x for x in COLOURS if x not in present])
        colours = _distinct(x.colour for x in scene.shapes)
        fact = f"The shape is {colours[0]}" if len(scene.shapes) == 1 else f"The shapes are {_listing(colours)}"
        out.append(_yes_no("colour", f"Is there a {c} shape in the video?", c in present, fact))
    return out


def qa_shape(scene: Scene, rng) -> list[QA]:
    s = _pick(rng, scene.shapes)
    others = [x for x in SHAPES if x != s.shape]
    q = _pick(rng, ["What shape is the {0} object?", "Which shape is {0}?", "What is the {0} thing?",
                    "What kind of shape is the {0} one?"]).format(s.colour)
    out = [QA("shape", q, s.shape, f"The {s.colour} object is a {s.shape}.", [[s.shape]], others)]
    present = {x.shape for x in scene.shapes}
    if rng.random() < 0.5:
        k = _balanced(rng, sorted(present), [x for x in SHAPES if x not in present])
        kinds = [f"a {x}" for x in _distinct(x.shape for x in scene.shapes)]
        out.append(_yes_no("shape", f"Is there a {k} in the video?", k in present,
                           f"The video shows {_listing(kinds)}"))
    else:
        k = _balanced(rng, [s.shape], others)
        out.append(_yes_no("shape", f"Is the {s.colour} object a {k}?", k == s.shape,
                           f"The {s.colour} object is a {s.shape}"))
    return out


def qa_count(scene: Scene, rng) -> list[QA]:
    n = len(scene.shapes)
    word = NUMBER_WORDS[n]
    wrong = [w for k, w in NUMBER_WORDS.items() if k != n] + [str(k) for k in NUMBER_WORDS if k != n]
    q = _pick(rng, ["How many shapes are there?", "How many objects appear in the video?",
                    "Count the shapes in the video.", "How many different shapes do you see?"])
    noun = "shape" if n == 1 else "shapes"
    out = [QA("count", q, word, f"There {'is' if n == 1 else 'are'} {word} {noun}.", [[word, str(n)]], wrong)]
    k = _balanced(rng, [n], [x for x in (1, 2, 3) if x != n])
    k_noun = "shape" if k == 1 else "shapes"
    out.append(_yes_no("count", f"{'Is' if k == 1 else 'Are'} there {NUMBER_WORDS[k]} {k_noun} in the video?",
                       k == n, f"There {'is' if n == 1 else 'are'} {word} {noun}"))
    return out


def qa_motion(scene: Scene, rng) -> list[QA]:
    s = _pick(rng, scene.shapes)
    q = _pick(rng, ["Which way does the {0} move?", "How does the {0} move?", "In which direction is the {0} moving?",
                    "What is the {0} doing?"]).format(s.name)
    out = [QA("motion", q, s.motion, f"The {s.name} {MOTION_PHRASE[s.motion]}.", [MOTION_WORDS[s.motion]],
              MOTION_WRONG[s.motion])]
    m = _balanced(rng, [s.motion], [x for x in MOTION_VERB if x != s.motion])
    out.append(_yes_no("motion", f"Does the {s.name} {MOTION_VERB[m]}?", m == s.motion,
                       f"The {s.name} {MOTION_PHRASE[s.motion]}"))
    return out


def qa_temporal(scene: Scene, rng) -> list[QA]:
    dur = scene.config.duration
    shapes = list(scene.shapes)
    pairs = [(a, b) for a in shapes for b in shapes if b.appear - a.appear >= 1.0]
    out = []
    if pairs:
        first, later = _pick(rng, pairs)
        x, y = (first, later) if rng.random() < 0.5 else (later, first)
        if rng.random() < 0.5:
            q, ans, wrong = f"Which appears first, {_the(x)} or {_the(y)}?", first, later
            full = f"{_the(first).capitalize()} appears first."
        else:
            q, ans, wrong = f"Which appears later, {_the(x)} or {_the(y)}?", later, first
            full = f"{_the(later).capitalize()} appears later."
        keys = [[ans.colour], [ans.shape]]
        out.append(QA("temporal_order", q, f"the {ans.name}", full, keys, [wrong.colour, wrong.shape]))
    else:
        s = _pick(rng, shapes)
        q = f"When does {_the(s)} appear: at the start or later?"
        if s.appear == 0:
            out.append(QA("temporal_order", q, "at the start", f"{_the(s).capitalize()} is there from the start.",
                          [["start", "beginning"]], ["later"]))
        else:
            out.append(QA("temporal_order", q, "later", f"{_the(s).capitalize()} appears later.",
                          [["later", "after"]], ["start", "beginning"]))
    s = _pick(rng, shapes)
    if rng.random() < 0.5:
        fact = "is there from the beginning" if s.appear == 0 else "appears later"
        out.append(_yes_no("temporal_order", f"Is {_the(s)} there from the beginning?", s.appear == 0,
                           f"{_the(s).capitalize()} {fact}"))
    else:
        fact = "leaves before the end" if s.leave < dur else "stays until the end"
        out.append(_yes_no("temporal_order", f"Does {_the(s)} leave before the end?", s.leave < dur,
                           f"{_the(s).capitalize()} {fact}"))
    return out


# -- sound skills --------------------------------------------------------------------
def _when(scene: Scene, seg: SoundSegment) -> str:
    what = "appears" if seg.event_kind == "appear" else "leaves"
    return f"when {_the(scene.shapes[seg.event_shape])} {what}"


def qa_pitch(scene: Scene, rng) -> list[QA]:
    tones = [s for s in scene.sounds if s.pitch is not None]
    out = []
    if tones and len({s.pitch for s in tones}) == 1:
        p = tones[0].pitch
        other = "low" if p == "high" else "high"
        q = _pick(rng, ["Is the sound high or low?", "What is the pitch of the tone?",
                        "Is the tone high-pitched or low-pitched?", "Is the sound you hear low or high in pitch?"])
        out.append(QA("sound_pitch", q, p, f"The tone is {p}-pitched.", [[p]], [other]))
    elif tones:
        seg = _pick(rng, tones)
        other = "low" if seg.pitch == "high" else "high"
        out.append(QA("sound_pitch", f"Is the sound {_when(scene, seg)} high or low?", seg.pitch,
                      f"The sound {_when(scene, seg)} is {seg.pitch}-pitched.", [[seg.pitch]], [other]))
    sweeps = [s for s in scene.sounds if s.pitch is None]
    if sweeps:
        end = "high" if sweeps[0].pattern == "rising" else "low"
        other = "low" if end == "high" else "high"
        out.append(QA("sound_pitch", "Does the sound end high or low?", end, f"The sound ends {end}.",
                      [[end]], [other]))
    present = sorted({s.pitch for s in tones})
    p = _balanced(rng, present, [x for x in ("low", "high") if x not in present])
    if not scene.sounds:
        fact = "The video is silent"
    elif not present:
        fact = f"The sound is {PATTERN_NOUN[sweeps[0].pattern]}"
    elif len(present) == 1:
        fact = f"The tone is {present[0]}-pitched"
    else:
        fact = "There are high and low tones"
    out.append(_yes_no("sound_pitch", f"Is there a {p}-pitched tone?", p in present, fact))
    return out


def _pattern_qa(question: str, pattern: str, full: str) -> QA:
    wrong = [w for p in PATTERNS if p != pattern for w in PATTERN_WORDS[p][:2]]
    return QA("sound_pattern", question, pattern, full, [PATTERN_WORDS[pattern]], wrong)


def qa_pattern(scene: Scene, rng) -> list[QA]:
    patterns = {s.pattern for s in scene.sounds} or {"silent"}
    if len(patterns) == 1:
        p = next(iter(patterns))
        if p in ("steady", "beeping"):
            q = _pick(rng, ["Is the sound steady or beeping?", "What kind of sound is it?",
                            "Describe the sound pattern.", "Does the tone beep or stay steady?"])
        elif p in ("rising", "falling"):
            q = _pick(rng, ["Does the pitch rise or fall?", "What kind of sound is it?", "Describe the sound pattern."])
        else:
            q = _pick(rng, ["What do you hear?", "What kind of sound is there?", "Describe the sound."])
        out = [_pattern_qa(q, p, f"The sound is {PATTERN_NOUN[p]}." if p != "silent" else "The video is silent.")]
    else:
        seg = _pick(rng, scene.sounds)
        out = [_pattern_qa(f"Is the sound {_when(scene, seg)} steady or beeping?", seg.pattern,
                           f"The sound {_when(scene, seg)} is {PATTERN_NOUN[seg.pattern]}.")]
    askable = ["beeping", "silent", "rising", "steady"]
    ask = _balanced(rng, [a for a in askable if a in patterns], [a for a in askable if a not in patterns])
    question = {"beeping": "Is there a beeping sound?", "silent": "Is the video silent?",
                "rising": "Does the pitch rise?", "steady": "Is there a steady tone?"}[ask]
    if "silent" in patterns:
        fact = "The video is silent"
    elif len(patterns) == 1:
        fact = f"The sound is {PATTERN_NOUN[next(iter(patterns))]}"
    else:
        fact = f"The video has {_listing([PATTERN_NOUN[p] for p in sorted(patterns)])}"
    out.append(_yes_no("sound_pattern", question, ask in patterns, fact))
    return out


def _sound_words(seg: SoundSegment) -> tuple[str, list[list[str]], list[str]]:
    """Short answer, keyword groups and distractors naming one sound segment."""
    if seg.pitch is None:
        return seg.pattern, [PATTERN_WORDS[seg.pattern]], ["falling" if seg.pattern == "rising" else "rising"]
    other = "low" if seg.pitch == "high" else "high"
    wrong = [other] + [w for p in ("steady", "beeping") if p != seg.pattern for w in PATTERN_WORDS[p][:2]]
    return f"{seg.pitch} {seg.pattern}", [[seg.pitch], PATTERN_WORDS[seg.pattern]], wrong


def qa_audio_visual(scene: Scene, rng) -> list[QA]:
    dur = scene.config.duration
    events = [(i, "appear") for i, s in enumerate(scene.shapes) if s.appear > 0]
    events += [(i, "leave") for i, s in enumerate(scene.shapes) if s.leave < dur]
    out = []
    tied = [s for s in scene.sounds if s.event_shape is not None]
    if tied:
        seg = _pick(rng, tied)
        ans, keys, wrong = _sound_words(seg)
        q = _pick(rng, ["What sound do you hear {0}?", "What sound plays {0}?", "What do you hear {0}?"])
        out.append(QA("audio_visual", q.format(_when(scene, seg)), ans,
                      f"A {ans} tone plays {_when(scene, seg)}.", keys, wrong))
    else:
        s = _pick(rng, scene.shapes)
        if scene.sounds:
            ans, keys, wrong = _sound_words(scene.sounds[0])
            full = f"While {_the(s)} {MOTION_PHRASE[s.motion]}, you hear a {ans} sound."
        else:
            ans, keys, wrong = "silence", [PATTERN_WORDS["silent"]], ["beep", "beeping", "beeps"]
            full = f"There is no sound while {_the(s)} {MOTION_PHRASE[s.motion]}."
        out.append(QA("audio_visual", f"What do you hear while {_the(s)} {MOTION_PHRASE[s.motion]}?", ans, full,
                      keys, wrong))
    if events:
        sounded = [e for e in events if scene.shape_event_sounds(*e)]
        i, kind = _balanced(rng, sounded, [e for e in events if e not in sounded])
        what = "appears" if kind == "appear" else "leaves"
        name = _the(scene.shapes[i])
        truth = bool(scene.shape_event_sounds(i, kind))
        q = _pick(rng, ["Is there a sound when {0} {1}?", "Does a sound start when {0} {1}?"]).format(name, what)
        fact = f"No sound starts when {name} {what}"
        if truth:
            fact = f"A {_sound_words(scene.shape_event_sounds(i, kind)[0])[0]} tone starts when {name} {what}"
        out.append(_yes_no("audio_visual", q, truth, fact))
    return out


def qa_description(scene: Scene, rng) -> list[QA]:
    """A free description: right when it names every shape, its colour and its motion, and the
    sound (its pattern, and the pitch of a tone; silence for a silent clip), and no shape or
    colour that is not there."""
    caps = captions(scene)
    q = _pick(rng, ["Describe the video.", "What happens in this video?", "Describe what you see and hear.",
                    "Give a short description of the clip."])
    keys, absent = _description_words(scene.shapes)
    keys += [MOTION_WORDS[s.motion] for s in scene.shapes]
    if scene.sounds:
        keys += [group for seg in scene.sounds for group in _sound_words(seg)[1]]
    else:
        keys.append(PATTERN_WORDS["silent"])
    return [QA("description", q, caps[0], caps[0], keys, absent)]


def qa_two_part(scene: Scene, rng) -> list[QA]:
    """A question in two parts, the shape's colour and the sound ("What colour is the shape, and
    what do you hear?"): right only when the answer gives both, each right. Asked about clips
    with one shape and at most one sound, where each part has one answer."""
    if len(scene.shapes) != 1 or len(scene.sounds) > 1:
        return []
    s = scene.shapes[0]
    if scene.sounds:
        seg = scene.sounds[0]
        _, sound_keys, sound_wrong = _sound_words(seg)
        heard = f"a {seg.pitch} {seg.pattern} tone" if seg.pitch is not None else PATTERN_NOUN[seg.pattern]
    else:
        sound_keys = [PATTERN_WORDS["silent"]]
        sound_wrong = [w for p in PATTERNS if p != "silent" for w in PATTERN_WORDS[p][:2]]
        heard = "no sound"
    q = _pick(rng, ["What colour is the shape, and what do you hear?",
                    "What colour is the {0}, and what sound do you hear?",
                    "Tell me the colour of the {0} and what the sound is like."]).format(s.shape)
    wrong = [c for c in COLOURS if c != s.colour] + sound_wrong
    return [QA("two_part", q, f"{s.colour}, and {heard}", f"The {s.shape} is {s.colour}, and I hear {heard}.",
               [[s.colour], *sound_keys], wrong)]


def _description_words(shapes: list[Shape]) -> tuple[list[list[str]], list[str]]:
    """What a right description names (each shape and each colour shown) and what it may not
    name (every other colour and shape)."""
    keys = [[s.colour] for s in shapes] + [[s.shape] for s in shapes]
    absent = [c for c in COLOURS if c not in {s.colour for s in shapes}]
    absent += [k for k in SHAPES if k not in {s.shape for s in shapes}]
    return keys, absent


SKILL_BUILDERS = {"colour": qa_colour, "shape": qa_shape, "count": qa_count, "motion": qa_motion,
                  "temporal_order": qa_temporal, "sound_pitch": qa_pitch, "sound_pattern": qa_pattern,
                  "audio_visual": qa_audio_visual, "description": qa_description, "two_part": qa_two_part}
assert tuple(SKILL_BUILDERS) == SKILLS


def make_qa(scene: Scene, rng: np.random.Generator) -> list[QA]:
    """Questions for every skill (one to three each), phrasings drawn from ``rng``."""
    return [qa for skill in SKILLS for qa in SKILL_BUILDERS[skill](scene, rng)]


# -- still images: one frame of a scene --------------------------------------------------
IMAGE_SKILLS = ("colour", "shape", "count")  # what one frame can answer


def frame_scene(scene: Scene, t: float) -> Scene:
    """The scene as one still frame at ``t``: the shapes visible then, nothing moving, no sound."""
    dur = scene.config.duration
    shapes = [dataclasses.replace(s, motion="still", start_xy=s.position(t, dur), end_xy=s.position(t, dur),
                                  appear=0.0, leave=dur, bounce_period=0.0, bounce_height=0.0)
              for s in scene.shapes if s.visible(t)]
    return dataclasses.replace(scene, shapes=shapes, sounds=[], sound_mode="silent")


def _as_image(qa: QA) -> QA:
    # The video phrasings, said of a picture ("Is there a red shape in the image?").
    return dataclasses.replace(qa, question=qa.question.replace("video", "image"),
                               full=qa.full.replace("video", "image"))


def image_caption(still: Scene) -> str:
    """What a still frame shows: "A large red circle and a small blue star." (left to right)."""
    if not still.shapes:
        return "An empty plain background."
    order = sorted(still.shapes, key=lambda s: s.start_xy)
    text = _listing([f"a {s.size} {s.colour} {s.shape}" for s in order])
    return text[0].upper() + text[1:] + "."


def qa_image_description(still: Scene, rng: np.random.Generator) -> QA:
    """"Describe the image." answered with ``image_caption``: scored, like the video's
    description, on naming every shape and colour shown and no colour or shape that is not."""
    q = _pick(rng, ["Describe the image.", "What is in this picture?", "What do you see in the image?",
                    "Give a short description of the image."])
    text = image_caption(still)
    return QA("description", q, text, text, *_description_words(still.shapes))


def image_qa(still: Scene, rng: np.random.Generator) -> list[QA]:
    """Colour, shape and count questions about a still frame (``frame_scene``) with at least one
    shape, phrased for an image, then one description question (drawn last, so the others stay
    what they were before it was added)."""
    if not still.shapes:
        raise ValueError("a frame without shapes has no image questions; pick a time when a shape is visible")
    qas = [_as_image(qa) for skill in IMAGE_SKILLS for qa in SKILL_BUILDERS[skill](still, rng)]
    return qas + [qa_image_description(still, rng)]
