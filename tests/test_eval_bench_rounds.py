"""bench/eval_bench.py alternates its two arms (shared caches, nothing shared) in rounds and
reports the per-round ratio and each arm's median: the arithmetic on fixed measurements."""

from __future__ import annotations

from bench import eval_bench


def _m(answers: int, wall: float) -> dict:
    return {"wall": wall, "answers": answers, "bad": 0, "decodes": 1, "encodes": 2,
            "stage": {"decode": 0.0, "encoders": 0.0, "adapters": 0.0, "llm": wall / 2, "other": wall / 2}}


def test_the_arms_alternate_round_by_round():
    calls = []
    runs = eval_bench.alternate(3, lambda share: calls.append(share) or _m(2, 60.0))
    assert calls == [True, False, True, False, True, False]
    assert [(k, arm) for k, arm, _ in runs] == [(1, "shared caches"), (1, "nothing shared"), (2, "shared caches"),
                                               (2, "nothing shared"), (3, "shared caches"), (3, "nothing shared")]


def test_report_gives_each_rounds_ratio_and_each_arms_median():
    # questions/min = 60 * answers / 2 / wall: shared 10, 30, 20; nothing shared 20, 20, 10
    walls = {(1, True): 60.0, (1, False): 30.0, (2, True): 20.0, (2, False): 30.0, (3, True): 30.0, (3, False): 60.0}
    runs = [(k, arm, _m(20, walls[(k, share)])) for k in (1, 2, 3) for arm, share in eval_bench.ARMS.items()]
    text = eval_bench.report(runs)
    assert "| 1 | 0.50 |" in text and "| 2 | 1.50 |" in text and "| 3 | 2.00 |" in text
    assert "| shared caches | 20.0 | 30.0 | 3 |" in text
    assert "| nothing shared | 20.0 | 30.0 | 3 |" in text
    assert "median per-round ratio shared caches / nothing shared: 1.50" in text
