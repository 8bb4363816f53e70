"""LoRA on the LLM during training: which stages train it and at what learning rate.

The adapter itself (injection, saving, switching) is ``model/lora.py``. A recipe with ``lora``
set gives the LLM a fresh adapter (B = 0, so the first step starts from the frozen LLM's
answers); a model folder that already has one (a paper run's ``--init``) keeps training it.
Every training example carries media, so the adapter is on for all of them, as it is for
media prompts at inference.
"""

from __future__ import annotations

from torch import nn

from model import lora
from train.recipes import Recipe, StageSpec

TRAINING_NAME = "llm_lora"  # the adapter's name inside the LLM while it trains
TRAINS_LORA = ("caption", "instruct")  # objectives whose stages run the LLM (stage 0 does not)


def attach(model, recipe: Recipe) -> None:
    """Give ``model.llm`` the recipe's adapter, or switch on the one the model already has."""
    check(recipe)
    if model.llm_adapter is None and not recipe.lora.rank:
        return
    if model.llm_adapter is None:
        lora.add_adapter(model.llm, recipe.lora, TRAINING_NAME)
        model.llm_adapter = TRAINING_NAME
    else:
        lora.train_adapter(model.llm, model.llm_adapter)


def check(recipe: Recipe) -> None:
    """Refuse LoRA settings no run can use, naming the ``--set`` key."""
    spec = recipe.lora
    if spec.rank < 0 or not 0 <= spec.dropout < 1 or spec.alpha <= 0 or not recipe.lora_lr > 0:
        raise ValueError(f"lora: rank must be 0 (off) or more, dropout in [0, 1), alpha and lora_lr positive; got "
                         f"{spec} and lora_lr={recipe.lora_lr}")
    if spec.rank and not spec.target_modules:
        raise ValueError("lora.target_modules is empty; name the LLM's Linear layers, e.g. q_proj,k_proj,v_proj,o_proj")
    if spec.rank and not any(s.train_lora and s.objective in TRAINS_LORA for s in recipe.stages):
        raise ValueError(f"lora.rank={spec.rank} but no caption or instruction stage of {recipe.name} has "
                         "train_lora set; e.g. --set stage2.train_lora=true")


def with_lora(model, spec: StageSpec, recipe: Recipe,
              params: list[tuple[str, nn.Parameter]]) -> list[tuple[str, nn.Parameter]]:
    """``params`` plus the LLM's LoRA matrices when ``spec.train_lora`` and the model has an adapter,
    at ``recipe.lora_lr`` (peak).

    ``params`` come from ``stages.branch_parameters``, which froze everything else, the adapter
    included: a stage without ``lora`` runs it as it is.
    """
    if not spec.train_lora or model.llm_adapter is None:
        return params
    extra = lora.adapter_parameters(model.llm, model.llm_adapter)
    for _, p in extra:
        p.requires_grad_(True)
    for m in lora.lora_layers(model.llm):
        m.lora_dropout.train()  # call after model.train(): it keeps the LLM itself in eval mode
    spec.train.lr_scale = {**spec.train.lr_scale, "llm": recipe.lora_lr / spec.train.lr}
    return params + [(f"llm.{name}", p) for name, p in extra]
