"""The evaluation runner on tiny random models: answers written as they come, resume after an
interruption without answering twice, media decoded and encoded once for two models, missing
and bad files recorded and skipped, the judge path, the summary and `eval compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import model.chat.engine as engine_module
from evaluation.compare import compare_runs
from evaluation.records import Question
from evaluation.runner import ANSWERS, Runner, RunSettings, read_answers
from evaluation.scoring.judge import Judge
from evaluation.summary import markdown, summarize
from tests import media_factory
from tests.app_helpers import tiny_models
from tests.test_eval_benchmarks import _StubJudge, judge_url  # noqa: F401 - the fixture

OPTIONS = ("a red square", "a blue circle", "a green star")


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return [media_factory.video(d / "one.mp4", duration=0.4), media_factory.video(d / "two.mp4", duration=0.4,
                                                                                 source="color", color="blue")]


def _questions(clips) -> list[Question]:
    out = []
    for i, clip in enumerate(clips):
        out.append(Question("msvd-qa", "msvd-qa", f"v{i}", str(clip), "what is shown?", "what is shown?", "square"))
        out.append(Question("mvbench", "Object Shuffle", f"m{i}", str(clip), "Which one?", "Which one? (A) ...",
                            OPTIONS[1], OPTIONS, 1, "mvbench"))
    return out


def _settings(models, **kw) -> RunSettings:
    return RunSettings(suite="test", models={k: "tiny" for k in models}, frames=2, max_new_tokens=3, **kw)


def _run(models, questions, output, **kw):
    runner = Runner(models, _settings(models, share_media=kw.pop("share_media", True)), output, progress=False, **kw)
    try:
        return runner, runner.run(questions)
    finally:
        runner.close()


def test_resume_after_an_interruption_answers_nothing_twice(models, clips, tmp_path):
    questions = _questions(clips)

    def stop_after_three(record, seen=[]):  # noqa: B006 - the count lives across calls
        seen.append(record)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(models, questions, tmp_path, interrupt=stop_after_three)
    lines = (tmp_path / ANSWERS).read_text().splitlines()
    assert len(lines) == 3  # written as they came, the third before the stop
    with open(tmp_path / ANSWERS, "a") as handle:
        handle.write('{"model": "tiny-left", "key": "cut by a cra')  # a line a crash cut short
    _, stats = _run(models, questions, tmp_path)
    assert (stats.answered, stats.skipped_done) == (5, 3)
    pairs = []
    for line in (tmp_path / ANSWERS).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        pairs.append((record["model"], record["key"]))
    assert sorted(pairs) == sorted({(m, q.key) for m in models for q in questions})  # each once
    _, stats = _run(models, questions, tmp_path)
    assert (stats.answered, stats.skipped_done) == (0, 8)
    other = Runner(models, RunSettings(suite="test", models={k: "tiny" for k in models}, frames=4), tmp_path,
                   progress=False)
    try:
        with pytest.raises(SystemExit, match="frames"):
            other.run(questions)
    finally:
        other.close()


def _count_decodes(monkeypatch) -> list:
    calls = []
    real = engine_module.load_media

    def counting(path, options):
        calls.append(Path(path).name)
        return real(path, options)

    monkeypatch.setattr(engine_module, "load_media", counting)
    return calls


def test_two_models_share_decoded_media_and_encoder_outputs(models, clips, tmp_path, monkeypatch):
    questions = _questions(clips)
    calls = _count_decodes(monkeypatch)
    runner, stats = _run(models, questions, tmp_path / "shared")
    assert sorted(calls) == ["one.mp4", "two.mp4"]  # once per file for both models and both questions
    engine = runner.engines["tiny-left"]
    assert engine is runner.engines["tiny-right"] and engine.encoder_calls["vision"] == 2
    assert stats.decodes == 2
    records = read_answers(tmp_path / "shared" / ANSWERS)
    assert sum(r.decoded for r in records) == 2 and len(records) == 8
    calls.clear()
    runner, stats = _run(models, questions, tmp_path / "apart", share_media=False)
    assert sorted(calls) == ["one.mp4", "one.mp4", "two.mp4", "two.mp4"]  # each model decodes each file
    assert sum(e.encoder_calls["vision"] for e in {id(e): e for e in runner.engines.values()}.values()) == 4


def test_missing_and_bad_media_are_recorded_and_skipped(models, clips, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    questions = [Question("msvd-qa", "msvd-qa", "gone", str(tmp_path / "gone.mp4"), "q?", "q?", "x"),
                 Question("msvd-qa", "msvd-qa", "bad", str(bad), "q?", "q?", "x"),
                 Question("msvd-qa", "msvd-qa", "ok", str(clips[0]), "q?", "q?", "x")]
    _, stats = _run(models, questions, tmp_path / "run")
    assert (stats.answered, stats.bad_media) == (2, 4)
    records = {(r.model, r.key): r for r in read_answers(tmp_path / "run" / ANSWERS)}
    assert records[("tiny-left", "msvd-qa/gone")].status == "missing_media"
    assert records[("tiny-left", "msvd-qa/bad")].status == "bad_media" and records[("tiny-left", "msvd-qa/bad")].error
    summary = summarize(list(records.values()), list(models))
    assert summary["counts"]["tiny-left"]["msvd-qa"] == {"missing_media": 1, "bad_media": 1, "answered": 1}
    assert summary["metrics"]["string_match"]["tiny-left"]["msvd-qa"]["n"] == 1


def test_judge_path_writes_the_protocol_verdicts(models, clips, tmp_path, judge_url):  # noqa: F811
    questions = _questions(clips)[:2]
    judge = Judge(judge_url, "stub-judge", api_key="unused")
    _run(models, questions, tmp_path, judge=judge)
    records = read_answers(tmp_path / ANSWERS)
    judged = [r for r in records if r.benchmark == "msvd-qa"]
    assert len(judged) == 2 and len(_StubJudge.requests) == 2  # multiple choice is never sent to the judge
    for r in judged:
        assert r.verdicts["judge_yes"] is ("square" in r.answer) and r.verdicts["judge_score"] in (1, 4)
    summary = summarize(records, list(models))
    assert set(summary["metrics"]) >= {"judge_accuracy", "judge_score", "string_match", "official", "corrected"}
    text = markdown(summary)
    assert "### judge_accuracy" in text and "### string_match" in text and "| tiny-left |" in text


def test_summary_intervals_and_compare_lists_disagreements(models, clips, tmp_path):
    questions = _questions(clips)
    _run(models, questions, tmp_path)
    records = read_answers(tmp_path / ANSWERS)
    summary = summarize(records, list(models))
    cell = summary["metrics"]["corrected"]["tiny-left"]["mvbench/all"]
    assert cell["n"] == 2 and cell["low"] <= cell["value"] <= cell["high"]
    left, right, counts, rows = compare_runs(tmp_path, tmp_path)
    assert (left, right) == ("tiny-left", "tiny-right")
    assert counts["both_answered"] == 4
    assert counts["agree"] + counts["left_only_right"] + counts["right_only_right"] + counts["not_comparable"] == 4
    assert len(rows) == counts["left_only_right"] + counts["right_only_right"]


def test_compare_tab_ranks_the_votes_and_shows_the_loaded_models_eval_tables(models, clips, tmp_path):
    from types import SimpleNamespace

    from app.compare import eval_tables, ranking_rows
    from app.votes import VoteLog
    from evaluation.summary import write_summary

    log = VoteLog(tmp_path / "votes.jsonl")
    for vote in ("left", "left", "right", "tie"):
        log.append(vote, models=["tiny-left", "tiny-right"], answers=["a", "b"], question="q?", media_path=None)
    rows = ranking_rows(log)
    assert [r[0] for r in rows] == ["tiny-left", "tiny-right"] and [r[3] for r in rows] == [4, 4]
    assert (rows[0][4], rows[0][5], rows[0][6]) == (2, 1, 1)
    run = tmp_path / "eval" / "toy"
    _run(models, _questions(clips)[:2], run)
    write_summary(run, read_answers(run / ANSWERS), list(models))
    text = eval_tables(SimpleNamespace(model_names=["tiny-right"]), tmp_path / "eval")
    assert "#### run `toy`" in text and "| tiny-right |" in text and "tiny-left" not in text
    assert "No evaluation run" in eval_tables(SimpleNamespace(model_names=["other"]), tmp_path / "eval")
