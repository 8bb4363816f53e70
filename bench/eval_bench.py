"""Throughput of the evaluation runner: two models, shared media caches against none shared.

    python -m bench.eval_bench [--clips 50] [--per-clip 4] [--max-new-tokens 64]

The question set: ``--clips`` held-out toy-world clips rendered to mp4 (kept in
``runs/eval-bench-media``), the first ``--per-clip`` questions of each (50 x 4 = 200). The
two models are the bundled folder ``checkpoints/toy-world`` loaded twice under two names (same
frozen encoders, so a shared feature cache serves both). Each configuration writes a fresh run
folder; the numbers are read back from the JSON lines the runner wrote:

- questions per minute (a question = asked of both models) and answers per minute;
- the share of wall time in decoding (``attach`` of answers whose media was decoded for them),
  the frozen encoders (vision + audio), the adapters, the LLM (embed + generate, which spans the prefill),
  and the rest (scoring, writing, the engine's queue);
- decoder runs and encoder runs (the engine's counters).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from evaluation.readers import toy
from evaluation.runner import ANSWERS, Runner, RunSettings, read_answers
from model.weights.checkpoint import load_model

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "checkpoints" / "toy-world"


def question_set(clips: int, per_clip: int) -> list:
    questions = toy.read(ROOT / "runs" / "eval-bench-media", clips)
    taken, out = {}, []
    for q in questions:
        taken[q.media] = taken.get(q.media, 0) + 1
        if taken[q.media] <= per_clip:
            out.append(q)
    return out


def measure(questions: list, share: bool, max_new_tokens: int) -> dict:
    models = {"toy-a": load_model(MODEL), "toy-b": load_model(MODEL)}
    settings = RunSettings(suite="toy-world", models={k: str(MODEL) for k in models},
                           max_new_tokens=max_new_tokens, share_media=share)
    with tempfile.TemporaryDirectory() as folder:
        runner = Runner(models, settings, Path(folder), progress=False)
        start = time.perf_counter()
        try:
            stats = runner.run(questions)
        finally:
            wall = time.perf_counter() - start
            engines = {id(e): e for e in runner.engines.values()}.values()
            encodes = sum(sum(e.encoder_calls.values()) for e in engines)
            decodes = sum(e.loaded.misses for e in engines)
            runner.close()
        records = read_answers(Path(folder) / ANSWERS)
    stage = {"decode": sum(r.timings.get("attach", 0.0) for r in records if r.decoded),
             "encoders": sum(r.timings.get("vision_encode", 0.0) + r.timings.get("audio_encode", 0.0)
                             for r in records),
             "adapters": sum(r.timings.get("adapters", 0.0) for r in records),
             # the engine's "generate" spans the whole answer, its prefill included
             "llm": sum(r.timings.get(k, 0.0) for r in records for k in ("embed", "generate"))}
    stage["other"] = wall - sum(stage.values())
    return {"wall": wall, "answers": stats.answered, "bad": stats.bad_media, "decodes": decodes,
            "encodes": encodes, "stage": stage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--per-clip", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    questions = question_set(args.clips, args.per_clip)  # renders the clips once, before any timing
    print(f"{len(questions)} questions on {len({q.media for q in questions})} clips, 2 models "
          f"(checkpoints/toy-world loaded twice), greedy, max {args.max_new_tokens} new tokens")
    measure(questions[:4], True, args.max_new_tokens)  # warm-up (first-call costs), not reported
    rows = {"shared caches": measure(questions, True, args.max_new_tokens),
            "nothing shared": measure(questions, False, args.max_new_tokens)}
    print("\n| run | questions/min | answers/min | wall s | decoder runs | encoder runs | decode | encoders "
          "| adapters | LLM | other |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in rows.items():
        share = {k: 100 * v / m["wall"] for k, v in m["stage"].items()}
        print(f"| {name} | {60 * m['answers'] / 2 / m['wall']:.1f} | {60 * m['answers'] / m['wall']:.1f} "
              f"| {m['wall']:.1f} | {m['decodes']} | {m['encodes']} | {share['decode']:.1f}% "
              f"| {share['encoders']:.1f}% | {share['adapters']:.1f}% | {share['llm']:.1f}% "
              f"| {share['other']:.1f}% |")


if __name__ == "__main__":
    main()
