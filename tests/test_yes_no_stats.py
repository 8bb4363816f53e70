"""bench/yes_no_stats.py: verdict words and the per-expected-answer breakdown of open answers."""

import json

from bench import yes_no_stats


def test_verdict_reads_fact_first_and_bare_answers():
    assert yes_no_stats.verdict("The circle is red, so no.") == "no"
    assert yes_no_stats.verdict("Yes.") == "yes"
    assert yes_no_stats.verdict("Yes and no.") == "both"
    assert yes_no_stats.verdict("Red.") == "neither"


def test_by_expected_counts_right_answers_and_the_wrong_ones_given(tmp_path, capsys):
    rows = [("still", "Left.", False), ("still", "Left.", False), ("still", "Still.", True),
            ("up", "Up.", True), ("up", "Down.", False)]
    records = [dict(path=f"/m/clip-{i:04d}.mp4", skill="motion", kind="open", question="Which way?",
                    expected=e, answer=a, right=ok) for i, (e, a, ok) in enumerate(rows)]
    records.append(dict(path="/m/clip-0009.mp4", skill="motion", kind="yes_no", question="Up?",
                        expected="yes", answer="No.", right=False))  # yes/no: not an open answer
    dump = tmp_path / "answers.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert yes_no_stats.main([str(dump), "--train-clips", "0", "--by-expected", "motion"]) == 0
    out = capsys.readouterr().out.split("motion, open answers right per expected answer:")[1]
    lines = [line.split() for line in out.strip().splitlines()]
    assert lines[0][:4] == ["still", "1", "of", "3"] and "'Left.'" in lines[0] and "2)" in lines[0]
    assert lines[1][:4] == ["up", "1", "of", "2"] and "'Down.'" in lines[1]
