"""EgoSchema: 5,031 five-option questions on three-minute egocentric clips; 500 answers public.

Facts (egoschema/EgoSchema: ``README.md``, ``questions.json``, ``subset_answers.json``,
``download.py``, ``validate.py``):

- ``questions.json`` is a list of ``{"q_uid", "google_drive_id", "question", "option 0", ...,
  "option 4"}`` (``q_uid`` a UUID);
- ``subset_answers.json`` maps 500 of the ``q_uid``s to the right option's index (0-4); the
  README says the full answer key will not be made public: the other questions are scored only
  by the benchmark's server (Kaggle ``egoschema-public``, or ``validate.py`` posting a JSON
  ``{q_uid: index}``), which returns the accuracy on all 5,031 and on the public 500;
- ``download.py`` saves each clip as ``videos/<q_uid>.mp4``.

Questions without a local answer are asked and written to ``answers.jsonl`` like the others,
with the option the corrected reading picked (``extracted["corrected"]``, the letter for the
server's index) and the verdict ``unscored``; no accuracy here counts them. The summary's
column ``egoschema`` is the public subset only.

Like NExT-QA, the key is an option index; the text-to-index step is ours: MVBench's prompt
(``mvbench.prompt_for``, options A-E) and MVBench's rule as ``official``, the corrected reading
beside it (``scoring/choice.py``).

``--data``: the folder holding ``questions.json`` (``subset_answers.json`` beside it, optional)
and ``videos/``.
"""

from __future__ import annotations

import json
from pathlib import Path

from evaluation.readers.mvbench import prompt_for
from evaluation.records import Question

QUESTIONS, ANSWERS = "questions.json", "subset_answers.json"
OPTION_KEYS = tuple(f"option {i}" for i in range(5))
VIDEO_DIRS = ("videos", "video")  # else the clips sit beside questions.json


def read(data: Path) -> list[Question]:
    data = Path(data)
    path = data / QUESTIONS
    if not path.is_file():
        raise FileNotFoundError(f"no EgoSchema {QUESTIONS} in {data}; point --data at the folder holding it")
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list")
    answers = _answers(data / ANSWERS)
    video_root = next((data / d for d in VIDEO_DIRS if (data / d).is_dir()), data)
    return [_question(entry, f"{QUESTIONS} entry {i}", answers, video_root) for i, entry in enumerate(entries)]


def _answers(path: Path) -> dict[str, int]:
    """The public key (q_uid -> index); empty when the file is absent (every question unscored)."""
    if not path.is_file():
        return {}
    key = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(key, dict):
        raise ValueError(f"{path} must hold a JSON object (q_uid -> answer index)")
    out = {}
    for uid, index in key.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(OPTION_KEYS):
            raise ValueError(f"{path}: answer {index!r} of {uid} is not an option index 0-4")
        out[str(uid)] = index
    return out


def _question(entry: dict, where: str, answers: dict[str, int], video_root: Path) -> Question:
    for key in ("q_uid", "question", *OPTION_KEYS):
        if key not in entry:
            raise ValueError(f"{where} has no {key!r}")
    uid = str(entry["q_uid"])
    options = [str(entry[k]).strip() for k in OPTION_KEYS]
    index = answers.get(uid)
    question = str(entry["question"]).strip()
    return Question(
        benchmark="egoschema", task="egoschema", qid=uid, media=str(video_root / f"{uid}.mp4"),
        question=question, prompt=prompt_for(question, options),
        reference="" if index is None else options[index], options=tuple(options), answer_index=index,
        mc_rule="mvbench",
    )
