"""Does the model answer yes/no right on its own training clips? (Bias or a gap between clips.)

    python -m experiments.yes_no_fit [--model checkpoints/toy-world] [--clips 8] [--out runs/yes-no-fit]

Renders ``--clips`` training scenes (the recipe's seed 1) and as many held-out ones (the eval's
seed), asks each its yes/no questions through the chat engine (greedy, the eval's answerer) and
prints how often a true and a false claim got "yes", for both sets side by side. A model that
says "no" to true claims on the clips it was trained on does not fit yes/no at all; one that is
right there and wrong on new clips memorised them.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from evaluation.toy_world import EVAL_SEED, SAYS_YES, Item, engine_answerer, scene_items
from train.world.qa import score_answer

TRAIN_SEED = 1  # train.recipes.toy_world draws its training scenes with this seed


def yes_no_items(folder: Path, seed: int, n_clips: int) -> list[Item]:
    """The yes/no questions of the first ``n_clips`` training-split scenes of ``seed``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [item for item in scene_items(folder, n_clips, seed, "train") if item.qa.kind == "yes_no"]


def says_yes_table(answer, items: list[Item]) -> dict[bool, list[int]]:
    """{claim is true: [answers saying yes, questions]} plus the count of right answers under None."""
    table: dict = collections.defaultdict(lambda: [0, 0])
    for item in items:
        text = answer(item.path, item.qa.question)
        truth = item.qa.answer == "yes"
        table[truth][0] += score_answer(SAYS_YES, text)
        table[truth][1] += 1
        table[None][0] += score_answer(item.qa, text)
        table[None][1] += 1
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("checkpoints/toy-world"))
    parser.add_argument("--clips", type=int, default=8, help="clips of each set")
    parser.add_argument("--out", type=Path, default=Path("runs/yes-no-fit"), help="where the clips are rendered")
    args = parser.parse_args(argv)
    answer = engine_answerer(args.model)
    print(f"{'clips':<22}{'right':>8}{'yes | true':>12}{'yes | false':>13}{'n':>5}")
    for name, seed in (("training (seed 1)", TRAIN_SEED), (f"held-out (seed {EVAL_SEED})", EVAL_SEED)):
        t = says_yes_table(answer, yes_no_items(args.out, seed, args.clips))
        print(f"{name:<22}{t[None][0] / t[None][1]:>8.2f}{t[True][0] / max(t[True][1], 1):>12.2f}"
              f"{t[False][0] / max(t[False][1], 1):>13.2f}{t[None][1]:>5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
