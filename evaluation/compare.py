"""`launch.py eval compare RUN_A RUN_B`: the questions where two models disagree.

Each run folder's ``answers.jsonl`` is read; the left model is RUN_A's first model, the right
one RUN_B's first model that is not the left one (so ``compare RUN RUN`` compares the first two
models of one run). Two answers disagree when their primary verdicts differ: the corrected
reading for multiple choice, else the judge's yes/no when both were judged, else the toy
world's keyword rule, else the string match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from evaluation.records import AnswerRecord
from evaluation.runner import ANSWERS, SETTINGS, read_answers

PRIMARY = ("corrected", "judge_yes", "keyword", "string_match")


def primary(record: AnswerRecord) -> tuple[str, bool] | None:
    for name in PRIMARY:
        if record.verdicts.get(name) is not None:
            return name, bool(record.verdicts[name])
    return None


@dataclass
class Disagreement:
    key: str
    question: str
    reference: str
    left: AnswerRecord
    right: AnswerRecord


def _models(run: Path) -> list[str]:
    settings = run / SETTINGS
    if not settings.is_file():
        raise SystemExit(f"{run} is not a run folder (no {SETTINGS}); give folders written by `launch.py eval`")
    return list(json.loads(settings.read_text(encoding="utf-8"))["models"])


def compare_runs(run_a: Path, run_b: Path) -> tuple[str, str, dict, list[Disagreement]]:
    """(left name, right name, counts, disagreements) over the questions both answered."""
    left_model = _models(run_a)[0]
    right_model = next((m for m in _models(run_b) if (run_b.resolve(), m) != (run_a.resolve(), left_model)), None)
    if right_model is None:
        raise SystemExit(f"{run_b} has no second model to compare with {left_model!r}")
    left = {r.key: r for r in read_answers(run_a / ANSWERS) if r.model == left_model and r.status == "answered"}
    right = {r.key: r for r in read_answers(run_b / ANSWERS) if r.model == right_model and r.status == "answered"}
    counts = {"both_answered": 0, "agree": 0, "left_only_right": 0, "right_only_right": 0, "not_comparable": 0}
    out = []
    for key in sorted(set(left) & set(right)):
        a, b = left[key], right[key]
        counts["both_answered"] += 1
        va, vb = primary(a), primary(b)
        if va is None or vb is None or va[0] != vb[0]:
            counts["not_comparable"] += 1
            continue
        if va[1] == vb[1]:
            counts["agree"] += 1
            continue
        counts["left_only_right" if va[1] else "right_only_right"] += 1
        out.append(Disagreement(key, a.question, a.reference, a, b))
    return left_model, right_model, counts, out


def report(run_a: Path, run_b: Path, as_json: bool = False) -> str:
    left, right, counts, rows = compare_runs(Path(run_a), Path(run_b))
    if as_json:
        return json.dumps({"left": left, "right": right, "counts": counts,
                           "disagreements": [{"key": d.key, "question": d.question, "reference": d.reference,
                                              "left": d.left.answer, "right": d.right.answer,
                                              "right_one": left if primary(d.left)[1] else right} for d in rows]},
                          ensure_ascii=False, indent=2)
    lines = [f"left: {left} ({run_a})   right: {right} ({run_b})",
             "   ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()), ""]
    for d in rows:
        winner = "left" if primary(d.left)[1] else "right"
        lines += [f"[{d.key}] {d.question}", f"  reference: {d.reference}",
                  f"  left:  {d.left.answer!r}", f"  right: {d.right.answer!r}", f"  right answer: {winner}", ""]
    return "\n".join(lines)
