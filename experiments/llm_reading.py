"""How well the frozen LLM answers toy-world questions from a perfect description of the clip.

    python -m experiments.llm_reading [--forms caption,structured] [--steps 100] [--test-clips 30]

A reference for the bundled model's accuracy: no encoders, no adapters. Each clip's ground
truth is written as text and put where the soft tokens go (video slot: what is seen, audio
slot: what is heard), after a few learned prefix vectors per slot. Only those prefix vectors
train (prompt tuning, on the stage-2 questions of training scenes, single-turn, short
answers); the LLM stays frozen, as in stages 1 and 2. It then prints, per skill and question
form (open / yes-no), the fraction of answers on new scenes whose every token the LLM
predicts right (teacher-forced greedy: the answer it would write). Yes/no questions are scored
on their verdict instead, as the eval scores them: the LLM writes its answer greedily and it is
right when it has the right one of "yes" and "no" and not the other. With ``--yes-no-answers
fact-first`` the answers it learns state the fact before the verdict ("The circle is red, so
no."), and only the verdict counts, so a differently worded fact is not held against it.

``--lora R`` also trains rank-R LoRA matrices (peft) on every attention projection of the
LLM: the LLM then learns too, which the paper's recipe does not allow. It shows how much of the
gap is the frozen LLM's: what a learning LLM reads from the same perfect description.

Two ways of writing the same facts:
- ``caption``: the world's canonical caption ("A small green triangle moves down. ...").
- ``structured``: key-value facts ("shapes: two. triangle: green, down, start. green: triangle. ...").

If the frozen LLM cannot answer a skill from a perfect description, the adapters' soft tokens
(which carry less) will not either: this separates the LLM's share of an eval error from the
encoders' and the adapters'. Nothing is asserted. About 13 minutes of training per form at
100 steps on 2 CPU cores, plus about 2 minutes of questions.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache

from evaluation.toy_world import scene_text
from model.chat.generate import GenerationSettings, stream_tokens
from model.chat.prompts import stop_token_ids
from model.config import VideoLlamaConfig
from model.llm import load_llm
from train import stages
from train.recipes import YES_NO_ANSWERS
from train.toy_pipeline import clip_conversations
from train.world.qa import QA, make_qa, score_answer
from train.world.scene import sample_scene, scene_rng

ROOT = Path(__file__).resolve().parents[1]

NUMBERS = ("no", "one", "two", "three")
FORMS = ("caption", "structured")
QA_FORMS = {"open": "open", "yes_no": "yes/no"}  # QA.kind -> row label
GREEDY_SHORT = GenerationSettings(max_new_tokens=24, do_sample=False)  # a yes/no answer, fact first at most
TRAIN_SEED, TEST_SEED = 1, 7  # the recipe's training scenes; scenes it never saw


def structured_text(scene) -> str:
    """The visible facts as key-value pairs, each key a word the questions use."""
    order = sorted(scene.shapes, key=lambda s: s.appear)
    parts = [f"shapes: {NUMBERS[len(order)]}."]
    for s in order:
        when = "start" if s.appear <= 0 else "later"
        parts.append(f"{s.shape}: {s.colour}, {s.motion}, {when}. {s.colour}: {s.shape}.")
    return " ".join(parts)


def scene_set(tokenizer, cfg, seed: int, n: int, form: str, yes_no_answers: str = "verdict"):
    """(examples, per-clip token ids of the video and audio text) for ``n`` scenes."""
    qas, texts = [], []
    for i in range(n):
        rng = scene_rng(seed, "train", i)
        scene = sample_scene(rng, "train")
        qas.append(make_qa(scene, rng))
        text = scene_text(scene)
        if form == "structured":
            text["video"] = structured_text(scene)
        texts.append({k: tokenizer(f" {v} ", add_special_tokens=False).input_ids for k, v in text.items()})
    rng = np.random.default_rng(0)  # instruct_examples' default seed
    examples = [ex for i, clip_qas in enumerate(qas)
                for ex in clip_conversations(tokenizer, cfg, i, clip_qas, rng, yes_no_answers=yes_no_answers)]
    return [ex for ex in examples if ex.meta["skill"] != "description"], texts


class TextSlots:
    """Media for ``stages.assemble``: per example, learned prefix vectors then the text's embeddings."""

    def __init__(self, embed, prefix_len: dict[str, int]) -> None:
        self.embed = embed
        rows = {k: torch.randint(embed.weight.shape[0], (n,)) for k, n in prefix_len.items()}
        # Start from real word embeddings: the right scale, and a point the LLM already reads.
        self.prefix = {k: torch.nn.Parameter(embed.weight[r].detach().float()) for k, r in rows.items()}

    def media(self, batch, texts) -> dict[str, list[torch.Tensor]]:
        out = {}
        for slot, prefix in self.prefix.items():
            text = [self.embed(torch.tensor(texts[ex.clip][slot])).float() for ex in batch]  # (n, D) each
            rows = [torch.cat([prefix, t]) for t in text]  # (P+n, D)
            out[slot] = rows  # assemble takes per-example rows of different lengths
        return out


@torch.no_grad()
def answer_accuracy(llm, tokenizer, slots: TextSlots, examples, texts, batch: int = 16):
    """(skill, question form) -> per question, right or not: open answers exact, yes/no by verdict."""
    right = defaultdict(list)
    embed = llm.get_input_embeddings()
    stops = stop_token_ids(tokenizer, llm.generation_config)
    for i in range(0, len(examples), batch):
        chunk = examples[i:i + batch]
        embeds, mask, labels = stages.assemble(embed, chunk, slots.media(chunk, texts))
        hits = stages.exact_answers(llm, embeds, mask, labels)
        for j, (ex, hit) in enumerate(zip(chunk, hits, strict=True)):
            if ex.meta["kind"] == "yes_no":
                taught = tokenizer.decode(labels[j][labels[j] != stages.IGNORE], skip_special_tokens=True)
                written = greedy_answer(llm, embeds[j], labels[j], stops)
                hit = score_answer(verdict_qa(ex.meta["skill"], taught),
                                   tokenizer.decode(written, skip_special_tokens=True))
            right[(ex.meta["skill"], QA_FORMS[ex.meta["kind"]])].append(hit)
    return right


def greedy_answer(llm, embeds: torch.Tensor, labels: torch.Tensor, stops: set[int]) -> list[int]:
    """Token ids the chat engine's greedy decoding writes after one example's prompt (embeds (L, D),
    labels (L,)); a final stop id included."""
    start = int((labels != stages.IGNORE).nonzero()[0])  # the answer's first token
    prompt = embeds[None, :start].to(llm.dtype)  # (1, start, D)
    return list(stream_tokens(llm, prompt, DynamicCache(), GREEDY_SHORT, stops))


def verdict_qa(skill: str, taught: str) -> QA:
    """The QA the eval would score a yes/no answer against, from the taught answer, which ends
    with its verdict ("No." or "The circle is red, so no."): the verdict, and not the other word."""
    truth = re.findall(r"[a-z]+", taught.lower())[-1]
    return QA(skill, "", truth, taught, [[truth]], ["no" if truth == "yes" else "yes"], "yes_no")


def run_form(llm, tokenizer, cfg, form: str, args) -> tuple[dict, dict, float]:
    train, train_texts = scene_set(tokenizer, cfg, TRAIN_SEED, args.train_clips, form, args.yes_no_answers)
    test, test_texts = scene_set(tokenizer, cfg, TEST_SEED, args.test_clips, form, args.yes_no_answers)
    torch.manual_seed(0)
    slots = TextSlots(llm.get_input_embeddings(), {"video": args.prefix[0], "audio": args.prefix[1]})
    before = None if args.skip_before else answer_accuracy(llm, tokenizer, slots, test, test_texts)
    lora = [p for p in llm.parameters() if p.requires_grad]  # empty unless --lora
    opt = torch.optim.AdamW([{"params": list(slots.prefix.values())}, {"params": lora, "lr": args.lora_lr}],
                            lr=args.lr)
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        batch = [train[r] for r in torch.randint(len(train), (16,), generator=g).tolist()]
        embeds, mask, labels = stages.assemble(llm.get_input_embeddings(), batch, slots.media(batch, train_texts))
        loss = stages.supervised_lm_loss(llm, embeds, mask, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            print(f"  {form}: step {step}, loss {loss.item():.3f}, {time.time() - t0:.0f} s", flush=True)
    seconds = time.time() - t0
    return before, answer_accuracy(llm, tokenizer, slots, test, test_texts), seconds


def add_lora(llm, rank: int) -> None:
    """Trainable rank-``rank`` LoRA on the attention projections, in place (the model keeps its class)."""
    from peft import LoraConfig, inject_adapter_in_model  # only this option needs peft

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    inject_adapter_in_model(config, llm)
    for name, p in llm.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()  # fp32 even on a bf16 LLM: AdamW steps would round away in bf16
            p.requires_grad_(True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forms", default=",".join(FORMS), help=f"comma-separated, of {FORMS}")
    parser.add_argument("--steps", type=int, default=100, help="prompt-tuning steps of 16 questions")
    parser.add_argument("--train-clips", type=int, default=1500)
    parser.add_argument("--test-clips", type=int, default=30, help="new scenes (about 16 questions each)")
    parser.add_argument("--prefix", default="8,4", help="learned prefix vectors before the video,audio text")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--yes-no-answers", default="verdict", choices=YES_NO_ANSWERS,
                        help="what yes/no answers learn: the verdict alone, or the fact then the verdict")
    parser.add_argument("--lora", type=int, default=0, help="rank of LoRA on the LLM's attention (0: frozen LLM)")
    parser.add_argument("--lora-lr", type=float, default=1e-3)
    parser.add_argument("--skip-before", action="store_true", help="do not score the untrained prefix first")
    parser.add_argument("--precision", default="fp32", choices=stages.LLM_PRECISIONS,
                        help="the frozen LLM's precision; auto is what stages 1 and 2 use (bf16 where the CPU has it)")
    args = parser.parse_args()
    args.prefix = [int(n) for n in args.prefix.split(",")]
    if len(args.prefix) != 2 or min(args.prefix) < 1:
        parser.error("--prefix takes two positive counts: video,audio")
    forms = args.forms.split(",")
    unknown = set(forms) - set(FORMS)
    if unknown:
        parser.error(f"unknown forms {sorted(unknown)}; choose from {FORMS}")
    cfg = VideoLlamaConfig.from_file(ROOT / "checkpoints" / "toy-world" / "config.json")
    precision = stages.backprop_llm_precision(torch.device("cpu"), args.precision)
    llm, tokenizer = load_llm(cfg.llm, precision=precision)
    stages.prepare_backprop_llm(llm, torch.device("cpu"))
    for p in llm.parameters():
        p.requires_grad_(False)
    if args.lora:
        add_lora(llm, args.lora)
    results = {form: run_form(llm, tokenizer, cfg, form, args) for form in forms}
    llm_kind = f"LLM with rank-{args.lora} LoRA" if args.lora else "frozen LLM"
    print(f"\nexact answers on {args.test_clips} new scenes, {llm_kind} ({precision}) + learned prefix "
          f"{args.prefix[0]},{args.prefix[1]}, {args.steps} steps of 16 at lr {args.lr:g}, "
          f"{args.yes_no_answers} yes/no answers (those scored on the verdict they write)")
    print(f"  {'skill':15s} {'form':7s} " + " ".join(f"{f + ' before':>18s} {f + ' after':>17s}" for f in forms))
    keys = sorted(results[forms[0]][1])
    for key in keys:
        cells = []
        for form in forms:
            before, after, _ = results[form]
            cells += [f"{sum(before[key]) / len(before[key]):18.2f}" if before else f"{'-':>18s}",
                      f"{sum(after[key]) / len(after[key]):17.2f}"]
        print(f"  {key[0]:15s} {key[1]:7s} " + " ".join(cells) + f"   ({len(results[forms[0]][1][key])} questions)")
    for form in forms:
        print(f"  {form}: {results[form][2]:.0f} s of training")


if __name__ == "__main__":
    main()
