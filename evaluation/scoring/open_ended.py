"""Open-ended answers without a judge: ``string_match``, a documented stand-in, never mixed
with judged numbers.

``string_match`` is 1 when the reference answer, normalised, appears in the model's answer,
normalised, as a run of whole words; 0 otherwise. Normalising lower-cases, turns punctuation
into spaces, drops the articles "a", "an" and "the", and collapses spaces. It is stricter
than a judge on paraphrases ("a dog" vs "a puppy" is 0) and looser on long answers that
list many things; it exists so that a run without any judge still gives a number, reported
under its own name.
"""

from __future__ import annotations

import string

_PUNCT = str.maketrans({c: " " for c in string.punctuation})
ARTICLES = frozenset({"a", "an", "the"})


def normalise(text: str) -> str:
    return " ".join(w for w in text.lower().translate(_PUNCT).split() if w not in ARTICLES)


def string_match(answer: str, reference: str) -> bool:
    ref = normalise(reference)
    return bool(ref) and f" {ref} " in f" {normalise(answer)} "
