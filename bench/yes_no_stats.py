"""Yes/no answers of a toy-world eval, and the balance of true and false claims in training.

    python launch.py eval --suite toy-world --json --dump answers.jsonl
    python -m bench.yes_no_stats answers.jsonl [--first-clips 15] [--train-clips 60] [--by-expected motion]

Prints (1) how the model answered yes/no questions, by the expected answer, (2) accuracy per
skill on the dump's first ``--first-clips`` held-out clips (to set beside ``--no-sound`` or
``--images`` runs made with ``--clips`` of that size), and (3) how many yes/no questions with
answer yes and no the world asks about ``--train-clips`` training clips (seed 1, as the recipe),
and with ``--by-expected SKILL`` (4) that skill's open answers right per expected answer, with the
answers most often given instead (which motions does the model confuse?).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

CLIP = re.compile(r"-(\d{4})\.mp4$")  # held-out clip files end in their index


def verdict(answer: str) -> str:
    """"yes", "no", "both" or "neither": the verdict words in an answer ("No." or, fact first,
    "The circle is red, so no.")."""
    words = set(re.findall(r"[a-z]+", answer.lower()))
    found = [w for w in ("yes", "no") if w in words]
    return found[0] if len(found) == 1 else "both" if found else "neither"


def print_by_expected(records: list[dict], skill: str) -> None:
    answers = collections.defaultdict(list)  # expected -> [(right, answer)]
    for r in records:
        if r["skill"] == skill and r["kind"] != "yes_no":
            answers[str(r["expected"])].append((r["right"], r["answer"].strip()))
    print(f"{skill}, open answers right per expected answer:")
    for expected, got in sorted(answers.items()):
        wrong = collections.Counter(a for ok, a in got if not ok).most_common(3)
        said = f"  (wrong: {', '.join(f'{a!r} {n}' for a, n in wrong)})" if wrong else ""
        print(f"  {expected:10s} {sum(ok for ok, _ in got):3d} of {len(got):3d}{said}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", type=Path, help="JSONL written by `eval --suite toy-world --dump`")
    parser.add_argument("--first-clips", type=int, default=15)
    parser.add_argument("--train-clips", type=int, default=60,
                        help="training clips whose yes/no balance to count (0: skip that count)")
    parser.add_argument("--by-expected", metavar="SKILL", default=None,
                        help="also print SKILL's open answers per expected answer (e.g. motion)")
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in args.dump.read_text().splitlines() if line.strip()]

    yes_no = [r for r in records if r["kind"] == "yes_no"]
    said = collections.Counter((r["expected"], verdict(r["answer"])) for r in yes_no)
    print(f"yes/no questions: {len(yes_no)}")
    for (expected, answer), n in sorted(said.items()):
        print(f"  expected {expected:3s} answered {answer}: {n}")

    right = collections.defaultdict(list)
    for r in records:
        m = CLIP.search(r["path"])
        if m and not r["path"].split("/")[-1].startswith("ffmpeg") and int(m.group(1)) < args.first_clips:
            right[r["skill"]].append(r["right"])
    print(f"accuracy on the first {args.first_clips} clips:")
    for skill, v in sorted(right.items()):
        print(f"  {skill:16s} {sum(v) / len(v):.3f} (n={len(v)})")

    if args.by_expected:
        print_by_expected(records, args.by_expected)
    if args.train_clips < 1:
        return 0
    from model.config import VideoLlamaConfig
    from train.world.pool import render_pool

    pool = render_pool(VideoLlamaConfig.from_name("toy-world"), args.train_clips, 1)
    balance = collections.Counter(str(qa.answer).lower() for qas in pool.qas for qa in qas
                                  if str(qa.answer).lower() in ("yes", "no"))
    print(f"training yes/no questions in {args.train_clips} clips: yes {balance['yes']}, no {balance['no']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
