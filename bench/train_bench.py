"""Throughput of the LLM stages of toy-world training, measured side by side.

    python bench/train_bench.py [--batch 16] [--repeats 3]

Times one stage-2 step (forward + backward through the frozen LLM into the adapters) on
real toy-world examples: the full sequence with logits at every position (what a plain
``LlamaForCausalLM(labels=...)`` call costs), logits only at answer positions, that plus the
cached shared prefix (fp32, the CPU default), and the same with the frozen LLM in bf16, with
PyTorch's fused attention and with plain ("eager") attention. On a CPU with AVX512-BF16 a bf16
matmul runs at about twice the fp32 rate, but the fused attention's bf16 backward is slow.
Prints medians and their ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.config import VideoLlamaConfig  # noqa: E402
from model.llm import load_llm  # noqa: E402
from model.video_llama import build_model  # noqa: E402
from train import stages  # noqa: E402
from train.recipes import TOY_WORLD_MODEL  # noqa: E402
from train.toy_data import render_pool  # noqa: E402
from train.toy_pipeline import instruct_examples  # noqa: E402


def full_logits_loss(model, examples, feats):
    media = stages.media_tokens(model, feats)
    embeds, mask, labels = stages.assemble(model.llm.get_input_embeddings(), examples, media)
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask).logits  # (B, L, vocab)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=stages.IGNORE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = VideoLlamaConfig.from_dict(TOY_WORLD_MODEL)
    model = build_model(cfg, device="cpu", with_llm=False)
    model.llm, model.tokenizer = load_llm(cfg.llm, precision="fp32", device="cpu")
    pool = render_pool(cfg, 4, seed=11)
    examples = instruct_examples(pool, model.tokenizer, cfg, max_turns=4)[: args.batch]
    rows = torch.tensor([e.clip for e in examples])
    feats = {"video": torch.randn(4, 8, cfg.image_qformer.num_queries, cfg.image_qformer.hidden_size)[rows],
             "audio": torch.randn(4, cfg.audio.num_clips, cfg.audio.out_dim)[rows]}
    stages.branch_parameters(model, ("video", "audio"))
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
