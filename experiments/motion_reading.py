"""Can the LLM learn to read motion from the bundled model's soft tokens, given more motion questions?

    python -m experiments.motion_reading [--model checkpoints/toy-world] [--clips 800] [--steps 150]
                                         [--arms lora,lora+qformer,lora+mlp] [--eval-clips 40]

Why: ``experiments.soft_token_probe`` reads a named shape's motion from the video soft tokens at
0.81, yet the model answers motion at 0.41 in the eval and at 0.20 on its own training clips
(``experiments.fit_gap``). Stage 2 asks two motion questions per clip (about one of its shapes),
and its 900 steps see each question less than once. Either the LLM (through its LoRA adapter)
cannot learn to read motion from these tokens, or it got too little motion to learn from.

Each arm starts from the model folder (LLM in bf16 where the CPU has it, as stage 2 trains) and
trains on motion questions only: an open and a yes/no question about every shape of ``--clips``
fresh training-split clips (seed 11; answers as stage 2 teaches them), packed up to four to a
conversation, batch 16, stage 2's learning rates, no clip-attribute head. Arms:

* ``lora``: only the LLM's LoRA adapter learns; the soft tokens stay as they are;
* ``lora+qformer``: the adapter and the video branch (Q-Former, position embedding, projection),
  what stage 2 trains on the video side;
* ``lora+mlp``: the adapter, given LoRA matrices on the LLM's MLP layers too (same rank, B = 0, so
  the answers start as they were): is the attention-only adapter too small a reader?

Before and after, every short stage-2 question of ``--eval-clips`` held-out clips (seed 7) is
scored as ``experiments.fit_gap`` scores it (teacher-forced greedy, every answer token right),
per skill and form, so the other skills show what the motion steps cost them. Nothing is saved
but the arm's stage folder under ``runs/motion_reading``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from experiments.fit_gap import exact_answers, print_table
from model import lora
from model.weights.checkpoint import load_model
from train import llm_lora, stages
from train.recipes import toy_world
from train.toy_pipeline import instruct_examples, run_lm_stage
from train.trainer import make_accelerator
from train.world.pool import precompute, render_pool
from train.world.qa import qa_motion

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "motion_reading"
TRAIN_SEED, EVAL_SEED = 11, 7
MLP = ("gate_proj", "up_proj", "down_proj")
# arm -> (model branches that train beside the adapter, Linear layers the adapter also gets)
ARMS = {"lora": ((), ()), "lora+qformer": (("video",), ()), "lora+mlp": ((), MLP)}


def every_shape_motion(pool, seed: int = 0) -> None:
    """Replace each clip's questions by an open and a yes/no motion question about each of its shapes."""
    rng = np.random.default_rng(seed)
    pool.qas = [[qa for s in scene.shapes for qa in qa_motion(dataclasses.replace(scene, shapes=[s]), rng)]
                for scene in pool.scenes]


def widen_adapter(model, targets: tuple[str, ...]) -> None:
    """Give the folder's adapter LoRA matrices on ``targets`` as well, under the same name, so the
    engine's per-prompt switch (``llm_scope``) turns them on and off with the rest."""
    from peft import inject_adapter_in_model

    settings = dataclasses.replace(lora.settings_of(model.llm, model.llm_adapter), target_modules=targets)
    inject_adapter_in_model(settings.peft_config(), model.llm, adapter_name=model.llm_adapter)


def load(folder: str):
    precision = stages.backprop_llm_precision(torch.device("cpu"))
    model = load_model(folder, precision=precision, device="cpu", for_training=True)
    stages.prepare_backprop_llm(model.llm, torch.device("cpu"))
    return model


def motion_pool(model, clips: int):
    """The arms' training clips with only motion questions, and their frozen features (the same for
    every arm: the encoders do not train)."""
    pool = render_pool(model.config, clips, TRAIN_SEED)
    every_shape_motion(pool)
    return pool, precompute(model, pool)


def train_arm(folder: str, arm: str, pool, feats: dict[str, torch.Tensor], steps: int):
    model = load(folder)
    recipe = toy_world()
    branches, extra = ARMS[arm]
    if extra:
        widen_adapter(model, extra)
    llm_lora.attach(model, recipe)  # the folder's adapter: on and trainable (fp32), as stage 2 left it
    spec = dataclasses.replace(recipe.stages[2], name=arm.replace("+", "_"), branches=branches,
                               clip_attribute_weight=0.0, no_sound_share=0.0, image_share=0.0,
                               train=dataclasses.replace(recipe.stages[2].train, max_steps=steps,
                                                         save_every=steps, log_every=10))
    examples = instruct_examples(pool, model.tokenizer, model.config, spec.max_turns,
                                 yes_no_answers=spec.yes_no_answers, open_answers=spec.open_answers)
    n_lora = sum(p.numel() for _, p in lora.adapter_parameters(model.llm, model.llm_adapter))
    print(f"{arm}: {len(examples)} motion conversations on {len(pool.scenes)} clips, {steps} steps of "
          f"{spec.train.batch_size}, LoRA parameters {n_lora:,}", flush=True)
    out = OUT / arm.replace("+", "_")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    run_lm_stage(model, examples, feats, spec, out, make_accelerator(spec.train), False, recipe)
    print(f"{arm}: trained in {time.time() - t0:.0f} s", flush=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "toy-world"))
    parser.add_argument("--clips", type=int, default=800, help="training clips (every shape asked about)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-clips", type=int, default=40)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    trained = load(args.model)
    rows = {"as trained": exact_answers(trained, EVAL_SEED, args.eval_clips)}
    pool, feats = motion_pool(trained, args.clips)
    del trained
    for arm in arms:
        model = train_arm(args.model, arm, pool, feats, args.steps)
        rows[arm] = exact_answers(model, EVAL_SEED, args.eval_clips)
        del model
    print(f"\nexact answers on {args.eval_clips} held-out clips (seed {EVAL_SEED}), {args.model}; "
          f"arms: {args.steps} steps on motion questions of {args.clips} clips")
    print_table(rows)


if __name__ == "__main__":
    main()
