"""Clip-level attribute questions on the video soft tokens (train/clip_attributes.py): the targets
follow the scene, the head learns them from tokens that hold them, and a stage trains it."""

import dataclasses
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.tiny import tiny_model  # noqa: E402
from train import clip_attributes as ca  # noqa: E402
from train.recipes import get_recipe  # noqa: E402
from train.stages import IGNORE  # noqa: E402
from train.world.scene import COLOURS, MOTIONS, SHAPES, sample_scene, scene_rng  # noqa: E402


def _scenes(n: int):
    return [sample_scene(scene_rng(5, "train", i)) for i in range(n)]


def test_targets_ask_only_questions_with_one_answer():
    scene = _scenes(1)[0]
    a, b = scene.shapes[0], dataclasses.replace(scene.shapes[0], colour="blue" if scene.shapes[0].colour != "blue"
                                                  else "red", motion="left", appear=1.5, leave=3.0)
    c = dataclasses.replace(a, shape=next(s for s in SHAPES if s != a.shape), colour=a.colour, motion="up")
    scene.shapes = [a, b, c]  # two shapes of a's kind, two of a's colour
    t = ca.ClipAttributeHead(8).targets([scene])
    k_a, k_c = SHAPES.index(a.shape), SHAPES.index(c.shape)
    assert t["count"].tolist() == [2]  # three shapes
    assert t["colour"][0, k_a] == IGNORE and t["motion"][0, k_a] == IGNORE  # a and b share a kind
    assert t["colour"][0, k_c] == COLOURS.index(c.colour) and t["motion"][0, k_c] == MOTIONS.index("up")
    assert t["shape"][0, COLOURS.index(a.colour)] == IGNORE  # a and c share a colour
    assert t["shape"][0, COLOURS.index(b.colour)] == k_a
    assert t["present"][0].sum() == 2 + 2  # two shape kinds, two colours
    absent = [k for k in range(len(SHAPES)) if k not in (k_a, k_c)]
    assert all(t["colour"][0, k] == IGNORE for k in absent)
    assert ca.appear_class(1.5) == ca.APPEAR_CLASSES.index(1.5) and ca.appear_class(0.0) == 0


def _encode(scenes, width: int = 32) -> torch.Tensor:
    """Tokens that hold each clip's attributes: one token per shape, one-hot features."""
    out = torch.zeros(len(scenes), 4, width)
    for b, scene in enumerate(scenes):
        for j, s in enumerate(scene.shapes):
            out[b, j, SHAPES.index(s.shape)] = 1
            out[b, j, 4 + COLOURS.index(s.colour)] = 1
            out[b, j, 12 + MOTIONS.index(s.motion)] = 1
            out[b, j, 20 + ca.appear_class(s.appear)] = 1
            out[b, j, 26] = float(s.leave < scene.config.duration)
            out[b, j, 27] = float(s.leave >= scene.config.duration)
    return out


def _one_hot_words(time: bool = False) -> ca.AnswerWords:
    """Answer words at the features ``_encode`` writes, so its tokens hold them as word directions."""
    eye = torch.eye(32)
    extra = dict(times=torch.stack([eye[20], eye[21:24].sum(0)]), ends=eye[[27, 26]]) if time else {}
    return ca.AnswerWords(shapes=eye[:4], colours=eye[4:4 + len(COLOURS)], motions=eye[12:12 + len(MOTIONS)],
                          **extra)


@pytest.mark.parametrize("words", [None, _one_hot_words(), _one_hot_words(time=True)],
                         ids=["linear", "words", "words+time"])
def test_the_head_learns_attributes_the_tokens_hold_and_not_from_noise(words):
    torch.manual_seed(0)
    scenes = _scenes(64)
    tokens = _encode(scenes)

    def fit(x):
        head = ca.ClipAttributeHead(32, words=words)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        for _ in range(150):
            loss = head.loss(x, scenes)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss.item()

    informative, noise = fit(tokens), fit(torch.randn_like(tokens)[:, :1].expand_as(tokens).contiguous())
    assert informative < 0.5 * noise


def test_the_word_readout_scores_the_tokens_themselves_against_the_answer_words():
    words = ca.AnswerWords(shapes=torch.randn(len(SHAPES), 32), colours=torch.randn(len(COLOURS), 32),
                           motions=torch.randn(len(MOTIONS), 32))
    head = ca.ClipAttributeHead(32, words=words)  # untrained: only the raw tokens can decide
    red, left = COLOURS.index("red"), MOTIONS.index("left")
    tokens = (words.colours[red] + words.motions[left]).expand(2, 5, 32).contiguous()
    by_shape, by_colour, _ = head(tokens)
    C, M = len(COLOURS), len(MOTIONS)
    assert (by_shape[..., 1:1 + C].argmax(-1) == red).all()
    assert (by_shape[..., 1 + C:1 + C + M].argmax(-1) == left).all()
    # a token that is the word "star" is read as the star by every colour query
    by_colour = head(words.shapes[SHAPES.index("star")].expand(1, 5, 32).contiguous())[1]
    assert (by_colour[..., 1:].argmax(-1) == SHAPES.index("star")).all()
    assert not any("words" in n for n, _ in head.named_parameters())  # the LLM's words never train
    assert not any("words" in n for n in head.state_dict())


def test_time_words_ask_each_shape_start_or_later_and_stays_or_leaves():
    g = torch.Generator().manual_seed(3)
    words = ca.AnswerWords(*(torch.randn(n, 32, generator=g) for n in (len(COLOURS), len(SHAPES), len(MOTIONS), 2, 2)))
    head = ca.ClipAttributeHead(32, words=words)
    assert head.time_words and sorted(n for n, _ in head.named_buffers())[-1] == "times_words"
    tokens = (words.times[1] + words.ends[0]).expand(2, 5, 32).contiguous()  # "later", "stays"
    by_shape = head(tokens)[0]
    assert by_shape.shape[-1] == head.SHAPE_OUT + 4
    assert (by_shape[..., -4:-2].argmax(-1) == 1).all() and (by_shape[..., -2:].argmax(-1) == 0).all()
    # the word questions add to the loss: a head without them, same parameters, scores less
    plain = ca.ClipAttributeHead(32, words=dataclasses.replace(words, times=None, ends=None))
    plain.load_state_dict(head.state_dict())
    scenes = _scenes(2)
    assert not plain.time_words and plain(tokens)[0].shape[-1] == head.SHAPE_OUT
    assert head.loss(tokens, scenes) > plain.loss(tokens, scenes)


def test_answer_words_are_the_llms_embeddings_of_each_word_after_a_space():
    model = tiny_model()
    table = model.llm.get_input_embeddings().weight
    words = ca.answer_words(model.tokenizer, table)
    assert words.colours.shape == (len(COLOURS), table.shape[1]) and words.motions.shape[0] == len(MOTIONS)
    ids = model.tokenizer(" bouncing", add_special_tokens=False)["input_ids"]
    assert torch.allclose(words.motions[MOTIONS.index("bouncing")], table[ids].float().mean(0))
    assert not torch.allclose(words.colours[0], words.colours[1])
    assert words.times is None and words.ends is None
    timed = ca.answer_words(model.tokenizer, table, time=True)
    ids = model.tokenizer(" leaves", add_special_tokens=False)["input_ids"]
    assert torch.allclose(timed.ends[ca.END_WORDS.index("leaves")], table[ids].float().mean(0))
    assert timed.times.shape == (2, table.shape[1])


@pytest.mark.parametrize("readout", ["linear", "words", "words+time"])
def test_a_stage_with_the_weight_trains_the_head_beside_the_video_branch(tmp_path, readout):
    from train import toy_pipeline
    from train.trainer import make_accelerator

    model = tiny_model()
    spec = get_recipe("toy-world", quick=True).stages[1]
    spec = dataclasses.replace(spec, clip_attribute_weight=1.0, clip_attribute_batch=4, clip_attribute_readout=readout,
                               train=dataclasses.replace(spec.train, max_steps=2, save_every=2, log_every=1))
    scenes = _scenes(3)
    feats = {"video": torch.randn(3, 4, 6, 32), "audio": torch.randn(3, 8, 20)}
    acc = make_accelerator(spec.train)
    with pytest.raises(ValueError, match="scenes"):
        toy_pipeline.run_lm_stage(model, [], feats, spec, tmp_path, acc, False, None, None)
    exs = toy_pipeline.caption_examples(_tiny_pool(model, scenes), model.tokenizer)
    before = model.video_proj.weight.detach().clone()
    toy_pipeline.run_lm_stage(model, exs, feats, spec, tmp_path, acc, False, None, scenes)
    state = torch.load(tmp_path / spec.name / "training_state.pt", weights_only=False)
    assert any(n.startswith(ca.PREFIX) for n in state["params"])
    assert any(n.startswith(ca.PREFIX + "word_") for n in state["params"]) == (readout != "linear")
    assert not torch.equal(before, model.video_proj.weight)


def _tiny_pool(model, scenes):
    from train.world.pool import render_pool

    pool = render_pool(model.config, len(scenes), 5)
    assert [len(s.shapes) for s in pool.scenes] == [len(s.shapes) for s in scenes]
    return pool


def test_the_recipe_field_is_checked():
    spec = get_recipe("toy-world", quick=True).stages[1]
    with pytest.raises(ValueError, match="loss weight"):
        dataclasses.replace(spec, clip_attribute_weight=-1.0).check()
    with pytest.raises(ValueError, match="clip_attribute_batch"):
        dataclasses.replace(spec, clip_attribute_batch=0).check()
    with pytest.raises(ValueError, match="clip_attribute_readout must be one of linear, words, words\\+time"):
        dataclasses.replace(spec, clip_attribute_readout="vocab").check()
    # the toy-world recipe asks them in stages 1 and 2 (they act on the video soft tokens), not in stage 0
    weights = [s.clip_attribute_weight for s in get_recipe("toy-world").stages]
    assert weights[0] == 0 and weights[1] > 0 and weights[2] > 0
    assert [s.clip_attribute_readout for s in get_recipe("toy-world").stages[1:]] == ["words", "words"]


def test_building_the_head_neither_reads_nor_resets_the_recipes_random_stream():
    from train import toy_pipeline

    model = tiny_model()
    spec = dataclasses.replace(get_recipe("toy-world", quick=True).stages[1], clip_attribute_weight=1.0)
    heads, nexts = [], []
    for prior in (0, 1):
        torch.manual_seed(prior)
        expected = torch.rand(3, generator=torch.Generator().manual_seed(prior))
        heads.append(toy_pipeline._clip_attribute_head(model, spec, _scenes(2), "cpu"))
        nexts.append(torch.rand(3))
        assert torch.equal(nexts[-1], expected)  # the stream goes on as if nothing had been drawn
    # the head's start depends on the stage's seed only
    for a, b in zip(heads[0].parameters(), heads[1].parameters(), strict=True):
        assert torch.equal(a, b)
