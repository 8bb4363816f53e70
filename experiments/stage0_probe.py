"""Would this stage 0 give features that hold shape and binding? Stage 0 alone, then the probe.

    python -m experiments.stage0_probe [--set KEY=VALUE ...] [--probe-clips 400] [--probe-steps 400]
                                       [--out runs/stage0-probe] [--threads N]

Runs only stage 0 of the toy-world recipe (the same code as ``train --recipe toy-world``, with
the same ``--set`` overrides, e.g. ``--set stage0.max_steps=1500 --set model.vision.stem_channels=16,32``)
and then the stage-0 probe of ``train/probe.py`` on held-out clips, so a stage-0 idea costs
minutes instead of the whole recipe's hour. Prints the stage's seconds and the probe table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from model.config import VideoLlamaConfig
from model.video_llama import build_model
from train.overrides import apply_overrides
from train.recipes import toy_world
from train.toy_pipeline import run_probe, run_stage0
from train.trainer import make_accelerator
from train.world.pool import render_pool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="a toy-world recipe override, as for `launch.py train` (repeatable)")
    parser.add_argument("--probe-clips", type=int, default=400)
    parser.add_argument("--probe-steps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("runs/stage0-probe"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = toy_world()
    apply_overrides(recipe, args.overrides)
    spec = recipe.stages[0]
    cfg = VideoLlamaConfig.from_dict(recipe.model)
    acc = make_accelerator(spec.train)
    torch.manual_seed(recipe.world["seed"])
    model = build_model(cfg, device=acc.device, with_llm=False)
    t0 = time.time()
    pool = render_pool(cfg, recipe.world["n_train"], recipe.world["seed"])
    t_render = time.time() - t0
    run_stage0(model, pool, spec, args.out, acc, resume=False)
    t_stage = time.time() - t0 - t_render
    print(f"settings: {' '.join(args.overrides) or '(the recipe as it is)'}")
    print(f"render {t_render:.0f} s ({len(pool.scenes)} clips), stage 0 {t_stage:.0f} s "
          f"({spec.train.max_steps} steps of {spec.train.batch_size})")
    # The recipe's own probe step: its table and warnings in the log, probe.{json,txt} in --out.
    recipe.world.update(probe_clips=args.probe_clips, probe_steps=args.probe_steps)
    run_probe(model, recipe, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
