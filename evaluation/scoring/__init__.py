"""Scorers: multiple choice (``choice``), open-ended without a judge (``open_ended``), and the
GPT-judge protocol of Video-ChatGPT through any OpenAI-compatible endpoint (``judge``)."""

from __future__ import annotations

from evaluation.records import Question
from evaluation.scoring.choice import score_choice
from evaluation.scoring.open_ended import string_match


def score(question: Question, answer: str) -> tuple[dict, dict]:
    """(verdicts, extracted) of an answer by every rule that applies without a judge.

    Multiple choice: ``official``, ``corrected``, ``no_option``, ``rules_differ``. Open-ended:
    ``string_match``; toy-world questions (their ``QA`` in ``meta``) also ``keyword`` and, for
    yes/no questions, ``says_yes``.
    """
    if question.options:
        return score_choice(question, answer)
    verdicts: dict = {"string_match": string_match(answer, question.reference)}
    qa = question.meta.get("qa")
    if qa is not None:
        from evaluation.toy_world import SAYS_YES
        from train.world.qa import score_answer

        verdicts["keyword"] = bool(score_answer(qa, answer))
        if qa.kind == "yes_no":
            verdicts["says_yes"] = bool(score_answer(SAYS_YES, answer))
    return verdicts, {}
