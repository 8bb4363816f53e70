"""EgoSchema's submission file: the option each model picked for every answered question.

EgoSchema keeps the answers of its full set private (only the 500 of ``subset_answers.json``
are public, and ``evaluation/readers/egoschema.py`` scores only those). The whole set is scored
by the benchmark's Kaggle competition ``egoschema-public`` (README, "Benchmarking on
EgoSchema", Option A: ``kaggle competitions submit -c egoschema-public -f FILE -m MESSAGE``),
which takes a CSV with the header ``q_uid,answer``: one row per question, ``answer`` the index
(0-4) of the chosen option. (The README does not spell the columns out; they are the ones the
competition's submissions use, e.g. third-party scripts writing ``q_uid,answer`` with
``index=False`` before ``kaggle competitions submit -c egoschema-public``; the competition page
itself could not be read from here.) The README's other route (``validate.py``) posts the same pairs as a
JSON object ``{q_uid: index}``; ``--format json`` is not offered, the CSV is the leaderboard's.

The index is the option the corrected reading found in the answer (``extracted["corrected"]``,
``scoring/choice.py``; EgoSchema has no official text-to-index rule). An answer that names no
option gets ``FALLBACK`` (option 0): a submission needs a value on every row, and a fixed one
keeps the file reproducible. These rows are counted (``Submission.fallback``) and printed, so the
share of guesses is known before uploading. Questions without an answer (missing or bad video)
get no row; ``Submission.unanswered`` counts them.

File names: ``egoschema_submission.csv`` in the run folder for a run of one model; with several
models, one file each, ``egoschema_submission-<model>.csv``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from evaluation.records import LETTERS, AnswerRecord

BENCHMARK = "egoschema"
FILE = "egoschema_submission.csv"
HEADER = ("q_uid", "answer")
FALLBACK = 0  # the option index written when an answer names no option


@dataclass
class Submission:
    model: str
    path: Path
    rows: int = 0  # questions in the file
    fallback: int = 0  # of those, answers that named no option (written as FALLBACK)
    unanswered: int = 0  # questions with no answer (missing or bad video): not in the file


def file_name(model: str, models: list[str]) -> str:
    """``egoschema_submission.csv`` for a single model, ``egoschema_submission-<model>.csv`` for each of several."""
    if len(models) == 1:
        return FILE
    safe = "".join(c if c.isalnum() or c in "-_.#" else "_" for c in model)
    return f"{Path(FILE).stem}-{safe}.csv"


def option_index(record: AnswerRecord) -> int | None:
    """The option index the corrected reading found in the answer, or None when it named none."""
    letter = record.extracted.get("corrected")
    return None if letter is None else LETTERS.index(letter)


def write_submissions(output: Path, records: list[AnswerRecord], models: list[str] | None = None) -> list[Submission]:
    """Write the submission file of every model with EgoSchema answers among ``records`` into
    ``output``; returns what each file holds (an empty list when no record is EgoSchema's)."""
    ego = [r for r in records if r.benchmark == BENCHMARK]
    names = models or sorted({r.model for r in ego})
    names = [m for m in names if any(r.model == m for r in ego)]
    out = []
    for model in names:
        mine = sorted((r for r in ego if r.model == model), key=lambda r: r.key)
        sub = Submission(model=model, path=Path(output) / file_name(model, names))
        with open(sub.path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for record in mine:
                if record.status != "answered":
                    sub.unanswered += 1
                    continue
                index = option_index(record)
                sub.fallback += index is None
                sub.rows += 1
                writer.writerow((_uid(record), FALLBACK if index is None else index))
        out.append(sub)
    return out


def describe(sub: Submission) -> str:
    return (f"{sub.path}: {sub.rows} rows for {sub.model}, {sub.fallback} of them naming no option "
            f"(written as option {FALLBACK}), {sub.unanswered} questions without an answer left out")


def _uid(record: AnswerRecord) -> str:
    prefix = f"{BENCHMARK}/"
    if not record.key.startswith(prefix):
        raise ValueError(f"answer key {record.key!r} is not an EgoSchema question key ({prefix}<q_uid>)")
    return record.key[len(prefix):]
