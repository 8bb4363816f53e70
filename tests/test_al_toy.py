"""The toy-world switch for the paper's audio-branch path (``--set audio_from=vision``, train/al_toy.py):
the override, the image tower of stage 0, what the audio branch of stages 1-2 reads, and the --quick run."""

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from model.config import VideoLlamaConfig  # noqa: E402
from model.media.common import normalise  # noqa: E402
from model.video_llama import build_model  # noqa: E402
from tests.tiny import tiny_model  # noqa: E402
from train import al_toy, stages  # noqa: E402
from train.overrides import apply_overrides  # noqa: E402
from train.recipes import get_recipe  # noqa: E402


@pytest.fixture(scope="module")
def pool():
    from train.world.pool import render_pool

    return render_pool(tiny_model(with_llm=False).config, 6, 1)


def _quick_stage0(audio_from: str, steps: int = 2):
    import dataclasses

    spec = get_recipe("toy-world", quick=True).stages[0]
    train = dataclasses.replace(spec.train, max_steps=steps, save_every=steps, log_every=1, batch_size=8)
    return dataclasses.replace(spec, audio_from=audio_from, train=train)


def test_the_switch_parses_and_a_half_switched_recipe_is_refused():
    recipe = get_recipe("toy-world", quick=True)
    apply_overrides(recipe, ["audio_from=vision"])
    assert [s.audio_from for s in recipe.stages] == ["vision"] * 3
    al_toy.check_stages(recipe.stages)

    half = get_recipe("toy-world", quick=True)
    apply_overrides(half, ["stage2.audio_from=vision"])
    with pytest.raises(ValueError, match="stage2.audio_from=vision .* stage0.audio_from=vision"):
        al_toy.check_stages(half.stages)
    typo = get_recipe("toy-world", quick=True)
    apply_overrides(typo, ["audio_from=visual"])
    with pytest.raises(ValueError, match="must be one of audio, vision, not 'visual'"):
        al_toy.check_stages(typo.stages)


def test_frames_pair_with_the_audio_clip_around_them():
    # The toy-world model: 4 clips of 2 s cut from a 4 s track start at 0, 0.5, 1, 1.5 s.
    cfg = VideoLlamaConfig.from_dict(get_recipe("toy-world").model).audio
    times = [0.5 * k for k in range(8)]  # the 8 frames the loader samples from 4 s
    assert al_toy.window_centres(4.0, cfg).tolist() == [1.0, 1.5, 2.0, 2.5]
    assert al_toy.window_frames(times, 4.0, cfg) == [2, 3, 4, 5]
    assert al_toy.nearest_window(times, 4.0, cfg) == [0, 0, 0, 1, 2, 3, 3, 3]


def test_tower_loss_trains_the_tower_and_leaves_the_audio_encoder_alone(pool):
    model = tiny_model(with_llm=False)
    cfg = model.config
    tower = al_toy.build_tower(cfg, "cpu", seed=0)
    batch = al_toy.tower_batch(pool, torch.Generator().manual_seed(0), 5, cfg.audio)
    S = cfg.vision.image_size
    assert batch.frames.shape == (5, 3, S, S) and batch.fbank.shape == (5, *pool.fbank.shape[2:])
    emb = tower(batch.frames)
    assert emb.shape == (5, cfg.audio.out_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.full((5,), cfg.audio.logit_scale))
    al_toy.tower_loss(model, tower, batch).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())
    assert all(p.grad is None for p in model.audio_encoder.parameters())  # the audio side is detached


def test_stage0_with_the_switch_also_trains_the_tower_and_nothing_else_changes(tmp_path, pool):
    from train.toy_pipeline import run_stage0
    from train.trainer import make_accelerator

    cfg = tiny_model(with_llm=False).config
    states, towers = {}, {}
    for audio_from in al_toy.AUDIO_FROM:
        spec = _quick_stage0(audio_from)
        torch.manual_seed(0)
        model = build_model(cfg, device="cpu", with_llm=False)
        towers[audio_from] = run_stage0(model, pool, spec, tmp_path / audio_from, make_accelerator(spec.train), False)
        states[audio_from] = model.state_dict()
    assert towers["audio"] is None
    fresh = al_toy.build_tower(cfg, "cpu", seed=spec.train.seed)
    trained = towers["vision"]
    assert not trained.training and not any(p.requires_grad for p in trained.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), trained.parameters(), strict=True))
    for k, v in states["audio"].items():  # the encoders inference reads: as without the switch
        torch.testing.assert_close(states["vision"][k], v, msg=k)
    saved = torch.load(tmp_path / "vision" / "stage0" / "training_state.pt", weights_only=False)["params"]
    assert any(n.startswith(al_toy.PREFIX) for n in saved)  # --resume restores the tower
    # Resumed with the same switch: restored. With the switch flipped: refused, naming the stage's folder,
    # instead of an untrained tower (or a KeyError) going on to stages 1 and 2.
    for audio_from, run in (("vision", "vision"), ("vision", "audio"), ("audio", "vision")):
        spec = _quick_stage0(audio_from)
        model = build_model(cfg, device="cpu", with_llm=False)
        if audio_from == run:
            tower = run_stage0(model, pool, spec, tmp_path / run, make_accelerator(spec.train), True)
            assert all(torch.equal(a, b) for a, b in zip(tower.parameters(), trained.parameters(), strict=True))
            continue
        with pytest.raises(ValueError, match=f"{run}/stage0 finished with other settings"):
            run_stage0(model, pool, spec, tmp_path / run, make_accelerator(spec.train), True)


def test_with_the_switch_the_audio_adapter_reads_the_tower_embeddings_of_the_frames(pool):
    from train.toy_pipeline import batch_features, caption_examples
    from train.world.pool import precompute

    model = tiny_model()
    cfg = model.config
    tower = al_toy.build_tower(cfg, "cpu", seed=0)
    al_toy.freeze(tower)
    feats = precompute(model, pool)
    seen = al_toy.frame_features(tower, pool, cfg.audio)
    assert seen.shape == feats["audio"].shape == (len(pool.scenes), cfg.audio.num_clips, cfg.audio.out_dim)
    spec = _quick_stage0("vision")
    assert al_toy.stage_features(feats, seen, _quick_stage0("audio")) is feats
    feats1 = al_toy.stage_features(feats, seen, spec)
    assert feats1["video"] is feats["video"] and feats1["audio"] is seen
    with pytest.raises(ValueError, match="needs the image tower"):
        al_toy.stage_features(feats, None, spec)

    examples = caption_examples(pool, model.tokenizer, audio_captions=al_toy.audio_captions(pool, spec))
    audio = [ex for ex in examples if "audio" in ex.pieces]
    assert [model.tokenizer.decode(ex.pieces[2][:-1]) for ex in audio] == \
        [caps[i % len(caps)] for i, caps in enumerate(pool.video_captions)]  # video captions, not sound ones

    inputs = []
    real = model.audio_tokens
    model.audio_tokens = lambda x: inputs.append(x) or real(x)
    batch = [audio[3], audio[1]]
    tokens = stages.media_tokens(model, batch_features(batch, feats1, "cpu"))
    assert tokens["audio"].shape == (2, cfg.audio_qformer.num_queries, cfg.llm.hidden_size)
    # Built again from the pixels: the frame nearest each audio clip's centre, through the tower.
    expected = []
    for ex in batch:
        ks = al_toy.window_frames(pool.frame_times[ex.clip], pool.scenes[ex.clip].config.duration, cfg.audio)
        with torch.no_grad():
            expected.append(tower(normalise(pool.frames[ex.clip, ks].numpy())))
    torch.testing.assert_close(inputs[0], torch.stack(expected), atol=2e-2, rtol=1e-2)  # fp16 features
    assert not torch.allclose(inputs[0], feats["audio"][[3, 1]].float(), atol=1e-1)


@pytest.mark.slow
def test_quick_recipe_with_the_switch_runs_and_trains_the_audio_branch_on_frames(tmp_path, monkeypatch):
    from model.video_llama import VideoLlama
    from train import toy_pipeline

    recipe = get_recipe("toy-world", quick=True)
    apply_overrides(recipe, ["audio_from=vision"])
    made, read = [], []
    real_features, real_tokens = al_toy.frame_features, VideoLlama.audio_tokens

    def features(*args, **kwargs):
        made.append(real_features(*args, **kwargs))
        return made[-1]

    def audio_tokens(self, x):
        read.append(x.detach().clone())
        return real_tokens(self, x)

    monkeypatch.setattr(al_toy, "frame_features", features)
    monkeypatch.setattr(VideoLlama, "audio_tokens", audio_tokens)
    final = toy_pipeline.run_toy_world(recipe, tmp_path / "run")
    assert (final / "config.json").is_file() and (final / "audio_adapter.safetensors").is_file()
    for stage in ("stage0", "stage1", "stage2"):
        done = json.loads((tmp_path / "run" / stage / "done.json").read_text())
        assert done["steps"] == next(s for s in recipe.stages if s.name == stage).train.max_steps
    seen = made[0].float()  # (N, C, E)
    assert len(made) == 1 and read
    for x in read:  # every input of the audio adapter in stages 1-2 is clips' tower embeddings
        assert x.shape[1:] == seen.shape[1:]
        for row in x.float():
            assert ((seen - row).abs().amax(dim=(1, 2)) < 1e-3).any()


def test_the_ablation_prints_two_runnable_training_commands_that_differ_only_in_the_switch():
    import argparse

    from bench import eval_ablations
    from train import cli

    recipes = {}
    for arm in eval_ablations.AUDIO_ARMS:
        command = eval_ablations.train_command(arm)
        assert command[:3] == ["python", "launch.py", "train"]
        parser = argparse.ArgumentParser()
        cli.add_arguments(parser)
        args = parser.parse_args(command[3:])
        recipes[arm] = get_recipe(args.recipe, quick=args.quick)
        cli.apply_settings(recipes[arm], args)
    caption, image = recipes["audio-caption"], recipes["via-image"]
    assert [s.audio_from for s in caption.stages] == ["audio"] * 3
    assert [s.audio_from for s in image.stages] == ["vision"] * 3
    for a, b in zip(caption.stages, image.stages, strict=True):
        assert a.train == b.train and a.train.max_steps == eval_ablations.AUDIO_BRANCH_SIZES[f"{a.name}.max_steps"]
    assert caption.world == image.world and caption.world["probe_clips"] == 0
    evaluated = eval_ablations.eval_command(12)
    assert [evaluated[i + 1] for i, x in enumerate(evaluated) if x == "--model"] == \
        [str(out / "final") for _, out in eval_ablations.AUDIO_ARMS.values()]
