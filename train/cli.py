"""`python launch.py train --recipe NAME [--quick] [--out DIR] [--resume]`.

Works the same on one CPU, one GPU, or several processes started by ``accelerate launch``
or ``torchrun`` (the trainer averages gradients across processes itself).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from train.recipes import RECIPES, YES_NO_ANSWERS, get_recipe
from train.stages import LLM_PRECISIONS

ADAPTER_OBJECTIVES = ("caption", "instruct")  # the stages that train the video and audio adapters


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, choices=RECIPES, help="what to train")
    parser.add_argument("--quick", action="store_true", help="a few-minute version (toy-world only)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/<recipe>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out from its last checkpoint")
    parser.add_argument("--preset", default=None,
                        help="model preset for the paper recipes (default video-llama-2-7b)")
    parser.add_argument("--init", type=Path, default=None,
                        help="paper recipes: model folder holding the frozen encoders (and the previous "
                             "stage's adapters), e.g. from `launch.py convert`")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="paper recipes: folder holding the original datasets")
    parser.add_argument("--llm-precision", choices=LLM_PRECISIONS, default="auto",
                        help="the frozen LLM while gradients pass through it (default: bf16 on a GPU and on a "
                             "CPU with native bf16, else fp32)")
    toy = parser.add_argument_group("toy-world options (each defaults to the recipe's own setting, the "
                                    "bundled model's; see checkpoints/toy-world/README.md)")
    toy.add_argument("--caption-loss", type=float, default=None, metavar="W",
                     help="stage 0: weight of BLIP-2-style frame-caption generation beside the contrastive loss")
    toy.add_argument("--attribute-loss", type=float, default=None, metavar="W",
                     help="stage 0: weight of supervised (shape, colour, place) questions about each frame")
    toy.add_argument("--stem", type=_channels, default=None, metavar="C1,C2|none",
                     help="stage 0: channels of the small ViT's convolutional stem, or 'none' for a bare "
                          "patch embedding")
    toy.add_argument("--vision-lr-scale", type=float, default=None, metavar="X",
                     help="stage 0: multiply the vision encoder's learning rate by X")
    toy.add_argument("--adapter-lr-scale", type=float, default=None, metavar="X",
                     help="stages 1 and 2: multiply the video and audio Q-Formers' learning rate by X")
    toy.add_argument("--centre-weight", type=float, default=None, metavar="W",
                     help="stages 1 and 2: weight of a penalty on the share of the soft tokens that is the same "
                          "for every clip of a batch")
    toy.add_argument("--yes-no-answers", choices=YES_NO_ANSWERS, default=None,
                     help="stage 2: teach yes/no answers as the short verdict ('No.') or as the fact, then the "
                          "verdict ('The circle is red, so no.')")
    toy.add_argument("--no-sound-share", type=float, default=None, metavar="F",
                     help="stage 2: share of conversations about the video as a file without a sound track")
    toy.add_argument("--image-share", type=float, default=None, metavar="F",
                     help="stages 1 and 2: share of clips that also give one frame as a still image (caption, "
                          "colour/shape/count questions)")
    toy.add_argument("--stage-steps", type=_counts, default=None, metavar="N0,N1,N2",
                     help="optimizer steps of stages 0, 1 and 2 (fewer for a quicker, weaker model)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is faster on a busy machine)")


def main(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = get_recipe(args.recipe, quick=args.quick, preset=args.preset)
    apply_toy_options(recipe, args)
    out = args.out or Path("runs") / recipe.name
    _refuse_to_mix(out, args.resume)
    if args.recipe == "toy-world":
        from train.toy_pipeline import run_toy_world

        final = run_toy_world(recipe, out, resume=args.resume, llm_precision=args.llm_precision)
    else:
        from train.paper_pipeline import run_paper_stage

        if args.init is None or args.data_root is None:
            raise SystemExit(f"recipe {args.recipe} needs --init (a model folder with the frozen encoders) "
                             "and --data-root (the original datasets)")
        final = run_paper_stage(recipe, out, init=args.init, data_root=args.data_root, resume=args.resume,
                                llm_precision=args.llm_precision)
    print(f"model folder: {final}")
    return 0


def _positive_ints(text: str, what: str, example: str) -> tuple[int, ...]:
    """``"16,32"`` -> ``(16, 32)``; anything else is an argparse error naming ``what``."""
    try:
        values = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give {what} such as {example}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: {what} must be positive, such as {example}")
    return values


def _counts(text: str) -> tuple[int, ...]:
    return _positive_ints(text, "step counts", "800,100,900")


def _channels(text: str) -> tuple[int, ...]:
    if text.strip().lower() == "none":
        return ()
    return _positive_ints(text, "channel counts (or none)", "16,32")


def apply_toy_options(recipe, args: argparse.Namespace) -> None:
    """Set the toy-world options given on the command line; refuse them for other recipes."""
    flags = (("--caption-loss", args.caption_loss), ("--attribute-loss", args.attribute_loss), ("--stem", args.stem),
             ("--vision-lr-scale", args.vision_lr_scale), ("--adapter-lr-scale", args.adapter_lr_scale),
             ("--centre-weight", args.centre_weight), ("--yes-no-answers", args.yes_no_answers),
             ("--stage-steps", args.stage_steps), ("--no-sound-share", args.no_sound_share),
             ("--image-share", args.image_share))
    given = [flag for flag, value in flags if value is not None]
    if given and args.recipe != "toy-world":
        raise SystemExit(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to the toy-world "
                         "recipe only")
    stage0 = recipe.stages[0]
    if args.caption_loss is not None:
        stage0.caption_weight = args.caption_loss
    if args.attribute_loss is not None:
        stage0.attribute_weight = args.attribute_loss
    if args.stem is not None:
        recipe.model["vision"]["stem_channels"] = list(args.stem)
    if args.vision_lr_scale is not None:
        stage0.train.lr_scale = {**stage0.train.lr_scale, "vision_encoder": args.vision_lr_scale}
    adapter_stages = [spec for spec in recipe.stages if spec.objective in ADAPTER_OBJECTIVES]
    if args.adapter_lr_scale is not None:
        for spec in adapter_stages:
            spec.train.lr_scale = {**spec.train.lr_scale, "video_qformer": args.adapter_lr_scale,
                                   "audio_qformer": args.adapter_lr_scale}
    if args.centre_weight is not None:
        for spec in adapter_stages:
            spec.centre_weight = args.centre_weight
    if args.yes_no_answers is not None:
        for spec in recipe.stages:
            if spec.objective == "instruct":
                spec.yes_no_answers = args.yes_no_answers
    for flag, value, field, objectives in (("--no-sound-share", args.no_sound_share, "no_sound_share", ("instruct",)),
                                           ("--image-share", args.image_share, "image_share", ADAPTER_OBJECTIVES)):
        if value is None:
            continue
        if not 0 <= value <= 1:
            raise SystemExit(f"{flag} is a share between 0 and 1, not {value}")
        for spec in recipe.stages:
            if spec.objective in objectives:
                setattr(spec, field, value)
    if args.stage_steps is not None:
        if len(args.stage_steps) != len(recipe.stages):
            raise SystemExit(f"--stage-steps needs {len(recipe.stages)} counts (stages "
                             f"{', '.join(s.name for s in recipe.stages)}), got {len(args.stage_steps)}")
        for spec, steps in zip(recipe.stages, args.stage_steps, strict=True):
            spec.train.max_steps = steps
            spec.train.warmup_steps = min(spec.train.warmup_steps, steps)


def _refuse_to_mix(out: Path, resume: bool) -> None:
    # A fresh run into a folder holding another run's state would silently mix the two.
    if not resume and out.exists() and any(out.glob("*/training_state.pt")):
        raise SystemExit(f"{out} already holds a training run; pass --resume to continue it or choose "
                         "another --out")
