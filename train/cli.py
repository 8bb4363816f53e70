"""`python launch.py train --recipe NAME [--quick] [--out DIR] [--resume] [--set KEY=VALUE ...]`.

Works the same on one CPU, one GPU, or several processes started by ``accelerate launch``
or ``torchrun`` (the trainer averages gradients across processes itself).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model.config import PRESETS
from train.overrides import apply_overrides
from train.recipes import RECIPES, get_recipe
from train.stages import LLM_PRECISIONS

ADAPTER_OBJECTIVES = ("caption", "instruct")  # the stages that train the video and audio adapters


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, choices=RECIPES, help="what to train")
    parser.add_argument("--quick", action="store_true", help="a few-minute version (toy-world only)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/<recipe>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out from its last checkpoint")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS), metavar="NAME",
                        help="paper recipes: the named architecture to train (default video-llama-2-7b); its "
                             "frozen weights come from --init")
    parser.add_argument("--init", type=Path, default=None,
                        help="paper recipes: model folder holding the frozen encoders (and the previous "
                             "stage's adapters), e.g. from `launch.py convert`")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="paper recipes: folder holding the original datasets")
    # --llm-precision: this command's older spelling, kept working.
    parser.add_argument("--precision", "--llm-precision", dest="precision", choices=LLM_PRECISIONS, default="auto",
                        help="LLM precision while gradients pass through it (default auto: bf16 on a GPU and on "
                             "a CPU with native bf16, else fp32)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="change a recipe setting, typed from its field (repeatable): stage2.lr=1e-4 (one "
                             "stage), image_share=0.2 (every stage), stage0.lr_scale.vision_encoder=3, "
                             "model.vision.stem_channels=16,32, world.n_train=500; see train/overrides.py")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is faster on a busy machine)")


def main(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = get_recipe(args.recipe, quick=args.quick, preset=args.preset)
    apply_settings(recipe, args)
    out = args.out or Path("runs") / recipe.name
    _refuse_to_mix(out, args.resume)
    if args.recipe == "toy-world":
        from train.toy_pipeline import run_toy_world

        final = run_toy_world(recipe, out, resume=args.resume, llm_precision=args.precision)
    else:
        from train.paper_pipeline import run_paper_stage

        if args.init is None or args.data_root is None:
            raise SystemExit(f"recipe {args.recipe} needs --init (a model folder with the frozen encoders) "
                             "and --data-root (the original datasets)")
        final = run_paper_stage(recipe, out, init=args.init, data_root=args.data_root, resume=args.resume,
                                llm_precision=args.precision)
    print(f"model folder: {final}")
    return 0


def apply_settings(recipe, args: argparse.Namespace) -> None:
    """Apply ``--set KEY=VALUE`` overrides; a bad key or value stops the command with its message."""
    try:
        apply_overrides(recipe, args.overrides)
    except (ValueError, KeyError) as err:
        raise SystemExit(f"error: {err}") from None


def _refuse_to_mix(out: Path, resume: bool) -> None:
    # A fresh run into a folder holding another run's state would silently mix the two.
    if not resume and out.exists() and any(out.glob("*/training_state.pt")):
        raise SystemExit(f"{out} already holds a training run; pass --resume to continue it or choose "
                         "another --out")
