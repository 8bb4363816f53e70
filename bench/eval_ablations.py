"""Ablations of the seed paper's open questions, at toy-world scale, through the eval runner.

    python -m bench.eval_ablations frames [--clips N]         # 1, 4, 8, 16 frames per clip
    python -m bench.eval_ablations frame-pos [--clips N]      # frame position embedding as trained / zeroed
    python -m bench.eval_ablations sound [--clips N]          # sound on / off, questions that need it or not
    python -m bench.eval_ablations false-premise [--clips N]  # share of "yes" to false and true claims
    python -m bench.eval_ablations audio-branch               # prints the training commands (not run here)

Every run asks the bundled model (``checkpoints/toy-world``) the held-out toy-world questions
of ``--clips`` clips (split new-clips, about 17 questions a clip), greedy, and keeps its answers
in ``runs/ablations/<variant>`` (resumable; the 8-frame, sound-on, positions-on run is shared
by every ablation). Scores are the world's keyword rule; each cell gives the share right and
its question count. "Needs sound" is the toy world's own list (``toy_world.NEEDS_SOUND``).
Zeroing the frame position embedding is done at inference on the loaded weights: the model was
trained with it, so this measures how much the trained model leans on frame order, not what a
model trained without it would do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from evaluation.readers import toy
from evaluation.runner import ANSWERS, Runner, RunSettings, read_answers
from evaluation.summary import metric_values, wilson
from evaluation.toy_world import DEFAULT_MODEL, NEEDS_SOUND
from model.weights.checkpoint import load_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "ablations"
AUDIO_BRANCH = """Needs two training runs (about an hour each on 2 free cores; not run here, the CPU is shared):
  A, audio branch trained on audio-caption pairs (the toy recipe: stage 0 contrastive on the clips' sound,
     stages 1-2 captions and instructions with the sound):
       python launch.py train --recipe toy-world --out runs/ablate-audio-caption
  B, audio branch trained through ImageBind's image side (the paper's AL stages): train/al_visual.py holds that
     path and train/paper_pipeline.py uses it for the paper's stages; the toy-world recipe has no switch for it
     yet, so B needs that switch first (not built).
  Then compare both on the sound questions:
       python launch.py eval --suite toy-world --output runs/ablations/audio-branch \\
           --model runs/ablate-audio-caption --model runs/ablate-audio-via-image
"""


def run_variant(name: str, questions: list, *, frames: int = 8, use_audio: bool = True,
                zero_frame_pos: bool = False) -> list:
    model = load_model(DEFAULT_MODEL)
    if zero_frame_pos:
        with torch.no_grad():
            model.frame_position_embedding.weight.zero_()
    settings = RunSettings(suite="toy-world", models={"toy-world": str(DEFAULT_MODEL)}, frames=frames,
                           use_audio=use_audio, max_new_tokens=48,
                           variant={"zero_frame_position_embedding": zero_frame_pos})
    runner = Runner({"toy-world": model}, settings, OUT / name, progress=True)
    try:
        runner.run(questions)
    finally:
        runner.close()
    keys = {q.key for q in questions}
    return [r for r in read_answers(OUT / name / ANSWERS) if r.key in keys and r.status == "answered"]


def cell(records: list, metric: str = "keyword", keep=lambda r: True) -> str:
    vals = [metric_values(r)[metric] for r in records if keep(r) and metric in metric_values(r)]
    if not vals:
        return "-"
    low, high = wilson(sum(vals), len(vals))
    return f"{sum(vals) / len(vals):.3f} [{low:.2f}, {high:.2f}] n={len(vals)}"


def needs_sound(record) -> bool:
    return record.task in NEEDS_SOUND


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ablation", choices=("frames", "frame-pos", "sound", "false-premise", "audio-branch"))
    parser.add_argument("--clips", type=int, default=12, help="held-out clips (about 17 questions each)")
    args = parser.parse_args()
    if args.ablation == "audio-branch":
        print(AUDIO_BRANCH)
        return
    questions = toy.read(ROOT / "runs" / "eval-media", args.clips)
    print(f"{len(questions)} toy-world questions on {args.clips} clips (split new-clips), checkpoints/toy-world, "
          "greedy; keyword accuracy [95% interval] n=questions\n")
    base = lambda: run_variant(f"base-{args.clips}", questions)  # noqa: E731 - run only when asked
    if args.ablation == "frames":
        print("| frames | all | needs sound | needs no sound |\n|---|---|---|---|")
        for n in (1, 4, 8, 16):
            recs = base() if n == 8 else run_variant(f"frames{n}-{args.clips}", questions, frames=n)
            print(f"| {n} | {cell(recs)} | {cell(recs, keep=needs_sound)} "
                  f"| {cell(recs, keep=lambda r: not needs_sound(r))} |")
    elif args.ablation == "frame-pos":
        print("| frame position embedding | all | motion | temporal_order |\n|---|---|---|---|")
        for label, recs in (("as trained", base()),
                            ("zeroed", run_variant(f"framepos0-{args.clips}", questions, zero_frame_pos=True))):
            print(f"| {label} | {cell(recs)} | {cell(recs, keep=lambda r: r.task == 'motion')} "
                  f"| {cell(recs, keep=lambda r: r.task == 'temporal_order')} |")
    elif args.ablation == "sound":
        print("| sound | needs sound | needs no sound |\n|---|---|---|")
        for label, recs in (("on", base()), ("off", run_variant(f"nosound-{args.clips}", questions,
                                                                 use_audio=False))):
            print(f"| {label} | {cell(recs, keep=needs_sound)} | {cell(recs, keep=lambda r: not needs_sound(r))} |")
    else:
        recs = base()
        print("| claim | share answered yes |\n|---|---|")
        print(f"| false (hallucination) | {cell(recs, 'says_yes_false')} |")
        print(f"| true | {cell(recs, 'says_yes_true')} |")


if __name__ == "__main__":
    main()
