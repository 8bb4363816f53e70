"""The typed records that flow through an evaluation: a question in, an answer line out.

Readers (``evaluation/readers/``) turn a benchmark's files into ``Question``s; the runner asks
every model each question and writes one ``AnswerRecord`` per (model, question) as a JSON
line; the summary reads those lines back. Keeping both as dataclasses (not dicts with string
keys) means a renamed field fails loudly in one place.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

LETTERS = "ABCDEFGHIJ"  # option letters; MVBench has up to 5 candidates, Video-MME 4

# How a benchmark scores its multiple-choice answers (see ``evaluation/scoring/choice.py``).
MC_RULES = ("mvbench", "videomme")


@dataclass(frozen=True)
class Question:
    """One question about one media file, as a benchmark defines it.

    ``options`` is empty for open-ended questions; for multiple choice it holds the option
    texts in order (A, B, ...) and ``answer_index`` the right one, or None when the benchmark
    keeps its key private (EgoSchema beyond its public subset): asked and recorded, not scored.
    ``prompt`` is the text the model is asked (the benchmark's own prompt format, options
    included); ``question`` is the bare question (what the judge and the tables show).
    """

    benchmark: str  # "msvd-qa", "mvbench", "video-mme", "toy-world", ...
    task: str  # column of the summary table: the benchmark itself, or its task / split
    qid: str  # unique within the benchmark
    media: str  # path of the video (or image) file; may not exist (recorded, then skipped)
    question: str
    prompt: str
    reference: str  # the reference answer's text (for multiple choice: the right option's text)
    options: tuple[str, ...] = ()
    answer_index: int | None = None
    mc_rule: str | None = None  # one of MC_RULES for multiple choice
    window: tuple[float, float] | None = None  # (start, end) seconds the benchmark asks about; frames come from it
    # The benchmark's own prompt protocol (used when the run's ``prompt`` is "official"): its
    # system prompt (None: the model's), the text the answer is pre-filled with, and the part of
    # that text its script puts back before scoring (MVBench: "Best option:(" and "(").
    system: str | None = None
    prefill: str = ""
    prefill_kept: str = ""
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.options:
            if self.answer_index is not None and not 0 <= self.answer_index < len(self.options):
                raise ValueError(f"question {self.qid!r}: the answer is not one of its {len(self.options)} options")
            if self.mc_rule not in MC_RULES:
                raise ValueError(f"question {self.qid!r}: mc_rule must be one of {MC_RULES}")

    @property
    def kind(self) -> str:
        return "choice" if self.options else "open"

    @property
    def key(self) -> str:
        """Identity across runs and models: benchmark and question id."""
        return f"{self.benchmark}/{self.qid}"

    @property
    def answer_letter(self) -> str | None:
        return None if self.answer_index is None else LETTERS[self.answer_index]


@dataclass
class AnswerRecord:
    """One JSON line of ``answers.jsonl``: a model's answer to a question and its verdicts.

    ``status`` is "answered", "missing_media" or "bad_media" (then ``error`` says why and
    ``answer`` is empty). ``verdicts`` maps a metric name to its value for this answer
    (``official``/``corrected`` right-or-wrong for multiple choice, ``string_match``,
    ``judge_yes``/``judge_score``, ``keyword``); ``extracted`` the option each rule read.
    """

    model: str
    key: str
    benchmark: str
    task: str
    question: str
    reference: str
    media: str
    status: str = "answered"
    answer: str = ""
    error: str = ""
    verdicts: dict[str, Any] = field(default_factory=dict)
    extracted: dict[str, str | None] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    decoded: bool = False  # this answer's media was decoded for it (not taken from a cache)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> AnswerRecord:
        data = json.loads(line)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)} in an answer line")
        return cls(**data)
