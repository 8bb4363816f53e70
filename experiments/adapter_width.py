"""Does a wider video/audio Q-Former fit the toy world faster? Short stages 1 and 2, side by side.

    python -m experiments.adapter_width [--model checkpoints/toy-world] [--widths 128,384] [--video-queries 16]
                                  [--lr-scales 1] [--centre-weights 0] [--stage1-steps 40] [--stage2-steps 150]
                                  [--out /tmp/adapter_width]

The bundled model underfits its own training clips (``experiments/fit_gap.py``), and its adapters are
narrow (Q-Former width 128, against the frozen LLM's 576). This runs the recipe's stages 1 and 2,
shortened, once per width on the same frozen encoders (read from ``--model``), the same rendered
clips, the same batches in the same order and the same seed for the fresh adapters, and prints
the training loss of each: if width were what holds the model back, the wider adapters' loss
would fall faster. Loss is logged every 5 steps; the table gives the mean of each fifth of the
stage-2 log, how many logged points the first width is below each other width, and the seconds
per stage-2 step. Width w uses w // 64 heads and an MLP of 4 w (128 keeps the recipe's own
4 heads and 256). ``--video-queries`` also tries other counts of video soft tokens (the original
has 32); ``--lr-scales`` multiplies the learning rate of the adapter Q-Formers named by ``--lr-modules``
(default both; not the projections); ``--centre-weights`` tries ``train --centre-weight`` (a
penalty on the soft tokens' share that is the same for every clip). Every combination is run.
The logged training loss includes that penalty, so each run also prints its plain answer loss
afterwards, in eval mode, on the same 8 batches of stage-2 examples.

After each run it also prints how much of the soft tokens depends on the clip: over 64 training
clips, the mean length of (token - that position's mean over the clips) divided by the mean token
length. The bundled model's video tokens are 8% clip-dependent (norm 23 against SmolLM2's
word embeddings' 3.2): the rest is one constant vector per position that the LLM sees in every
video.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch

from model.config import VideoLlamaConfig
from model.video_llama import build_model
from model.weights.checkpoint import load_model
from train import stages
from train.recipes import toy_world
from train.toy_pipeline import (
    batch_features,
    caption_examples,
    instruct_examples,
    match_word_scale,
    run_lm_stage,
)
from train.trainer import make_accelerator
from train.world.pool import precompute, render_pool

ROOT = Path(__file__).resolve().parents[1]

ADAPTERS = ("video_qformer", "audio_qformer")


def widened(cfg: VideoLlamaConfig, width: int, video_queries: int) -> dict:
    """``cfg`` as a dict with both adapter Q-Formers at ``width`` and ``video_queries`` video tokens."""
    d = copy.deepcopy(cfg.to_dict())
    d["video_qformer"]["num_queries"] = video_queries
    if width != d["video_qformer"]["hidden_size"]:
        for name in ADAPTERS:
            d[name].update(hidden_size=width, num_heads=max(1, width // 64), intermediate_size=4 * width)
    return d


def shortened(spec, steps: int):
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, max_steps=steps, save_every=10**9))


def log_losses(folder: Path) -> tuple[list[float], float]:
    """Logged losses of a stage, and its seconds per step between the first and last log line."""
    rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    per_step = (rows[-1]["time"] - rows[0]["time"]) / max(1, rows[-1]["step"] - rows[0]["step"])
    return [r["loss"] for r in rows], per_step


def clip_dependence(model, feats: dict[str, torch.Tensor], sample: int = 64) -> dict[str, tuple[float, float]]:
    """Per branch: (mean soft-token length, share of it that varies from clip to clip).

    In eval mode: the adapter Q-Formers' dropout would otherwise add spread of its own.
    """
    rows = torch.arange(min(sample, next(iter(feats.values())).shape[0]))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        tokens = stages.media_tokens(model, {k: v[rows].float() for k, v in feats.items() if k != "image"})
    model.train(was_training)
    out = {}
    for name, t in tokens.items():  # (B, Q, D)
        t = t.float()
        spread = (t - t.mean(0, keepdim=True)).norm(dim=-1).mean()  # about each position's mean over clips
        length = t.norm(dim=-1).mean()
        out[name] = (float(length), float(spread / length))
    return out


@torch.no_grad()
def answer_loss(model, examples, feats: dict[str, torch.Tensor], batches: int = 8, size: int = 16) -> float:
    """Mean stage-2 loss without any penalty, in eval mode, on the same ``batches`` for every run."""
    g = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    model.eval()
    losses = []
    for _ in range(batches):
        rows = torch.randint(len(examples), (size,), generator=g).tolist()
        batch = [examples[r] for r in rows]
        losses.append(float(stages.lm_batch_loss(model, batch, batch_features(batch, feats, device))[0]))
    return sum(losses) / len(losses)


def run_variant(width: int, queries: int, lr_scale: dict[str, float], centre: float, source, pool, feats, llm, tok,
                specs, acc, out: Path) -> dict[str, tuple[float, float]]:
    """Fresh adapters of ``width`` on ``source``'s frozen encoders, through shortened stages 1 and 2;
    returns ``clip_dependence`` of the trained adapters and, under "answer loss", ``answer_loss``."""
    cfg = VideoLlamaConfig.from_dict(widened(source.config, width, queries))
    torch.manual_seed(1)  # the same fresh-adapter draw for every width that shares shapes
    model = build_model(cfg, device=acc.device, with_llm=False)
    for prefixes in stages.ENCODER_PREFIXES.values():
        for name in (p.rstrip(".") for p in prefixes):
            getattr(model, name).load_state_dict(getattr(source, name).state_dict())
    model.llm, model.tokenizer = llm, tok
    match_word_scale(model, feats)
    s1, s2 = (dataclasses.replace(s, train=dataclasses.replace(s.train, lr_scale=lr_scale), centre_weight=centre)
              for s in specs)
    ex1 = caption_examples(pool, tok, image_share=s1.image_share)
    ex2 = instruct_examples(pool, tok, cfg, s2.max_turns, yes_no_answers=s2.yes_no_answers,
                            no_sound_share=s2.no_sound_share, image_share=s2.image_share,
                            open_answers=s2.open_answers)
    run_lm_stage(model, ex1, feats, s1, out, acc, False)
    run_lm_stage(model, ex2, feats, s2, out, acc, False)
    return {**clip_dependence(model, feats), "answer loss": answer_loss(model, ex2, feats)}


def report(variants: list[str], out: Path, dependence: dict[str, dict]) -> None:
    logs = {v: log_losses(out / v / "stage2") for v in variants}
    n = min(len(losses) for losses, _ in logs.values())
    parts = min(5, n)  # fifths, or fewer parts on a run too short to log five points
    size = n // parts
    print(f"\nstage-2 training loss, mean of each of {parts} parts of {n} logged points (every 5 steps)")
    print(f"  {'adapters':>9}  " + "  ".join(f"{i + 1}/{parts}".rjust(6) for i in range(parts)) + "   s/step")
    for v, (losses, per_step) in logs.items():
        cells = [sum(losses[i * size:(i + 1) * size]) / size for i in range(parts)]
        print(f"  {v:>9}  " + "  ".join(f"{c:6.3f}" for c in cells) + f"   {per_step:6.2f}")
    first, rest = variants[0], variants[1:]
    for v in rest:
        below = sum(a < b for a, b in zip(logs[first][0][:n], logs[v][0][:n], strict=True))
        print(f"  {first} below {v} at {below} of {n} logged points (same batches)")
    print("\nsoft tokens after training: mean length, and the share that varies from clip to clip")
    for v in variants:
        tokens = {k: x for k, x in dependence[v].items() if k != "answer loss"}
        shares = "   ".join(f"{name} {length:5.1f} {share:4.0%}" for name, (length, share) in tokens.items())
        print(f"  {v:>9}  {shares}"
              f"   answer loss {dependence[v]['answer loss']:.3f} (no penalty, 8 fixed batches, eval mode)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "checkpoints" / "toy-world",
                        help="model folder whose frozen encoders are used")
    parser.add_argument("--widths", default="128,384")
    parser.add_argument("--video-queries", default=None,
                        help="counts of video query tokens to try (default: the model's own)")
    parser.add_argument("--lr-scales", default="1",
                        help="learning-rate multipliers for the adapter Q-Formers to try")
    parser.add_argument("--lr-modules", default=",".join(ADAPTERS),
                        help="which of video_qformer, audio_qformer --lr-scales applies to")
    parser.add_argument("--centre-weights", default="0",
                        help="weights of the penalty on the soft tokens' clip-independent share to try")
    parser.add_argument("--stage1-steps", type=int, default=40)
    parser.add_argument("--stage2-steps", type=int, default=150)
    parser.add_argument("--out", type=Path, default=Path("/tmp/adapter_width"))
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]

    recipe = toy_world()
    _, s1, s2 = recipe.stages
    specs = (shortened(s1, args.stage1_steps), shortened(s2, args.stage2_steps))
    acc = make_accelerator(specs[0].train)
    # Gradients pass through the frozen LLM, so it is loaded once, in the precision training uses.
    # for_training: its own copies, since the adapters trained here must not reach shared encoders.
    source = load_model(args.model, device=acc.device, for_training=True,
                        precision=stages.backprop_llm_precision(acc.device, "auto"))
    t0 = time.time()
    pool = render_pool(source.config, recipe.world["n_train"], recipe.world["seed"])
    print(f"rendered {len(pool.scenes)} clips in {time.time() - t0:.0f} s", flush=True)
    feats = precompute(source, pool)
    llm, tok = source.llm, source.tokenizer
    stages.prepare_backprop_llm(llm, acc.device)
    counts = ([int(q) for q in args.video_queries.split(",")] if args.video_queries
              else [source.config.video_qformer.num_queries])
    scales = [float(x) for x in args.lr_scales.split(",")]
    modules = args.lr_modules.split(",")
    if not set(modules) <= set(ADAPTERS):
        parser.error(f"--lr-modules: choose among {', '.join(ADAPTERS)}")
    tag = "" if set(modules) == set(ADAPTERS) else "-" + "-".join(m.split("_")[0] for m in modules)
    centres = [float(c) for c in args.centre_weights.split(",")]
    variants = {f"w{w}-q{q}" + (f"-lr{x:g}{tag}" if x != 1 else "") + (f"-c{c:g}" if c else ""):
                (w, q, {m: x for m in modules} if x != 1 else {}, c)
                for w in widths for q in counts for x in scales for c in centres}
    own = clip_dependence(source, feats)
    print("soft tokens of --model's own adapters: " + "   ".join(
        f"{name} length {length:.1f}, {share:.0%} clip-dependent" for name, (length, share) in own.items()), flush=True)
    dependence = {name: run_variant(w, q, x, c, source, pool, feats, llm, tok, specs, acc, args.out / name)
                  for name, (w, q, x, c) in variants.items()}
    report(list(variants), args.out, dependence)


if __name__ == "__main__":
    main()
