"""Throughput of the LLM stages of toy-world training, measured side by side.

    python -m bench.train_bench [--batch 16] [--repeats 3]

Times one stage-2 step (forward + backward through the frozen LLM into the adapters) on
real toy-world examples: the full sequence with logits at every position (what a plain
``LlamaForCausalLM(labels=...)`` call costs), logits only at answer positions, that plus the
cached shared prefix (fp32, the CPU default), and the same with the frozen LLM in bf16, with
PyTorch's fused attention and with plain ("eager") attention. On a CPU with AVX512-BF16 a bf16
matmul runs at about twice the fp32 rate, but the fused attention's bf16 backward is slow.
Prints medians and their ratios; nothing is asserted.

``--part sampling`` compares how stage-2 batches are drawn, on the examples of ``--clips``
rendered clips in the recipe's mix of prompt forms (bf16 LLM, plain attention, prefix cache, as
training runs): rows drawn uniformly within a prompt form, against rows drawn from one of
``train.toy_pipeline.length_buckets`` (examples of similar length). Prints the share of the
LLM's positions that are padding and the median and mean step time of each, interleaved.

``--part turns`` compares stage-2 conversations of 1 to 4 questions (the recipe's ``max_turns``)
with longer ones (``--turns``, e.g. 4,12), drawn as training draws them (length buckets), on the
same clips: answers per step, seconds per step and per answer, interleaved. A longer conversation
pays for its media tokens and prompt once over more answers; this says what a step costs then.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from model.config import VideoLlamaConfig
from model.llm import load_llm
from model.video_llama import build_model
from train import stages
from train.recipes import TOY_WORLD_MODEL, get_recipe
from train.toy_pipeline import (
    batch_features,
    draw_rows,
    instruct_examples,
    length_buckets,
    prefix_groups,
)
from train.world.pool import render_pool


def full_logits_loss(model, examples, feats):
    media = stages.media_tokens(model, feats)
    embeds, mask, labels = stages.assemble(model.llm.get_input_embeddings(), examples, media)
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask).logits  # (B, L, vocab)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=stages.IGNORE)


def random_feats(cfg, n: int) -> dict[str, torch.Tensor]:
    # Timing only: what the frozen encoders would give, in shape.
    return {"video": torch.randn(n, 8, cfg.image_qformer.num_queries, cfg.image_qformer.hidden_size),
            "audio": torch.randn(n, cfg.audio.num_clips, cfg.audio.out_dim)}


def padded_len(examples, slot_len: dict[str, int]) -> tuple[int, int]:
    """(real, padded) LLM positions of one batch after its shared first piece (the prefix cache)."""
    lens = [sum(slot_len[p] if isinstance(p, str) else len(p) for p in ex.pieces[1:]) for ex in examples]
    return sum(lens), max(lens) * len(lens)


def timed_steps(model, ways: dict, feats, args) -> dict[object, list[tuple[float, list]]]:
    """Stage-2 steps (forward + backward, bf16 LLM, plain attention, prefix cache, as training runs),
    ``args.steps`` per way, interleaved. ``ways``: name -> (examples, buckets to draw rows from).
    Returns name -> [(seconds, batch)] per timed step."""
    cache = stages.PrefixCache()
    model.llm.set_attn_implementation("eager")
    g = torch.Generator().manual_seed(0)
    out = {name: [] for name in ways}
    for step in range(args.steps + 1):
        for name, (examples, buckets) in ways.items():
            batch = [examples[r] for r in draw_rows(buckets, args.batch, g)]
            f = batch_features(batch, feats, torch.device("cpu"))
            t = time.perf_counter()
            stages.lm_batch_loss(model, batch, f, cache)[0].backward()
            if step:  # step 0 warms up: fills the prefix cache, lets oneDNN pick its kernels
                out[name].append((time.perf_counter() - t, batch))
    return out


def compare_sampling(model, cfg, args) -> None:
    stage2 = get_recipe("toy-world").stages[2]
    pool = render_pool(cfg, args.clips, seed=11)
    examples = instruct_examples(pool, model.tokenizer, cfg, stage2.max_turns, no_sound_share=stage2.no_sound_share,
                                 image_share=stage2.image_share)
    feats = random_feats(cfg, args.clips)
    groups = prefix_groups(examples)
    ways = {"uniform in prompt form": groups, "length buckets": length_buckets(examples, groups, 4 * args.batch)}
    q = cfg.video_qformer.num_queries
    slot_len = {"video": q, "image": q, "audio": cfg.audio_qformer.num_queries}
    steps = timed_steps(model, {name: (examples, buckets) for name, buckets in ways.items()}, feats, args)
    times = {name: [t for t, _ in runs] for name, runs in steps.items()}
    positions = {name: [sum(x) for x in zip(*(padded_len(b, slot_len) for _, b in runs), strict=True)]
                 for name, runs in steps.items()}
    print(f"{len(examples)} stage-2 examples of {args.clips} clips, batch {args.batch}, {args.steps} steps each, "
          f"threads {torch.get_num_threads()}")
    # Both: a bucket's steps cost about as its length, so the mean (what a run's length
    # follows) sits above the median when a few buckets are long.
    base = statistics.median(times["uniform in prompt form"])
    base_mean = statistics.mean(times["uniform in prompt form"])
    for name, ts in times.items():
        real, padded = positions[name]
        med, mean = statistics.median(ts), statistics.mean(ts)
        print(f"{name:24s} padding {1 - real / padded:5.1%}  mean length {padded / args.steps / args.batch:5.1f}  "
              f"median {med:5.2f} s/step  x{base / med:4.2f}  mean {mean:5.2f} s/step  x{base_mean / mean:4.2f}")


def compare_turns(model, cfg, args) -> None:
    stage2 = get_recipe("toy-world").stages[2]
    pool = render_pool(cfg, args.clips, seed=11)
    feats = random_feats(cfg, args.clips)
    ways = {}
    for turns in (int(t) for t in args.turns.split(",")):
        examples = instruct_examples(pool, model.tokenizer, cfg, turns, no_sound_share=stage2.no_sound_share,
                                     image_share=stage2.image_share, yes_no_answers=stage2.yes_no_answers,
                                     open_answers=stage2.open_answers)
        ways[turns] = (examples, length_buckets(examples, prefix_groups(examples), 4 * args.batch))
    steps = timed_steps(model, ways, feats, args)
    times = {turns: [t for t, _ in runs] for turns, runs in steps.items()}
    answers = {turns: sum(ex.meta["turns"] for _, b in runs for ex in b) for turns, runs in steps.items()}
    print(f"stage-2 conversations of {args.clips} clips, batch {args.batch}, {args.steps} steps each, "
          f"threads {torch.get_num_threads()}")
    for turns, ts in times.items():
        per_step = answers[turns] / args.steps
        mean = statistics.mean(ts)
        print(f"1 to {turns:2d} questions: {len(ways[turns][0]):5d} conversations  {per_step:5.1f} answers/step  "
              f"median {statistics.median(ts):5.2f} s/step  mean {mean:5.2f} s/step  {mean / per_step:6.3f} s/answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part", choices=("ways", "sampling", "turns", "all"), default="all")
    parser.add_argument("--clips", type=int, default=300, help="--part sampling / turns: rendered clips")
    parser.add_argument("--steps", type=int, default=8, help="--part sampling / turns: timed steps per way")
    parser.add_argument("--turns", default="4,12", help="--part turns: the max_turns values compared")
    args = parser.parse_args()
    cfg = VideoLlamaConfig.from_dict(TOY_WORLD_MODEL)
    model = build_model(cfg, device="cpu", with_llm=False)
    stages.branch_parameters(model, ("video", "audio"))
    if args.part == "turns":
        model.llm, model.tokenizer = load_llm(cfg.llm, precision="bf16", device="cpu")
        compare_turns(model, cfg, args)
        return
    if args.part in ("sampling", "all"):
        model.llm, model.tokenizer = load_llm(cfg.llm, precision="bf16", device="cpu")
        compare_sampling(model, cfg, args)
        if args.part == "sampling":
            return
    model.llm, model.tokenizer = load_llm(cfg.llm, precision="fp32", device="cpu")
    pool = render_pool(cfg, 4, seed=11)
    examples = instruct_examples(pool, model.tokenizer, cfg, max_turns=4)[: args.batch]
    rows = torch.tensor([e.clip for e in examples])
    feats = {k: v[rows] for k, v in random_feats(cfg, 4).items()}
    fp32_llm = model.llm
    bf16_llm, _ = load_llm(cfg.llm, precision="bf16", device="cpu")

    def with_llm(llm, attention, fn):
        def call():
            model.llm = llm
            llm.set_attn_implementation(attention)
            return fn()
        return call

    caches = {name: stages.PrefixCache() for name in ("fp32", "bf16 sdpa", "bf16 eager")}
    ways = {
        "all-position logits": with_llm(fp32_llm, "sdpa", lambda: full_logits_loss(model, examples, feats)),
        "answer-only logits": with_llm(fp32_llm, "sdpa", lambda: stages.lm_batch_loss(model, examples, feats)[0]),
        "answer-only + prefix cache": with_llm(
            fp32_llm, "sdpa", lambda: stages.lm_batch_loss(model, examples, feats, caches["fp32"])[0]),
        "that, LLM bf16, sdpa": with_llm(
            bf16_llm, "sdpa", lambda: stages.lm_batch_loss(model, examples, feats, caches["bf16 sdpa"])[0]),
        "that, LLM bf16, eager": with_llm(
            bf16_llm, "eager", lambda: stages.lm_batch_loss(model, examples, feats, caches["bf16 eager"])[0]),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for fn in ways.values():  # warm-up: fill the prefix caches, let oneDNN pick its kernels
        fn().backward()
    for _ in range(args.repeats):  # interleaved, so background load hits every way alike
        for name, fn in ways.items():
            t = time.perf_counter()
            fn().backward()
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["all-position logits"])
    tokens = sum(len(p) if not isinstance(p, str) else 0 for e in examples for p in e.pieces)
    print(f"batch {len(examples)}, {tokens / len(examples):.0f} text tokens per example, threads "
          f"{torch.get_num_threads()}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:30s} median {med:6.2f} s/step  {len(examples) / med:5.1f} samples/s  x{base / med:4.2f}")


if __name__ == "__main__":
    main()
