"""The toy world as a suite of the runner: held-out clips rendered to mp4, their questions,
scored by the world's own keyword rule (``train.world.qa.score_answer``, metric ``keyword``).

The clips and questions are the ones ``evaluation/toy_world.py`` asks (``heldout_items``);
each question keeps its ``QA`` in ``meta`` for the scorer. The summary's columns are skills.
Yes/no questions also get ``says_yes`` (the answer's verdict is "yes") and carry whether the
claim is true, so the share of yes answers to false claims (hallucination) can be read off.
"""

from __future__ import annotations

from pathlib import Path

from evaluation import toy_world
from evaluation.records import Question


def read(media_dir: Path, clips: int, split: str = "new-clips") -> list[Question]:
    media_dir = Path(media_dir)
    media_dir.mkdir(parents=True, exist_ok=True)
    out, per_clip = [], {}
    for item in toy_world.heldout_items(media_dir, clips, split=split):
        k = per_clip[item.path] = per_clip.get(item.path, -1) + 1
        qa = item.qa
        meta = {"qa": qa, "skill": qa.skill, "form": qa.kind}
        if qa.kind == "yes_no":
            meta["claim_true"] = qa.answer == "yes"
        out.append(Question(benchmark="toy-world", task=qa.skill, qid=f"{split}/{Path(item.path).stem}/{k}",
                            media=item.path, question=qa.question, prompt=qa.question, reference=qa.answer,
                            meta=meta))
    return out
