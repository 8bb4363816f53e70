"""Video-MME: 900 videos, 2,700 four-option questions (A-D), split short / medium / long.

Facts (BradyFU/Video-MME ``README.md`` and ``evaluation/eval_your_results.py``,
``evaluation/output_test_template.json``; the Hugging Face dataset ``lmms-lab/Video-MME``):

- the annotations ship as ``videomme/test-00000-of-00001.parquet`` with one row per
  question: ``video_id`` ("001"), ``duration`` (short/medium/long), ``domain``,
  ``sub_category``, ``url``, ``videoID`` (the file name), ``question_id`` ("001-1"),
  ``task_type``, ``question``, ``options`` (["A. ...", "B. ...", ...]) and ``answer`` ("A");
- the videos are ``<videoID>.mp4`` in ``data/`` (the dataset's zips) or ``video/``;
- the official results file nests questions per video (``duration_category``, ``questions``
  with ``choices``); this reader takes that JSON too, and a JSON list of parquet-like rows;
- the prompt most evaluations use: "Select the best answer to the following multiple-choice
  question based on the video. Respond with only the letter (A, B, C, or D) of the correct
  option." then the question, the options, and "The best answer is:".

The summary's columns are the duration splits (what the leaderboard reports).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from evaluation.records import LETTERS, Question

INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video. "
               "Respond with only the letter (A, B, C, or D) of the correct option.")
ANSWER_CUE = "The best answer is:"
VIDEO_DIRS = ("data", "video", "videos", ".")
_LETTER_PREFIX = re.compile(r"^\s*\(?([A-J])[.):]\s*")


def read(data: Path) -> list[Question]:
    data = Path(data)
    rows = _rows(data)
    if not rows:
        raise ValueError(f"no Video-MME questions in {data}")
    return [_question(row, data, i) for i, row in enumerate(rows)]


def _rows(data: Path) -> list[dict]:
    """Flat rows from the parquet file(s), or from JSON (flat rows or the nested results form)."""
    parquets = sorted(data.glob("videomme/*.parquet")) or sorted(data.glob("*.parquet"))
    if parquets:
        import pyarrow.parquet as pq

        return [row for path in parquets for row in pq.read_table(path).to_pylist()]
    jsons = sorted(data.glob("videomme/*.json")) or sorted(data.glob("*.json"))
    if not jsons:
        raise FileNotFoundError(f"no Video-MME parquet or JSON file in {data} or {data / 'videomme'}")
    rows = []
    for path in jsons:
        items = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(items, list):
            raise ValueError(f"{path} must hold a JSON list")
        for item in items:
            if "questions" in item:  # the official nested form: one entry per video
                video = {k: v for k, v in item.items() if k != "questions"}
                rows += [{**video, **q} for q in item["questions"]]
            else:
                rows.append(item)
    return rows


def option_text(option: str, index: int) -> str:
    """``"B. Two."`` -> ``"Two."`` (the letter must be the option's own)."""
    match = _LETTER_PREFIX.match(option)
    if match and match.group(1) == LETTERS[index]:
        return option[match.end():].strip()
    return option.strip()


def prompt_for(question: str, options: list[str]) -> str:
    lines = [f"{LETTERS[i]}. {text}" for i, text in enumerate(options)]
    return "\n".join([INSTRUCTION, question, *lines, ANSWER_CUE])


def _question(row: dict, data: Path, i: int) -> Question:
    where = f"Video-MME row {i}"
    raw_options = row.get("options", row.get("choices"))
    for key, value in (("question", row.get("question")), ("options", raw_options), ("answer", row.get("answer"))):
        if value is None:
            raise ValueError(f"{where} has no {key!r}")
    options = [option_text(str(o), k) for k, o in enumerate(list(raw_options))]
    answer = str(row["answer"]).strip().upper()
    if answer not in LETTERS[:len(options)]:
        raise ValueError(f"{where}: answer {row['answer']!r} is not a letter of its {len(options)} options")
    stem = str(row.get("videoID") or row.get("video_id") or "")
    if not stem:
        raise ValueError(f"{where} names no video (videoID or video_id)")
    media = next((data / d / f"{stem}.mp4" for d in VIDEO_DIRS if (data / d / f"{stem}.mp4").is_file()),
                 data / "data" / f"{stem}.mp4")
    duration = str(row.get("duration") or row.get("duration_category") or "all")
    index = LETTERS.index(answer)
    return Question(
        benchmark="video-mme", task=duration, qid=str(row.get("question_id", f"{stem}-{i}")), media=str(media),
        question=str(row["question"]), prompt=prompt_for(str(row["question"]), options),
        reference=options[index], options=tuple(options), answer_index=index, mc_rule="videomme",
        meta={k: row[k] for k in ("task_type", "domain", "sub_category") if row.get(k) is not None},
    )
