"""The one prompt builder: a conversation -> its prompt string and token ids with media slots.

Training (``train/stages.py``) and the chat engine (``model/chat/turn.py``) both call
``build_prompt`` and ``Prompt.parts``, so the same conversation becomes the same string and
the same token ids in both (``tests/test_prompt_builder.py`` checks it for every template).

How the text is tokenized:

* The template renders the conversation with a placeholder wherever a user (or training data)
  gave text: the questions, the answers and the system prompt. Everything else is the
  template's own markup: its special tokens (``</s>``, ``<|im_start|>``) are real special
  tokens and its ``<ImageHere>`` slots become media parts.
* The user text goes back in with the template's plain-text turn markers escaped
  (``Template.escape``) and is tokenized as plain text (``split_special_tokens``): a question
  that types ``<|im_end|>`` gets ordinary tokens, never the end of a turn.
* Text is tokenized in runs between media slots and markup special tokens, one call per run,
  BOS on the first run when ``Template.add_start_token``. A tokenizer cuts its input at
  special tokens anyway, and the original tokenizes each segment between slots in one call,
  so for ordinary text the ids are the original's.
* The conversation is cut into regions: each turn's prompt, then its answer (the answer and
  the template's end-of-answer text, which training supervises). Runs never cross a region
  edge, so a prompt whose last answer is pending tokenizes exactly as the beginning of the
  training example in which that answer is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from model.chat.prompts import Template, join_question, media_system

_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")  # private-use characters, which no template writes


@dataclass(frozen=True)
class Dialogue:
    """What a prompt is built from: plain data, the same for the chat engine and training."""

    turns: list[tuple[str, str | None]]  # (question, answer); only the last answer may be None (pending)
    system: str | None = None  # None: the template's default for ``media_kind``
    media_kind: str | None = None  # "video", "image", "audio" or None (text only)
    media_message: str = ""  # introduces the media (with its slots); the first question follows it
    slots: tuple[str, ...] = ()  # the branch ("video" / "audio") of each slot, in order
    # Text the pending answer starts with, written into the prompt for the model to continue
    # (a benchmark's "Best option:("); "" asks for the answer from its first word.
    answer_prefix: str = ""


@dataclass
class Part:
    """One run of a built prompt: text token ids, or a media slot."""

    ids: list[int] | None = None
    slot: str | None = None  # the media branch of a slot
    answer: bool = False  # part of an answer with its end-of-answer text (what training supervises)


@dataclass
class Region:
    text: str  # rendered markup, with placeholders for user text
    answer: bool


@dataclass
class Prompt:
    """A rendered conversation; ``text`` for people, ``parts(tokenizer)`` for the model."""

    template: Template
    regions: list[Region]
    plain: list[str]  # user texts (escaped) by placeholder number
    slots: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The prompt string, slots as ``<ImageHere>``: the original's string for ordinary text."""
        return "".join(_PLACEHOLDER.sub(lambda m: self.plain[int(m.group(1))], r.text) for r in self.regions)

    def parts(self, tokenizer: Any) -> list[Part]:
        """Token ids and media slots, in order (empty runs left out)."""
        specials = special_tokens(tokenizer)
        splitter = re.compile("(" + "|".join(re.escape(s) for s in sorted([self.template.slot, *specials],
                                                                         key=len, reverse=True)) + ")")
        runs = _Runs(tokenizer, bos=self.template.add_start_token)
        slots = list(self.slots)
        for region in self.regions:
            runs.answer = region.answer
            for i, piece in enumerate(_PLACEHOLDER.split(region.text)):
                if i % 2:  # user text
                    runs.add_text(self.plain[int(piece)])
                    continue
                for j, markup in enumerate(splitter.split(piece)):
                    if not j % 2:
                        runs.add_text(markup)
                    elif markup == self.template.slot:
                        if not slots or region.answer:
                            raise ValueError(f"the prompt has more media slots than the {len(self.slots)} "
                                             "the media fills")
                        runs.add_slot(slots.pop(0))
                    else:
                        runs.add_special(*specials[markup])
            runs.end_part()
        if slots:
            raise ValueError(f"the prompt has {len(self.slots) - len(slots)} media slots but the media "
                             f"fills {len(self.slots)}")
        return runs.parts


def build_prompt(template: Template, dialogue: Dialogue, tokenizer: Any = None) -> Prompt:
    """Render ``dialogue`` with ``template`` turn by turn (the tokenizer is needed for chat templates).

    Raises ValueError when the template does not render the conversation prefix by prefix, or
    changes the text of a message (then user text could not be told from markup).
    """
    plain: list[str] = []

    def hold(text: str) -> str:  # a placeholder for user text; empty text stays empty (templates skip it)
        if not text:
            return text
        plain.append(template.escape(text))
        return f"\ue000{len(plain) - 1}\ue001"

    system = hold(dialogue.system if dialogue.system is not None else media_system(template, dialogue.media_kind))
    user, assistant = template.roles
    messages: list[tuple[str, str | None]] = []
    regions: list[Region] = []
    done = ""  # rendered text already in regions
    for k, (question, answer) in enumerate(dialogue.turns):
        text = hold(question)
        messages.append((user, join_question(dialogue.media_message, text) if k == 0 and dialogue.media_message
                         else text))
        prompt = template.render(system, [*messages, (assistant, None)], tokenizer)
        regions.append(Region(_after(prompt, done, template), answer=False))
        if answer is None:
            if k != len(dialogue.turns) - 1:
                raise ValueError("only the last turn of a conversation may be unanswered")
            if dialogue.answer_prefix:
                regions[-1].text += _prefilled(template, system, messages, hold(dialogue.answer_prefix), prompt,
                                               tokenizer)
            break
        messages.append((assistant, hold(answer)))
        reply = template.answer_end(_after(template.render(system, messages, tokenizer), prompt, template))
        regions.append(Region(reply, answer=True))
        done = prompt + reply
    found = [int(m.group(1)) for r in regions for m in _PLACEHOLDER.finditer(r.text)]
    if sorted(found) != list(range(len(plain))):
        raise ValueError(f"template {template.name!r} changed or dropped the text of a message; "
                         "its prompts cannot be built safely")
    return Prompt(template, regions, plain, tuple(dialogue.slots))


def _prefilled(template: Template, system: str, messages: list, held: str, prompt: str, tokenizer: Any) -> str:
    """What follows ``prompt`` when the answer starts with the (held) prefix: the conversation
    rendered with the prefix as the answer, cut right after it (before the end-of-answer markup),
    so every template writes the prefix where its answers go ("Assistant: Best option:(")."""
    rendered = template.render(system, [*messages, (template.roles[1], held)], tokenizer)
    return _after(rendered[:rendered.index(held) + len(held)], prompt, template)


def _after(text: str, prefix: str, template: Template) -> str:
    if not text.startswith(prefix):
        raise ValueError(f"template {template.name!r} does not render conversations prefix by prefix")
    return text[len(prefix):]


def plain_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as plain text: no start token, and no special token however it is spelled."""
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def special_tokens(tokenizer: Any) -> dict[str, tuple[int, bool, bool]]:
    """The tokenizer's special tokens: text -> (id, strips the space before, strips the space after)."""
    out = {}
    for token_id, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if token.special:
            out[str(token.content)] = (int(token_id), bool(token.lstrip), bool(token.rstrip))
    for text in getattr(tokenizer, "all_special_tokens", []):
        out.setdefault(text, (int(tokenizer.convert_tokens_to_ids(text)), False, False))
    return out


@dataclass
class _Runs:
    """Collects token ids run by run: text is tokenized as plain text when a special token, a
    slot or a region edge ends the run."""

    tokenizer: Any
    bos: bool  # the next run gets the tokenizer's start token (once)
    answer: bool = False
    parts: list[Part] = field(default_factory=list)
    text: str = ""
    ids: list[int] = field(default_factory=list)
    strip_next: bool = False  # the last special token swallows the whitespace after it

    def add_text(self, text: str) -> None:
        if self.strip_next:
            text = text.lstrip()
            self.strip_next = not text
        self.text += text

    def add_special(self, token_id: int, lstrip: bool, rstrip: bool) -> None:
        if lstrip:
            self.text = self.text.rstrip()
        self._flush_text()
        self.ids.append(token_id)
        self.strip_next = rstrip

    def add_slot(self, branch: str) -> None:
        self.end_part()
        self.parts.append(Part(slot=branch))

    def end_part(self) -> None:
        self._flush_text()
        if self.ids:
            self.parts.append(Part(ids=self.ids, answer=self.answer))
        self.ids = []

    def _flush_text(self) -> None:
        if self.text or self.bos:
            encoded = self.tokenizer(self.text, add_special_tokens=self.bos, split_special_tokens=True)
            self.ids += list(encoded["input_ids"])
            self.bos = False
        self.text = ""
