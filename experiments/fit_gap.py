"""Does a model folder answer its own training clips better than new ones? Underfit or overfit.

    python -m experiments.fit_gap [--model checkpoints/toy-world] [--clips 60]

Renders the first ``--clips`` scenes of the toy-world recipe's training pool exactly as
training saw them (``render_pool`` with the recipe's seed) and as many scenes it never saw
(seed 7), asks every short stage-2 question of each (single-turn, the answers stage 2
teaches), and prints
per skill and question form (open / yes-no) the fraction whose every answer token the model
predicts right (teacher-forced greedy, on the precomputed features stages 1 and 2 train on).

Far better on training clips than on new ones: the model memorises, and more or more varied
clips should help. The same on both: it underfits, and data will not help; the adapters or
the frozen LLM's reading of them are the limit. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch

from model.weights.checkpoint import load_model
from train import stages
from train.recipes import toy_world
from train.toy_pipeline import instruct_examples
from train.world.pool import precompute, render_pool

ROOT = Path(__file__).resolve().parents[1]

FORMS = {"open": "open", "yes_no": "yes/no"}  # QA.kind -> column label
SEEDS = {"training clips": toy_world().world["seed"], "new clips": 7}  # the recipe's pool; one it never drew


@torch.no_grad()
def exact_answers(model, seed: int, clips: int) -> dict[tuple[str, str], list[bool]]:
    pool = render_pool(model.config, clips, seed)
    feats = {k: v.float() for k, v in precompute(model, pool).items()}
    # Answers in the forms the recipe's stage 2 teaches ("The circle is red, so no.").
    spec = toy_world().stages[2]
    examples = [ex for ex in instruct_examples(pool, model.tokenizer, model.config, max_turns=1,
                                               yes_no_answers=spec.yes_no_answers, open_answers=spec.open_answers)
                if ex.meta["skill"] != "description"]
    embed = model.llm.get_input_embeddings()
    right = defaultdict(list)
    for i in range(0, len(examples), 16):
        batch = examples[i:i + 16]
        rows = torch.tensor([ex.clip for ex in batch])
        media = stages.media_tokens(model, {k: v[rows] for k, v in feats.items()})  # slot -> (B, Q, D)
        with model.llm_scope(media=True):  # the LoRA adapter, as the engine runs prompts with media
            hits = stages.exact_answers(model.llm, *stages.assemble(embed, batch, media))
        for ex, hit in zip(batch, hits, strict=True):
            right[(ex.meta["skill"], FORMS[ex.meta["kind"]])].append(hit)
    return right


def print_table(columns: dict[str, dict[tuple[str, str], list[bool]]]) -> None:
    """One row per (skill, form), one column per named result of ``exact_answers``: share right (count)."""
    print(f"  {'skill':15s} {'form':7s} " + " ".join(f"{name:>16s}" for name in columns))
    for key in sorted({k for r in columns.values() for k in r}):
        cells = [f"{sum(r[key]) / len(r[key]):.2f} ({len(r[key]):3d})" if r.get(key) else "-" for r in columns.values()]
        print(f"  {key[0]:15s} {key[1]:7s} " + " ".join(f"{c:>16s}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "toy-world"))
    parser.add_argument("--clips", type=int, default=60, help="scenes per set (about 16 questions each)")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    results = {}
    for name, seed in SEEDS.items():
        t0 = time.time()
        results[name] = exact_answers(model, seed, args.clips)
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
    print(f"\nexact answers, {args.model}, {args.clips} scenes per set")
    print_table(results)
    for name, r in results.items():
        answers = [ok for oks in r.values() for ok in oks]
        print(f"  all questions, {name}: {sum(answers) / len(answers):.3f} of {len(answers)}")


if __name__ == "__main__":
    main()
