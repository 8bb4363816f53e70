"""Throughput of the evaluation runner: two models, shared media caches against none shared.

    python -m bench.eval_bench [--clips 50] [--per-clip 4] [--max-new-tokens 64] [--rounds 2]

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

The two configurations ("arms") run in alternation, ``--rounds`` times: shared, nothing shared,
shared, nothing shared, ... Run one after the other once, a change of load on the shared machine
between the two runs biases their ratio; alternating spreads a drift over both arms, and the
per-round ratio (shared / nothing shared questions per minute, each round's two runs next to each
other in time) shows how much the load moved it. The summary gives each arm's median.
"""

from __future__ import annotations

import argparse
import statistics
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


ARMS = {"shared caches": True, "nothing shared": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--per-clip", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two arms (default %(default)s)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    questions = question_set(args.clips, args.per_clip)  # renders the clips once, before any timing
    print(f"{len(questions)} questions on {len({q.media for q in questions})} clips, 2 models "
          f"(checkpoints/toy-world loaded twice), greedy, max {args.max_new_tokens} new tokens, "
          f"{args.rounds} round(s) alternating {' / '.join(ARMS)}")
    measure(questions[:4], True, args.max_new_tokens)  # warm-up (first-call costs), not reported
    print(report(alternate(args.rounds, lambda share: measure(questions, share, args.max_new_tokens))))


def alternate(rounds: int, run) -> list[tuple[int, str, dict]]:
    """``run(share)`` for each arm in turn, ``rounds`` times (A B A B ...): (round, arm, result) in order."""
    return [(k, arm, run(share)) for k in range(1, rounds + 1) for arm, share in ARMS.items()]


def per_minute(m: dict) -> float:
    """Questions per minute: a question is asked of both models."""
    return 60 * m["answers"] / 2 / m["wall"]


def report(runs: list[tuple[int, str, dict]]) -> str:
    """Markdown: every run in the order it ran, the per-round ratio, and each arm's median."""
    lines = ["", "| round | run | questions/min | answers/min | wall s | decoder runs | encoder runs | decode "
             "| encoders | adapters | LLM | other |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, name, m in runs:
        share = {key: 100 * v / m["wall"] for key, v in m["stage"].items()}
        lines.append(f"| {k} | {name} | {per_minute(m):.1f} | {2 * per_minute(m):.1f} | {m['wall']:.1f} "
                     f"| {m['decodes']} | {m['encodes']} | {share['decode']:.1f}% | {share['encoders']:.1f}% "
                     f"| {share['adapters']:.1f}% | {share['llm']:.1f}% | {share['other']:.1f}% |")
    shared, alone = ARMS
    rate = {(k, name): per_minute(m) for k, name, m in runs}
    rounds = sorted({k for k, _, _ in runs})
    ratios = [rate[(k, shared)] / rate[(k, alone)] for k in rounds]
    lines += ["", f"| round | {shared} / {alone} (questions/min) |", "|---|---|"]
    lines += [f"| {k} | {r:.2f} |" for k, r in zip(rounds, ratios, strict=True)]
    lines += ["", "| run | median questions/min | median wall s | rounds |", "|---|---|---|---|"]
    for name in ARMS:
        mine = [m for _, n, m in runs if n == name]
        lines.append(f"| {name} | {statistics.median(per_minute(m) for m in mine):.1f} "
                     f"| {statistics.median(m['wall'] for m in mine):.1f} | {len(mine)} |")
    lines.append(f"\nmedian per-round ratio {shared} / {alone}: {statistics.median(ratios):.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
