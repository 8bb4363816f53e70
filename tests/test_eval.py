"""The toy-world evaluation: keyword scoring per skill, question sets, the --json output, and
(slow) that the bundled model leaves the frozen LLM's text-only answers unchanged."""

import argparse
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluation import toy_world as evaluate  # noqa: E402
from evaluation.toy_world import Item, another_way_items, heldout_items, score  # noqa: E402
from train.world.qa import QA  # noqa: E402
from train.world.scene import COLOURS  # noqa: E402

RED = QA("colour", "What colour is the star?", "red", "The star is red.", [["red"]], ["green", "blue"])
YES = QA("count", "Are there two shapes?", "yes", "Yes.", [["yes"]], ["no"], "yes_no")
LOW = QA("sound_pitch", "High or low?", "low", "It is low.", [["low"]], ["high"])


def test_score_counts_right_and_wrong_per_skill():
    items = [Item("a.mp4", q) for q in (RED, RED, RED, RED, YES, YES, LOW)]
    answers = ["It is red.", "Red", "red or green", "blue", "Yes, there are.", "No.", "A low tone."]
    result = score(items, answers)
    assert result["n"] == 7
    assert result["accuracy"] == {"colour": 0.5, "count": 0.5, "sound_pitch": 1.0}
    assert result["by_form"] == {"colour": {"open": 0.5}, "count": {"yes_no": 0.5}, "sound_pitch": {"open": 1.0}}


def test_score_splits_open_and_yes_no_and_counts_yes_to_true_and_false_claims():
    no = QA("colour", "Is the star blue?", "no", "The star is red, so no.", [["no"]], ["yes"], "yes_no")
    items = [Item("a.mp4", q) for q in (RED, YES, YES, YES, YES, no, no, no)]
    answers = ["Red.", "So yes.", "yes", "No.", "maybe", "The star is red, so no.", "Yes.", "yes or no"]
    result = score(items, answers)
    assert result["by_form"]["colour"] == {"open": 1.0, "yes_no": 1 / 3}
    assert result["by_form"]["count"] == {"yes_no": 0.5}
    # True claims: 2 of 4 answers say yes. False claims: only "Yes." says yes ("yes or no" hedges).
    assert result["says_yes"] == {"true_claims": 0.5, "false_claims": 1 / 3}
    assert score([Item("a.mp4", RED)], ["red"])["says_yes"] == {}  # no yes/no question: no rate


def test_score_splits_each_skill_by_how_many_shapes_the_scene_shows():
    items = [Item("a.mp4", RED, shapes=1), Item("b.mp4", RED, shapes=3), Item("b.mp4", RED, shapes=3),
             Item("c.mp4", YES, shapes=2), Item("ffmpeg.mp4", LOW)]
    result = score(items, ["Red.", "Blue.", "Red.", "No.", "Low."])
    assert result["by_shapes"] == {"colour": {"1": 1.0, "3": 0.5}, "count": {"2": 0.0}}  # LOW: no scene
    assert result["accuracy"]["sound_pitch"] == 1.0


def test_score_needs_one_answer_per_item():
    with pytest.raises(ValueError):
        score([Item("a.mp4", RED)], [])


def test_heldout_questions_come_from_rendered_test_clips(tmp_path):
    items = heldout_items(tmp_path, 2)
    paths = sorted({i.path for i in items})
    assert len(paths) == 2 and all(Path(p).stat().st_size > 1000 for p in paths)
    skills = {i.qa.skill for i in items}
    assert {"colour", "shape", "count", "motion", "temporal_order", "sound_pitch", "sound_pattern"} <= skills
    assert all(i.shapes in (1, 2, 3) for i in items)  # each item knows its scene's shape count
    counts = [i for i in items if i.qa.skill == "count" and i.qa.kind == "open"]
    assert [("one", "two", "three")[i.shapes - 1] for i in counts] == [i.qa.answer for i in counts]
    again = heldout_items(tmp_path, 2)  # deterministic, and reuses the files
    key = lambda its: [(i.path, i.qa.question, i.qa.answer) for i in its]
    assert key(again) == key(items)


def test_the_two_heldout_splits_differ_in_colour_shape_pairs(tmp_path):
    from train.world.scene import HELDOUT_PAIRS, sample_scene, scene_rng

    def pairs(split, world_split, n=6):
        heldout_items(tmp_path, n, split=split)  # renders the clips it names
        return [{(s.colour, s.shape) for s in sample_scene(scene_rng(evaluate.EVAL_SEED, world_split, i),
                                                             world_split).shapes} for i in range(n)]

    assert all(p & HELDOUT_PAIRS for p in pairs("new-pairs", "test"))
    assert not any(p & HELDOUT_PAIRS for p in pairs("new-clips", "train"))
    assert len(list(tmp_path.glob("train-7-*.mp4"))) == len(list(tmp_path.glob("test-7-*.mp4"))) == 6
    with pytest.raises(ValueError, match="training scenes"):
        heldout_items(tmp_path, 1, seed=1, split="new-clips")
    with pytest.raises(ValueError, match="unknown split"):
        heldout_items(tmp_path, 1, split="test")


def test_another_way_set_asks_colour_and_pitch_of_each_ffmpeg_clip(tmp_path, monkeypatch):
    import train.world.render as wr

    made = []
    monkeypatch.setattr(wr, "render_ffmpeg_clip", lambda c, p, path, shape, **kw: made.append((c, p, shape, kw)))
    items = another_way_items(tmp_path)
    assert len(made) >= 40 and len(items) == 2 * len(made)
    by_skill = {s: [i for i in items if i.qa.skill == s] for s in ("another_way_colour", "another_way_pitch")}
    assert all(len(v) == len(made) for v in by_skill.values())
    first = by_skill["another_way_colour"][0]
    colour = made[0][0]
    assert first.qa.keywords == [[colour]] and colour not in first.qa.distractors
    assert by_skill["another_way_pitch"][0].qa.keywords == [[made[0][1]]]
    # every colour with both pitches and both shapes; sizes, places and tones spread out
    assert {(c, p, s) for c, p, s, _ in made} == {(c, p, s) for c in COLOURS for p in ("low", "high")
                                                  for s in ("square", "circle")}
    extents = [kw["extent"] for *_, kw in made]
    xs = [kw["centre"][0] for *_, kw in made]
    assert max(extents) - min(extents) > 0.25 and max(xs) - min(xs) > 0.4
    for pitch, (lo, hi) in (("low", (60, 450)), ("high", (800, 6000))):
        hz = [kw["freq_hz"] for _, p, _, kw in made if p == pitch]
        assert all(lo <= f <= hi for f in hz) and max(hz) / min(hz) > 3


def test_with_defaults_reports_the_folder_settings(tmp_path, monkeypatch):
    from model.chat.generate import GenerationSettings, save_generation_defaults

    result = {"accuracy": {"colour": 0.5}, "n": 2}
    args = argparse.Namespace(model=tmp_path, greedy_only=False, json=True)
    save_generation_defaults(GenerationSettings(do_sample=False), tmp_path)
    evaluate.with_defaults(args, result, [], use_audio=True)
    assert result["with_defaults"]["same_as_greedy"] and result["with_defaults"]["accuracy"] == {"colour": 0.5}
    save_generation_defaults(GenerationSettings(temperature=0.7), tmp_path)
    asked = []

    def fake_answerer(model, use_audio, settings):
        asked.append(settings)
        return lambda path, question: "red"

    monkeypatch.setattr(evaluate, "engine_answerer", fake_answerer)
    items = [evaluate.Item("a.mp4", QA("colour", "What colour?", "red", "red", [["red"]], ["blue"]))]
    evaluate.with_defaults(args, result, items, use_audio=True)
    assert asked[0].temperature == 0.7 and not result["with_defaults"]["same_as_greedy"]
    assert result["with_defaults"]["accuracy"] == {"colour": 1.0}


def test_evaluate_with_a_perfect_and_a_useless_answerer(tmp_path):
    items = heldout_items(tmp_path, 1)
    by_question = {(i.path, i.qa.question): i.qa.full for i in items}
    perfect, records = evaluate.evaluate(lambda p, q: by_question[(p, q)], items, progress=False)
    # Full-sentence answers are right except where they name the other object (temporal order).
    assert perfect["accuracy"]["colour"] == 1.0 and perfect["accuracy"]["count"] == 1.0
    useless, _ = evaluate.evaluate(lambda p, q: "I cannot tell.", items, progress=False)
    assert all(v == 0.0 for v in useless["accuracy"].values())
    assert perfect["n"] == useless["n"] == len(items) == len(records)
    assert {"question", "expected", "answer", "right"} <= set(records[0])


def test_cli_json_is_one_object_with_accuracy_and_n(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "engine_answerer", lambda model_dir, use_audio=True: (lambda p, q: "yes"))
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(["--json", "--clips", "1", "--no-another-way", "--media-dir", str(tmp_path),
                              "--greedy-only"])
    assert evaluate.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"accuracy", "n", "by_form", "by_shapes", "says_yes"} and out["n"] > 10
    assert all(0.0 <= v <= 1.0 for v in out["accuracy"].values())
    assert out["says_yes"] == {"true_claims": 1.0, "false_claims": 1.0}  # this answerer always says yes


def test_no_sound_gives_videos_without_sound_and_asks_only_what_needs_none(tmp_path, monkeypatch, capsys):
    asked = []

    def fake_answerer(model_dir, use_audio=True):
        asked.append(use_audio)
        return lambda p, q: "yes"

    monkeypatch.setattr(evaluate, "engine_answerer", fake_answerer)
    monkeypatch.setattr(evaluate, "another_way_items", lambda folder: [
        Item("ffmpeg.mp4", RED), Item("ffmpeg.mp4", QA("another_way_pitch", "High or low?", "low", "low", [["low"]]))])
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    for flags in ([], ["--no-sound"]):
        args = parser.parse_args(["--json", "--clips", "2", "--media-dir", str(tmp_path), "--greedy-only", *flags])
        assert evaluate.main(args) == 0
        skills = set(json.loads(capsys.readouterr().out)["accuracy"])
        if flags:
            assert skills == {"colour", "shape", "count", "motion", "temporal_order"}
        else:
            assert {"sound_pitch", "sound_pattern", "audio_visual", "another_way_pitch"} <= skills
    assert asked == [True, False]


@pytest.mark.slow
def test_bundled_model_keeps_the_llm_text_answers():
    """A text-only prompt gets the same greedy answer as plain SmolLM2 (the LLM is frozen)."""
    import torch
    from transformers import AutoModelForCausalLM

    from model.chat.engine import ChatEngine, GenerationSettings
    from model.llm import locate_gguf
    from model.weights.checkpoint import load_model

    torch.set_num_threads(1)
    model = load_model(evaluate.DEFAULT_MODEL, device="cpu")
    engine = ChatEngine({"toy": model})
    settings = GenerationSettings(max_new_tokens=24, do_sample=False, temperature=0.0)
    question = "What is the capital of France?"
    conv = engine.new_conversation()
    ours = "".join(engine.ask(conv, question, settings))

    gguf = locate_gguf(model.config.llm.gguf_package, model.config.llm.gguf_file)
    plain = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = model.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    out = plain.generate(ids, max_new_tokens=24, do_sample=False)
    reference = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert ours.strip() == reference.strip()
    assert "Paris" in ours


def test_oracle_text_puts_the_scene_words_where_the_media_goes(tmp_path, monkeypatch):
    import model.llm
    from tests.tiny import tiny_config, tiny_llm, tiny_tokenizer

    tok = tiny_tokenizer()
    prompts = []

    class Recording:  # the tiny tokenizer, remembering every prompt it encodes
        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, text, **kwargs):
            prompts.append(text)
            return tok(text, **kwargs)

    monkeypatch.setattr(model.llm, "load_llm", lambda cfg, root=None: (tiny_llm(), Recording()))
    tiny_config().to_json(tmp_path / "config.json")
    items = heldout_items(tmp_path, 1)
    answer = evaluate.oracle_text_answerer(tmp_path, {i.path: i.context for i in items}, max_new_tokens=3)
    reply = answer(items[0].path, items[0].qa.question)
    assert isinstance(reply, str)
    (prompt,) = prompts
    seen, heard = items[0].context["video"], items[0].context["audio"]
    assert seen and heard and seen in prompt and heard in prompt and items[0].qa.question in prompt
    assert "<ImageHere>" not in prompt and prompt.index(heard) < prompt.index(seen)  # audio slot comes first


def test_image_items_are_still_frames_of_the_heldout_scenes_with_questions_about_them(tmp_path):
    import numpy as np
    from PIL import Image

    from evaluation.toy_world import image_items
    from model.media import load_media
    from train.world.scene import sample_scene, scene_rng

    items = image_items(tmp_path, 3)
    paths = sorted({i.path for i in items})
    assert len(paths) == 3 and all(p.endswith(".png") for p in paths)
    assert load_media(paths[0]).kind == "image"
    for i, path in enumerate(paths):
        scene = sample_scene(scene_rng(evaluate.EVAL_SEED, "train", i), "train")
        t = int(path[-6:-4]) / scene.config.fps
        visible = [s for s in scene.shapes if s.visible(t)]
        pixels = np.asarray(Image.open(path))
        for s in visible:  # the picture shows the shapes of that moment, in their colours
            x, y = s.position(t, scene.config.duration)
            assert tuple(pixels[int(round(y)), int(round(x))]) == s.rgb
        mine = [it.qa for it in items if it.path == path]
        assert {q.skill for q in mine} == {"colour", "shape", "count", "description"}
        described = next(q for q in mine if q.skill == "description").answer.lower()
        assert all(f"{s.colour} {s.shape}" in described for s in visible)
        assert all("video" not in q.question for q in mine)
        count = next(q for q in mine if q.skill == "count" and q.kind == "open")
        assert count.answer == {1: "one", 2: "two", 3: "three"}[len(visible)]
    key = lambda its: [(i.path, i.qa.question, i.qa.answer) for i in its]
    assert key(image_items(tmp_path, 3)) == key(items)


def test_cli_images_asks_about_still_images_only(tmp_path, monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(evaluate, "engine_answerer",
                        lambda model_dir, use_audio=True: (lambda p, q: asked.append(p) or "Red."))
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(["--json", "--images", "--clips", "2", "--media-dir", str(tmp_path), "--greedy-only"])
    assert evaluate.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["accuracy"]) == {"colour", "shape", "count", "description"} and out["n"] == len(asked) >= 10
    assert all(p.endswith(".png") for p in asked)
    with pytest.raises(SystemExit, match="--images"):
        evaluate.main(parser.parse_args(["--images", "--no-sound", "--media-dir", str(tmp_path)]))
