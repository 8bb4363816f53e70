"""EgoSchema's submission file (``q_uid,answer`` with the option index): written for an EgoSchema
run beside its summary, and again from a run folder's answers by ``eval submission RUN``."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest

import model.weights.checkpoint as checkpoint
from evaluation import cli
from evaluation.readers import egoschema
from evaluation.records import AnswerRecord
from evaluation.runner import ANSWERS, read_answers
from evaluation.scoring import score
from evaluation.submission import FALLBACK, HEADER, write_submissions
from tests import media_factory
from tests.app_helpers import tiny_models

UIDS = ["001934bb-81bd-4cd8-a574-0472ef3f6678", "0074f737-11cb-497d-8d07-77c3a8127391",
        "00b9a0de-c59e-49cb-a127-6081e2fb8c8e", "00f93e1e-cf4e-4835-88b4-4ad68216e86f"]


def _egoschema(root: Path, with_videos: int = 4) -> list:
    root.mkdir(parents=True, exist_ok=True)
    (root / "videos").mkdir(exist_ok=True)
    for uid in UIDS[:with_videos]:
        media_factory.video(root / "videos" / f"{uid}.mp4", duration=0.4)
    (root / "questions.json").write_text(json.dumps([
        {"q_uid": uid, "google_drive_id": f"d{i}", "question": f"What does c do in video {i}?",
         **{f"option {k}": f"c does thing {k}{i}" for k in range(5)}} for i, uid in enumerate(UIDS)]))
    (root / "subset_answers.json").write_text(json.dumps({UIDS[1]: 3}))
    return egoschema.read(root)


def _record(question, answer: str, model: str = "m", status: str = "answered") -> AnswerRecord:
    verdicts, extracted = score(question, answer) if status == "answered" else ({}, {})
    return AnswerRecord(model=model, key=question.key, benchmark=question.benchmark, task=question.task,
                        question=question.question, reference=question.reference, media=question.media,
                        status=status, answer=answer, verdicts=verdicts, extracted=extracted)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_one_row_per_answered_question_with_the_option_index_and_a_counted_fallback(tmp_path):
    q = _egoschema(tmp_path / "data", with_videos=0)
    records = [_record(q[0], "(C) c does thing 20"),  # private key: still written
               _record(q[1], "The answer is E."),  # public key: written too (Kaggle scores all)
               _record(q[2], "I cannot tell."),  # names no option: the fallback, counted
               _record(q[3], "", status="missing_media")]  # no answer: no row, counted
    (sub,) = write_submissions(tmp_path, records)
    assert sub.path == tmp_path / "egoschema_submission.csv"
    assert _rows(sub.path) == [list(HEADER), [UIDS[0], "2"], [UIDS[1], "4"], [UIDS[2], str(FALLBACK)]]
    assert (sub.rows, sub.fallback, sub.unanswered) == (3, 1, 1)


def test_several_models_get_one_file_each_and_other_benchmarks_none(tmp_path):
    q = _egoschema(tmp_path / "data", with_videos=0)
    records = [_record(q[0], "A", "left"), _record(q[0], "(B)", "right/x"),
               AnswerRecord(model="left", key="mvbench/x/0", benchmark="mvbench", task="t", question="?",
                            reference="", media="", extracted={"corrected": "C"})]
    subs = write_submissions(tmp_path, records, ["left", "right/x"])
    assert [s.path.name for s in subs] == ["egoschema_submission-left.csv", "egoschema_submission-right_x.csv"]
    assert _rows(subs[0].path)[1:] == [[UIDS[0], "0"]] and _rows(subs[1].path)[1:] == [[UIDS[0], "1"]]
    assert write_submissions(tmp_path, records[2:]) == []


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_an_egoschema_run_writes_the_file_and_eval_submission_rewrites_it(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    _egoschema(data, with_videos=3)  # the fourth video is missing
    models = tiny_models()
    # The benchmark's prompt (system text, five options) is longer than the tiny model's 512-token context.
    monkeypatch.setattr(egoschema, "prompt_for", lambda question, options: question)
    monkeypatch.setattr(checkpoint, "load_model", lambda folder: models[Path(folder).name])
    run = tmp_path / "run"
    argv = ["--suite", "egoschema", "--data", str(data), "--model", str(tmp_path / "tiny-left"),
            "--frames", "2", "--max-new-tokens", "3", "--output", str(run), "--json"]
    assert cli.main(_args(argv)) == 0
    path = run / "egoschema_submission.csv"
    written = _rows(path)
    answered = [r for r in read_answers(run / ANSWERS) if r.status == "answered"]
    assert written[0] == list(HEADER) and len(answered) == 3 and len(written) == 4
    assert {row[0] for row in written[1:]} == set(UIDS[:3])
    assert all(row[1] in "01234" for row in written[1:])
    assert "1 questions without an answer" in capsys.readouterr().err
    # A line edited by hand (as after re-scoring): `eval submission` rewrites the file from the answers.
    lines = (run / ANSWERS).read_text().splitlines()
    first = AnswerRecord.from_json(lines[0])
    first.extracted = {"corrected": "E"}
    (run / ANSWERS).write_text("\n".join([first.to_json(), *lines[1:]]) + "\n")
    path.unlink()
    assert cli.main(_args(["submission", str(run)])) == 0
    assert [first.key.split("/", 1)[1], "4"] in _rows(path)
    assert "3 rows for tiny-left" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no answers.jsonl"):
        cli.main(_args(["submission", str(tmp_path)]))
