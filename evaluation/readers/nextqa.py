"""NExT-QA (multiple choice): 5 options per question, accuracy per causal / temporal / descriptive group.

Facts (doc-doc/NExT-QA: ``README.md``, ``eval_mc.py``, ``dataset/nextqa/{val,test}.csv`` and
``dataset/nextqa/map_vid_vidorID.json``):

- ``val.csv`` / ``test.csv`` have the header ``video,frame_count,width,height,question,answer,
  qid,type,a0,a1,a2,a3,a4``: ``video`` is a numeric id, ``answer`` the index (0-4) of the right
  one of ``a0``..``a4``, ``qid`` a number unique within its video, ``type`` one of CW, CH
  (causal: why, how), TN, TP, TC (temporal: next, previous, concurrent), DC, DL, DO
  (descriptive: count, location, other); questions are lower case without a question mark;
- ``map_vid_vidorID.json`` maps the id to its VidOR path without extension
  (``"2909445186": "0101/2909445186"``); the raw videos are ``NExTVideo/<path>.mp4``;
- ``eval_mc.py`` keys a question as ``<video>_<qid>``, counts it right when the predicted index
  equals ``answer``, merges TP into TN, and reports per type, per group (Acc_C, Acc_T, Acc_D:
  every question of the group weighing the same) and overall (Acc); it reads ``val.csv`` by
  default.

The official script scores an option index; turning the model's text into that index is the
evaluator's part, so we ask with MVBench's prompt (``mvbench.prompt_for``, five options A-E)
and read with MVBench's rule as ``official`` and the corrected reading beside it
(``scoring/choice.py``). The summary's columns are the three groups and ``nextqa/all``; the
fine type is kept in ``meta["type"]``.

``--data``: the folder holding ``val.csv`` (read; pass a CSV file's path to read another split,
e.g. ``test.csv``) and the map file, next to or above ``NExTVideo/``. Without a map file the
videos are looked up as ``<video>.mp4`` (the flat layout some mirrors use).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from evaluation.readers.mvbench import prompt_for
from evaluation.records import Question

COLUMNS = ("video", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3", "a4")
OPTION_COLUMNS = ("a0", "a1", "a2", "a3", "a4")
GROUPS = {"C": "causal", "T": "temporal", "D": "descriptive"}  # by the type's first letter, as eval_mc.py
DEFAULT_SPLIT = "val.csv"
MAP_FILE = "map_vid_vidorID.json"
VIDEO_DIRS = ("NExTVideo", "videos", "video")


def read(data: Path) -> list[Question]:
    data = Path(data)
    csv_path = data if data.is_file() else data / DEFAULT_SPLIT
    if not csv_path.is_file():
        raise FileNotFoundError(f"no NExT-QA {DEFAULT_SPLIT} in {data}; point --data at the folder holding it "
                                "(dataset/nextqa/) or at a split's CSV file")
    folder = csv_path.parent
    paths = _video_map(folder)
    video_root = _video_root(folder)
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path} lacks the columns {missing} (header: {reader.fieldnames})")
        return [_question(row, f"{csv_path.name} line {i + 2}", paths, video_root) for i, row in enumerate(reader)]


def _video_map(folder: Path) -> dict[str, str] | None:
    """Video id -> relative path without extension, from the map file beside the CSV or above it."""
    for candidate in (folder / MAP_FILE, folder.parent / MAP_FILE):
        if candidate.is_file():
            mapping = json.loads(candidate.read_text(encoding="utf-8"))
            if not isinstance(mapping, dict):
                raise ValueError(f"{candidate} must hold a JSON object (video id -> path)")
            return {str(k): str(v) for k, v in mapping.items()}
    return None


def _video_root(folder: Path) -> Path:
    """The first videos folder beside the CSV or up to two levels above (dataset/nextqa/ sits
    two levels below the repository root); the CSV's folder itself when there is none."""
    for base in (folder, folder.parent, folder.parent.parent):
        for name in VIDEO_DIRS:
            if (base / name).is_dir():
                return base / name
    return folder


def _question(row: dict, where: str, paths: dict[str, str] | None, video_root: Path) -> Question:
    options = [str(row[c]).strip() for c in OPTION_COLUMNS]
    try:
        index = int(str(row["answer"]).strip())
    except ValueError as err:
        raise ValueError(f"{where}: answer {row['answer']!r} is not an option index 0-4") from err
    if not 0 <= index < len(options):
        raise ValueError(f"{where}: answer {index} is not an option index 0-4")
    kind = str(row["type"]).strip()
    group = GROUPS.get(kind[:1])
    if group is None:
        raise ValueError(f"{where}: unknown question type {kind!r} (expected C*, T* or D*, e.g. CW, TN, DL)")
    video = str(row["video"]).strip()
    relative = paths.get(video, video) if paths is not None else video
    question = str(row["question"]).strip()
    return Question(
        benchmark="nextqa", task=group, qid=f"{video}_{str(row['qid']).strip()}",
        media=str(video_root / f"{relative}.mp4"), question=question, prompt=prompt_for(question, options),
        reference=options[index], options=tuple(options), answer_index=index, mc_rule="mvbench",
        meta={"type": "TN" if kind == "TP" else kind},  # eval_mc.py merges previous into next
    )
