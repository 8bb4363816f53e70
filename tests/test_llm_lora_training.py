"""LoRA on the LLM in training: recipe fields, which stages train it, gradients through the prefix."""

from __future__ import annotations

import pytest
import torch

from model import lora
from tests.tiny import tiny_model
from train import llm_lora, stages
from train.overrides import apply_overrides
from train.recipes import PAPER_STAGES, get_recipe


def test_paper_recipes_keep_the_llm_frozen_and_toy_world_trains_lora_in_stage_2():
    for name in PAPER_STAGES:
        assert get_recipe(name).lora.rank == 0
    toy = get_recipe("toy-world")
    assert toy.lora.rank == 8 and set(toy.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert [s.name for s in toy.stages if s.train_lora and s.objective != "contrastive"] == ["stage2"]
    assert toy.generation.greedy  # the bundled model's folder asks for greedy answers


def test_lora_is_switched_on_and_shaped_with_set():
    recipe = get_recipe("vl-stage2")
    apply_overrides(recipe, ["lora.rank=4", "lora.target_modules=q_proj,v_proj", "lora_lr=5e-4"])
    assert recipe.lora.rank == 4 and recipe.lora.target_modules == ("q_proj", "v_proj") and recipe.lora_lr == 5e-4
    toy = get_recipe("toy-world", quick=True)
    apply_overrides(toy, ["stage1.train_lora=true", "lora.rank=0"])
    assert toy.stages[1].train_lora and toy.lora.rank == 0
    apply_overrides(toy, ["lora.rank=2", "train_lora=false"])
    with pytest.raises(ValueError, match="train_lora"):
        llm_lora.check(toy)  # an adapter no stage trains would be saved untrained


def _examples(tok):
    return [stages.Example(*stages.chat_example(tok, "tokenizer", q, a), clip=0)
            for q, a in [("What colour?", "Red."), ("How many shapes are there?", "Two.")]]


def test_a_stage_with_train_lora_trains_the_adapter_beside_the_qformers():
    recipe = get_recipe("toy-world", quick=True)
    apply_overrides(recipe, ["lora.rank=4", "lora.target_modules=q_proj,v_proj"])
    model = tiny_model()
    llm_lora.attach(model, recipe)
    assert model.llm_adapter == llm_lora.TRAINING_NAME
    spec1, spec2 = recipe.stages[1], recipe.stages[2]
    frozen = llm_lora.with_lora(model, spec1, recipe, stages.branch_parameters(model, spec1.branches))
    assert not any(n.startswith("llm.") for n, _ in frozen)
    assert not any(p.requires_grad for p in model.llm.parameters())
    params = llm_lora.with_lora(model, spec2, recipe, stages.branch_parameters(model, spec2.branches))
    lora_names = [n for n, _ in params if n.startswith("llm.")]
    assert len(lora_names) == 2 * 2 * model.config.llm.num_layers  # (A, B) x (q, v) per layer
    assert spec2.train.lr_scale["llm"] == pytest.approx(recipe.lora_lr / spec2.train.lr)
    # B starts at zero: the adapter changes nothing until it trains
    feats = {"video": torch.randn(2, 4, 6, 32), "audio": torch.randn(2, 8, 20)}
    exs = _examples(model.tokenizer)
    loss, _ = stages.lm_batch_loss(model, exs, feats, stages.PrefixCache())
    loss.backward()
    grads = {n: p.grad for n, p in params if n.startswith("llm.")}
    assert all(g is not None for g in grads.values()) and any(g.abs().sum() > 0 for g in grads.values())
    opt = torch.optim.SGD([p for _, p in params], lr=0.5)
    opt.step()
    assert any(p.abs().sum() > 0 for n, p in params if "lora_B" in n)


def test_prefix_keys_follow_the_training_adapter():
    """While LoRA trains, the shared prompt prefix is recomputed with gradients: the loss and the
    adapter's gradients equal those without any prefix cache."""
    recipe = get_recipe("toy-world", quick=True)
    model = tiny_model()
    llm_lora.attach(model, recipe)
    params = llm_lora.with_lora(model, recipe.stages[2], recipe, stages.branch_parameters(model, ("video", "audio")))
    with torch.no_grad():
        for n, p in params:
            if "lora_B" in n:
                p.normal_(0, 0.3)
    feats = {"video": torch.randn(2, 4, 6, 32), "audio": torch.randn(2, 8, 20)}
    exs = _examples(model.tokenizer)
    cache = stages.PrefixCache()

    def run(prefix):
        for _, p in params:
            p.grad = None
        loss, _ = stages.lm_batch_loss(model, exs, feats, prefix)
        loss.backward()
        return loss.detach(), [p.grad.clone() for n, p in params if n.startswith("llm.")]

    (plain, g0), (cached, g1) = run(None), run(cache)
    torch.testing.assert_close(plain, cached)
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # a training step moves the adapter; a stale cached prefix would not follow
        for n, p in params:
            if "lora_A" in n:
                p.add_(0.05)
    moved, _ = run(cache)
    torch.testing.assert_close(moved, run(None)[0])
    assert not torch.allclose(moved, cached)
    assert lora.adapter_names(model.llm) == {llm_lora.TRAINING_NAME}
