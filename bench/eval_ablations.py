"""Ablations of the seed paper's open questions, at toy-world scale, through the eval runner.

    python -m bench.eval_ablations frames [--clips N]         # 1, 4, 8, 16 frames per clip
    python -m bench.eval_ablations frame-pos [--clips N]      # frame position embedding as trained / zeroed
    python -m bench.eval_ablations sound [--clips N]          # sound on / off, questions that need it or not
    python -m bench.eval_ablations false-premise [--clips N]  # share of "yes" to false and true claims
    python -m bench.eval_ablations audio-branch [--run]       # the paper's audio branch vs audio-caption pairs

Every run asks the bundled model (``checkpoints/toy-world``) the held-out toy-world questions
of ``--clips`` clips (split new-clips, about 17 questions a clip), greedy, and keeps its answers
in ``runs/ablations/<variant>`` (resumable; the 8-frame, sound-on, positions-on run is shared
by every ablation). Scores are the world's keyword rule; each cell gives the share right and
its question count. "Needs sound" is the toy world's own list (``toy_world.NEEDS_SOUND``).
Zeroing the frame position embedding is done at inference on the loaded weights: the model was
trained with it, so this measures how much the trained model leans on frame order, not what a
model trained without it would do.

``audio-branch`` needs two trainings of the toy-world recipe at reduced sizes (34 and 36 minutes on
2 idle cores with native bf16, about twice that without): one trains the audio branch on audio
clips and their sound captions (the recipe as it is), the other as the paper (``--set
audio_from=vision``, ``train/al_toy.py``): the audio branch learns from frames through a small
image tower bound to the audio encoder's space, on the video's texts, and reads real audio only at
inference. Without ``--run`` it prints the two training commands and the eval command; with
``--run`` it runs them in turn (a finished arm is kept, an interrupted one resumed) and prints the
table on the questions that need sound and those that do not. The toy world's pitch and pattern are
drawn independently of what is seen (only event sounds are tied to a shape appearing or leaving),
so frames can tell the audio branch little about them: the ablation measures what the shared-space
trick transfers when the picture does not predict the sound (at these sizes: questions that need
sound 0.38 via the image side against 0.72 via audio captions, bench/README.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

from evaluation.readers import toy
from evaluation.runner import ANSWERS, Runner, RunSettings, read_answers
from evaluation.summary import metric_values, wilson
from evaluation.toy_world import DEFAULT_MODEL, NEEDS_SOUND
from model.weights.checkpoint import load_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "ablations"
# audio-branch: the same reduced sizes for both arms (the stage-0 probe skipped) ...
# (stage 2 at 100 steps taught neither arm sound: pitch 0.52 / 0.57 against the full recipe's 0.96)
AUDIO_BRANCH_SIZES = {"world.n_train": 1000, "world.probe_clips": 0, "stage0.max_steps": 600,
                      "stage1.max_steps": 100, "stage2.max_steps": 400}
# ... timed with the recipe's seconds per clip rendered and per step of checkpoints/toy-world/README.md
# on a CPU with native bf16 (render about 80 s for 2,000 clips; stage 0 779 s for 1,200 steps;
# stage 1 124 s for 100; stage 2 3,504 s for 900); without it, about twice as long.
README_SECONDS = {"render": 80 / 2000, "stage0": 779 / 1200, "stage1": 124 / 100, "stage2": 3504 / 900}
OVERHEAD_S = 95  # LLM load, frozen features, saving: outside the README's per-stage times
AUDIO_ARMS = {  # name -> (audio_from, output folder relative to the repository)
    "audio-caption": ("audio", Path("runs") / "ablate-audio-caption"),
    "via-image": ("vision", Path("runs") / "ablate-audio-via-image"),
}


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


def train_command(arm: str) -> list[str]:
    """The training command of one audio-branch arm (run from the repository's root)."""
    audio_from, out = AUDIO_ARMS[arm]
    sets = [f"{k}={v}" for k, v in AUDIO_BRANCH_SIZES.items()]
    if audio_from == "vision":
        sets.append("audio_from=vision")
    return ["python", "launch.py", "train", "--recipe", "toy-world", "--out", str(out),
            *(x for item in sets for x in ("--set", item))]


def estimate_minutes() -> float:
    """One arm's wall time on the idle 2 cores, from the README's per-clip and per-step seconds."""
    steps = sum(v * README_SECONDS[k.split(".")[0]] for k, v in AUDIO_BRANCH_SIZES.items() if k.endswith("max_steps"))
    return (AUDIO_BRANCH_SIZES["world.n_train"] * README_SECONDS["render"] + steps + OVERHEAD_S) / 60


def eval_command(clips: int) -> list[str]:
    return ["python", "launch.py", "eval", "--suite", "toy-world", "--clips", str(clips), "--output",
            f"runs/ablations/audio-branch-{clips}",
            *(x for _, out in AUDIO_ARMS.values() for x in ("--model", str(out / "final")))]


def print_audio_branch(clips: int) -> None:
    print(f"Two trainings, the same reduced sizes, about {estimate_minutes():.0f} minutes each on 2 idle "
          "cores with native bf16 (the model card's per-step times; about twice that without):")
    for arm, (audio_from, _) in AUDIO_ARMS.items():
        what = ("audio clips and their sound captions" if audio_from == "audio" else
                "frames through the image tower, on the video's captions and instructions (the paper)")
        print(f"  {arm}: the audio branch trained on {what}\n    {' '.join(train_command(arm))}")
    print("Then both on the same held-out questions (answers as final = audio-caption, final#2 = via-image; "
          "the sound skills are sound_pitch, sound_pattern, audio_visual, two_part):\n"
          f"    {' '.join(eval_command(clips))}")


def train_arm(arm: str) -> Path:
    """Train one arm unless its model folder exists; an interrupted run is resumed."""
    out = ROOT / AUDIO_ARMS[arm][1]
    final = out / "final"
    if (final / "config.json").is_file():
        print(f"{arm}: {final} exists, not retrained")
        return final
    cmd = [sys.executable, *train_command(arm)[1:]]
    if any(out.glob("*/training_state.pt")):
        cmd.append("--resume")
    print(f"{arm}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return final


def run_audio_branch(questions: list, clips: int) -> None:
    folders = {arm: train_arm(arm) for arm in AUDIO_ARMS}
    settings = RunSettings(suite="toy-world", models={k: str(v) for k, v in folders.items()}, frames=8,
                           max_new_tokens=48, variant={"ablation": "audio-branch"})
    out = OUT / f"audio-branch-{clips}"
    runner = Runner({k: load_model(v) for k, v in folders.items()}, settings, out, progress=True)
    try:
        runner.run(questions)
    finally:
        runner.close()
    keys = {q.key for q in questions}
    recs = [r for r in read_answers(out / ANSWERS) if r.key in keys and r.status == "answered"]
    print("| audio branch trained on | needs sound | sound_pitch | sound_pattern | needs no sound |\n"
          "|---|---|---|---|---|")
    for arm in AUDIO_ARMS:
        mine = [r for r in recs if r.model == arm]
        print(f"| {arm} | {cell(mine, keep=needs_sound)} | {cell(mine, keep=lambda r: r.task == 'sound_pitch')} "
              f"| {cell(mine, keep=lambda r: r.task == 'sound_pattern')} "
              f"| {cell(mine, keep=lambda r: not needs_sound(r))} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ablation", choices=("frames", "frame-pos", "sound", "false-premise", "audio-branch"))
    parser.add_argument("--clips", type=int, default=12, help="held-out clips (about 17 questions each)")
    parser.add_argument("--run", action="store_true",
                        help="audio-branch: train both arms in turn (hours of CPU), then compare them")
    args = parser.parse_args()
    if args.ablation == "audio-branch" and not args.run:
        print_audio_branch(args.clips)
        return
    questions = toy.read(ROOT / "runs" / "eval-media", args.clips)
    if args.ablation == "audio-branch":
        run_audio_branch(questions, args.clips)
        return
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
