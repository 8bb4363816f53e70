"""MVBench's own protocol: frames only inside a question's time window (the notebook's
``get_index`` with a bound), and the official prompt (system prompt, answer pre-filled with
"Best option:(", "(" put back before scoring) as the default, with a plain prompt as the option."""

from __future__ import annotations

import json

import numpy as np
import pytest

import model.chat.engine as engine_module
from evaluation.readers import mvbench
from evaluation.records import Question
from evaluation.runner import ANSWERS, Runner, RunSettings, read_answers
from model.chat.builder import Dialogue, build_prompt
from model.chat.errors import BadRequest
from model.chat.generate import GenerationSettings
from model.chat.prompts import get_template
from model.media import LoadOptions, load_media
from tests import media_factory as mf
from tests.app_helpers import tiny_models


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.fixture(scope="module")
def ramp(tmp_path_factory):
    """2 s at 25 fps: frame n is drawn with luma 16 + 4 n, so a decoded frame tells its index."""
    return mf.video(tmp_path_factory.mktemp("ramp") / "ramp.mp4", source="ramp", duration=2.0)


def _shown(media) -> list[int]:
    return [mf.ramp_index(frame.reshape(-1, 3).mean(0).mean()) for frame in media.frames_uint8]


def _get_index(start: float, end: float, fps: float, last: int, segments: int) -> list[int]:
    """The notebook's MVBench_dataset.get_index, written out for a bound."""
    first, stop = max(0, round(start * fps)), min(round(end * fps), last)
    size = (stop - first) / segments
    return [int(first + size / 2 + np.round(size * k)) for k in range(segments)]


# -- the time window ---------------------------------------------------------------------------

def test_a_window_samples_the_middles_of_its_segments_as_mvbench_does(ramp):
    windowed = load_media(ramp, LoadOptions(num_frames=4, start=0.4, end=1.2))
    assert windowed.frame_indices == _get_index(0.4, 1.2, 25.0, 49, 4) == [12, 17, 22, 27]
    assert _shown(windowed) == [12, 17, 22, 27]  # the decoded pictures are those frames
    assert all(0.4 <= t <= 1.2 for t in windowed.timestamps)
    whole = load_media(ramp, LoadOptions(num_frames=4))
    assert whole.frame_indices == [0, 12, 25, 37]  # without a window: Video-LLaMA's sampling, unchanged
    by_fps = load_media(ramp, LoadOptions(num_frames=8, fps=5, start=0.4, end=1.2))
    assert by_fps.frame_indices == [10, 15, 20, 25, 30]  # one frame every 0.2 s from the window's start
    short = load_media(ramp, LoadOptions(num_frames=4, start=1.0, end=1.1))  # fewer frames than samples
    assert set(short.frame_indices) <= {25, 26, 27, 28} and len(short.frame_indices) == 4
    late = load_media(ramp, LoadOptions(num_frames=2, start=9.0, end=10.0))  # past the end: the last frame
    assert late.frame_indices == [49, 49]


def test_a_window_not_inside_the_video_says_so(ramp):
    late = load_media(ramp, LoadOptions(num_frames=2, start=9.0, end=10.0))
    assert any("starts after the video ends (2.00 s)" in note for note in late.notes)
    over = load_media(ramp, LoadOptions(num_frames=4, start=1.5, end=3.0))
    assert any("runs past the video's end" in note for note in over.notes)
    inside = load_media(ramp, LoadOptions(num_frames=4, start=0.4, end=1.2))
    assert not any("time window" in note for note in inside.notes)


def test_keyframe_snap_inside_a_window_is_bounded_by_the_windows_spacing(tmp_path):
    """Samples 2.5 frames apart in a short window may move 0.3 x 2.5 = 0.75 frame: not to keyframes
    1 frame away (the bound is a share of the samples' spacing, not of the whole video's length / T)."""
    ramp = mf.video(tmp_path / "gop.mp4", source="ramp", duration=2.0, gop=5)  # keyframes 0, 5, 10, ...
    media = load_media(ramp, LoadOptions(num_frames=4, start=1.0, end=1.4, keyframe_snap=0.3))
    assert media.frame_indices == _get_index(1.0, 1.4, 25.0, 49, 4) == [26, 28, 31, 34]
    assert _shown(media) == [26, 28, 31, 34]
    assert not any("keyframe" in note for note in media.notes)
    whole = load_media(ramp, LoadOptions(num_frames=4, keyframe_snap=0.3))  # 12.5 frames apart: 3.75 may move
    assert whole.frame_indices == _shown(whole) == [0, 10, 25, 35]


@pytest.mark.parametrize("start, end", [(1.0, None), (1.0, 1.0), (-1.0, 2.0)])
def test_a_bad_window_is_refused(ramp, start, end):
    with pytest.raises(ValueError, match="start"):
        load_media(ramp, LoadOptions(start=start, end=end))


def test_the_engine_loads_a_window_apart_from_the_whole_file(models, ramp):
    image_size = next(iter(models.values())).config.vision.image_size
    engine = engine_module.ChatEngine(models, media_options=LoadOptions(image_size=image_size))
    try:
        conv = engine.new_conversation()
        whole = engine.attach_media(conv, ramp, num_frames=4)
        engine.clear(conv)
        part = engine.attach_media(conv, ramp, num_frames=4, window=(0.4, 1.2))
        assert whole.frame_indices == [0, 12, 25, 37] and part.frame_indices == [12, 17, 22, 27]
        assert engine.loaded.misses == 2  # not served the whole file's frames from the cache
        engine.clear(conv)
        with pytest.raises(BadRequest, match="window"):
            engine.attach_media(conv, ramp, window=(2.0, 1.0))
    finally:
        engine.close()


# -- the pre-filled answer -----------------------------------------------------------------------

@pytest.mark.parametrize("template, ending", [("vicuna", "###Assistant: Best option:("),
                                              ("llama2", "[/INST] Best option:(")])
def test_the_prefix_goes_where_the_answer_starts(template, ending):
    dialogue = Dialogue(turns=[("Which one?", None)], system="Watch.", answer_prefix="Best option:(")
    text = build_prompt(get_template(template), dialogue).text
    assert text.endswith(ending)
    plain = build_prompt(get_template(template), Dialogue(turns=[("Which one?", None)], system="Watch.")).text
    assert text == plain + ending[len(ending) - len(" Best option:("):]


def test_the_engine_prefills_the_answer_and_returns_what_follows(models, ramp):
    engine = engine_module.ChatEngine(models)
    try:
        conv = engine.new_conversation(system="Watch closely.")
        engine.attach_media(conv, ramp, num_frames=2)
        written = "".join(engine.ask(conv, "Which one?", GenerationSettings(max_new_tokens=3),
                                     answer_prefix="Best option:("))
        trace = engine.trace(conv)
        assert trace.prompt.rstrip().endswith("Best option:(") and "Watch closely." in trace.prompt
        assert conv.turns[-1].answer == written.strip()
        assert not conv.turns[-1].answer.startswith("Best option:(")
        with pytest.raises(BadRequest, match="answer_prefix"):
            engine.ask(conv, "Why?", answer_prefix=None)
    finally:
        engine.close()


# -- the runner --------------------------------------------------------------------------------

def _asked(monkeypatch) -> dict:
    """What the runner gives the engine: load windows, system prompts, answer prefixes."""
    seen: dict = {"windows": [], "systems": [], "prefixes": []}
    real_load, real_new, real_ask = (engine_module.load_media, engine_module.ChatEngine.new_conversation,
                                     engine_module.ChatEngine.ask)

    def load(path, options):
        seen["windows"].append((options.start, options.end))
        return real_load(path, options)

    def new(self, model=None, system=None):
        seen["systems"].append(system)
        return real_new(self, model, system)

    def ask(self, conv, question, settings=None, *, answer_prefix=""):
        seen["prefixes"].append(answer_prefix)
        return real_ask(self, conv, question, settings, answer_prefix=answer_prefix)

    monkeypatch.setattr(engine_module, "load_media", load)
    monkeypatch.setattr(engine_module.ChatEngine, "new_conversation", new)
    monkeypatch.setattr(engine_module.ChatEngine, "ask", ask)
    return seen


def _question(ramp) -> Question:
    # Short texts: the benchmark's system text twice would not fit the tiny model's 512 tokens.
    return Question("mvbench", "Action Sequence", "action_sequence/0", str(ramp), "Which one?",
                    "Which one?\nOptions:\n(A) red\n(B) blue", "blue", ("red", "blue"), 1, "mvbench",
                    window=(0.4, 1.2), system="Watch.", prefill="Best option:(", prefill_kept="(")


@pytest.mark.parametrize("prompt", ["official", "plain"])
def test_the_runner_asks_with_the_window_and_the_chosen_prompt(models, ramp, tmp_path, monkeypatch, prompt):
    seen = _asked(monkeypatch)
    one = {"tiny-left": models["tiny-left"]}
    settings = RunSettings(suite="mvbench", models={"tiny-left": "tiny"}, frames=2, max_new_tokens=3, prompt=prompt)
    runner = Runner(one, settings, tmp_path, progress=False)
    try:
        runner.run([_question(ramp)])
    finally:
        runner.close()
    (record,) = read_answers(tmp_path / ANSWERS)
    assert record.status == "answered" and seen["windows"] == [(0.4, 1.2)]
    if prompt == "official":
        assert seen["systems"] == ["Watch."] and seen["prefixes"] == ["Best option:("]
        assert record.answer.startswith("(")  # the kept "(" then what the model wrote
    else:
        assert seen["systems"] == [None] and seen["prefixes"] == [""]
    assert json.loads((tmp_path / "settings.json").read_text())["prompt"] == prompt


def test_the_reader_gives_the_notebooks_protocol(tmp_path):
    (tmp_path / "video" / "star" / "Charades_v1_480").mkdir(parents=True)
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "action_sequence.json").write_text(json.dumps([
        {"video": "6H78U.mp4", "question": "What happened after the person took the food?",
         "candidates": ["Ate the medicine.", "Took the box."], "answer": "Took the box.", "start": 1.5, "end": 3.0}]))
    (q,) = mvbench.read(tmp_path)
    assert (q.window, q.system, q.prefill, q.prefill_kept) == ((1.5, 3.0), mvbench.SYSTEM, "Best option:(", "(")
    assert mvbench.SYSTEM.startswith("Carefully watch the video") and q.prompt.startswith(mvbench.SYSTEM)


def test_eval_cli_defaults_to_the_official_prompt_for_mvbench_only(tmp_path, ramp):
    import argparse

    from evaluation import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert parser.parse_args(["--suite", "mvbench"]).prompt == "official"
    assert parser.parse_args(["--suite", "mvbench", "--prompt", "plain"]).prompt == "plain"
    other = Question("nextqa", "causal", "1_0", str(ramp), "why?", "why? (A) x (B) y", "y", ("x", "y"), 1, "mvbench")
    assert cli.prompt_style("official", [other, _question(ramp)]) == "official"
    assert cli.prompt_style("official", [other]) is None  # other suites: asked as before, resumable as before
