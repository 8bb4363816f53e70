"""Multiple-choice scoring: each benchmark's official rule, and one corrected reading beside it.

Official rules (facts from the benchmarks' own scripts; reproduced, quirks included, so the
numbers compare with published tables):

- **MVBench** (``video_chat2/mvbench.ipynb``, ``check_ans``): take the first line of the
  answer and its first space-separated word, lower-cased; the answer is right when that word
  without dots is a substring of the right option's mark ``(b)``, or the mark is a substring
  of the word. So ``(B)``, ``B.``, ``b`` and ``B)`` count; ``The answer is B`` and the option's
  text alone do not; an **empty answer counts as right** (the empty string is a substring of
  everything). Every answer is counted.
- **Video-MME** (``evaluation/eval_your_results.py``, ``extract_characters_regex``): strip,
  delete a list of answer prefixes, give up ("no option") if more than 10 words remain and none
  of A-D appears, else take the **first capital A, B, C or D anywhere**. Two commas are
  missing in the script's prefix list, so Python joins "The best option is" + "The correct
  option is" and "Best answer:" + "Best option:" into two strings that never occur: "Best
  option: C" is not stripped and reads as **B** (the B of "Best"). Answers that name no
  option are left out of the official accuracy's denominator.

Corrected reading (ours, the same for every benchmark), ``extract_choice``, in order:
the whole answer is a letter (``B``, ``(B)``, ``B.``, ``b``); the answer starts with an option mark
(``B.``, ``B)``, ``(B)``, ``B:`` followed by text); a cue word then a capital letter
(``answer is B``, ``Best option: C``, ``option (D)``); exactly one parenthesised mark
``(B)`` anywhere; the text of exactly one option (after lower-casing and dropping
punctuation; an option contained in a longer matched option gives way to it). Otherwise the
answer names no option, which counts as wrong (the denominator is every answer).
"""

from __future__ import annotations

import re
import string

from evaluation.records import LETTERS, Question

# -- MVBench --------------------------------------------------------------------------------


def mvbench_official(answer: str, answer_index: int) -> bool:
    """``check_ans`` of the MVBench notebook on the answer's first line (see the module doc)."""
    first_line = answer.strip().split("\n")[0]
    word = first_line.lower().split(" ")[0]
    mark = f"({LETTERS[answer_index].lower()})"
    return word.replace(".", "") in mark or mark in word


# -- Video-MME ------------------------------------------------------------------------------

# The prefix list as the script's Python sees it: two pairs joined by the missing commas.
VIDEOMME_PREFIXES_AS_RUN = (
    "The best answer is", "The correct answer is", "The answer is", "The answer",
    "The best option isThe correct option is", "Best answer:Best option:",
)
# What the list was meant to be.
VIDEOMME_PREFIXES_MEANT = (
    "The best answer is", "The correct answer is", "The answer is", "The answer",
    "The best option is", "The correct option is", "Best answer:", "Best option:",
)


def videomme_official(answer: str, prefixes: tuple[str, ...] = VIDEOMME_PREFIXES_AS_RUN) -> str:
    """The letter Video-MME's script reads ("" when it reads none)."""
    s = answer.strip()
    for prefix in prefixes:
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCD]", s):
        return ""
    match = re.search("[ABCD]", s)
    return match.group(0) if match else ""


# -- corrected ------------------------------------------------------------------------------

_ALONE = re.compile(r"^\(?([A-Ja-j])\)?[.:,]?$")
_LEADING = re.compile(r"^(?:\(([A-J])\)|([A-J])[.):,](?=\s|$))")
_CUED = re.compile(r"(?i:\b(?:answer|option|choice)\b(?:\s+is)?\s*[:\-]?\s*)\(?([A-J])\)?(?![A-Za-z])")
_MARK = re.compile(r"\(([A-J])\)")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def _words(text: str) -> str:
    return " " + " ".join(text.lower().translate(_PUNCT).split()) + " "


def extract_choice(answer: str, options: tuple[str, ...] | list[str]) -> int | None:
    """The option the answer names (index), by the corrected reading; None when it names none."""
    s = answer.strip()
    n = len(options)
    for pattern in (_ALONE, _LEADING, _CUED):
        match = pattern.search(s)
        if match:
            letter = next(g for g in match.groups() if g).upper()
            if LETTERS.index(letter) < n:
                return LETTERS.index(letter)
    marks = {m for m in _MARK.findall(s) if LETTERS.index(m) < n}
    if len(marks) == 1:
        return LETTERS.index(marks.pop())
    said = _words(s)
    named = [i for i, text in enumerate(options) if _words(text).strip() and _words(text) in said]
    # "dark red" also contains "red": keep only options not inside another named option
    named = [i for i in named if not any(j != i and _words(options[i]) in _words(options[j]) for j in named)]
    return named[0] if len(named) == 1 else None


def score_choice(question: Question, answer: str) -> tuple[dict, dict]:
    """(verdicts, extracted) of one answer: the benchmark's official verdict (None: not counted
    by the official rule), the corrected one, and whether the answer names no option. A question
    without a local key (``answer_index`` None) gets only ``unscored`` and the option read, the
    index a submission to the benchmark's own server needs."""
    picked = extract_choice(answer, question.options)
    extracted: dict[str, str | None] = {"corrected": None if picked is None else LETTERS[picked]}
    if question.answer_index is None:
        return {"unscored": True}, extracted
    corrected = picked == question.answer_index
    if question.mc_rule == "mvbench":
        official: bool | None = mvbench_official(answer, question.answer_index)
    else:
        letter = videomme_official(answer)
        extracted["official"] = letter or None
        official = None if not letter else letter == question.answer_letter
    # The rules differ when they give different verdicts; an answer the official rule leaves
    # out and the corrected one also reads as naming nothing is a difference of counting only.
    differ = (picked is not None) if official is None else official != corrected
    verdicts = {"official": official, "corrected": corrected, "no_option": picked is None, "rules_differ": differ}
    return verdicts, extracted
