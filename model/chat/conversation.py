"""A conversation about one media file, and how it becomes the LLM's input.

The conversation keeps plain data (media, question/answer turns) and renders it with a
template from ``model/prompts.py`` exactly as the original ``Chat`` does: the media message
is the first user message and the first question is appended to it with one space. The
prompt string is split on ``<ImageHere>``, each text segment tokenized separately (BOS
only on the first, as the original), and media embeddings go between segments.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from model.chat.cache import KVState, Piece
from model.chat.prompts import Template, join_question, media_message, media_system, render, split_slots
from model.chat.trace import TurnTrace

_ids = itertools.count(1)


@dataclass
class Attachment:
    """A media file attached to a conversation, with the message that introduces it."""

    path: str
    kind: str  # "video", "image" or "audio"
    media: Any  # model.media.MediaInput
    use_audio: bool  # the sound goes to the model (video with an audio track, or audio only)
    options_key: tuple  # the load options that shaped the tensors (part of cache keys)
    load_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def message_and_slots(self) -> tuple[str, list[str]]:
        frame_message = getattr(self.media, "frame_message", "") or ""
        return media_message(self.kind, with_audio=self.use_audio and self.kind == "video",
                             frame_message=frame_message)


@dataclass
class Turn:
    question: str
    answer: str | None = None  # None while it is being generated


@dataclass(eq=False)
class Conversation:
    """One chat. Create with ``ChatEngine.new_conversation``; mutate through the engine."""

    model: str
    system: str | None = None  # replaces the template's system prompt (and the media's); None: default
    media: Attachment | None = None
    turns: list[Turn] = field(default_factory=list)
    first_turn: int = 0  # turns before this were dropped to fit the context window
    id: int = field(default_factory=lambda: next(_ids))
    # Engine state: caches and the requests in flight. Guarded by ``lock``.
    kv: KVState | None = None
    media_tokens: dict = field(default_factory=dict)  # (model, attachment id) -> {branch: (1, n, D)}
    requests: list = field(default_factory=list)
    last_trace: TurnTrace | None = None  # written by model/chat/turn.py when a turn ends
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Set by model/chat/stateless.py: after each turn the engine moves the KV cache to its shared
    # prefix store (for the next request resending this conversation) instead of keeping it here.
    stateless: bool = False

    def history(self) -> list[tuple[str, str | None]]:
        """(question, answer) pairs, including dropped turns (they are only hidden from the LLM)."""
        return [(t.question, t.answer) for t in self.turns]

    def reset_caches(self) -> None:
        self.kv = None
        self.media_tokens.clear()


def render_prompt(conv: Conversation, template: Template, tokenizer: Any, start: int) -> tuple[str, list[str]]:
    """The prompt text for turns ``start:`` (the last one pending) and the slot branches."""
    user, assistant = template.roles
    messages: list[tuple[str, str | None]] = []
    slots: list[str] = []
    media_msg = None
    if conv.media is not None:
        media_msg, slots = conv.media.message_and_slots
    for i, turn in enumerate(conv.turns[start:]):
        question = join_question(media_msg, turn.question) if i == 0 and media_msg is not None else turn.question
        messages += [(user, question), (assistant, turn.answer)]
    system = conv.system if conv.system is not None else media_system(template, conv.media.kind if conv.media else None)
    return render(template, system, messages, tokenizer), slots


def prompt_pieces(prompt: str, slots: list[str], media: dict[str, Any], attachment_id: int,
                  tokenizer: Any, add_bos: bool) -> list[Piece]:
    """Tokenize the text around the ``<ImageHere>`` slots and put media embeddings in them.

    Args:
        prompt: rendered prompt text.
        slots: branch ("video"/"audio") of each slot, in order.
        media: branch -> embeddings (1, n, D).
        attachment_id: makes media keys unique to the attached file.
        tokenizer: the LLM's tokenizer.
        add_bos: whether the first segment gets the tokenizer's special tokens (BOS);
            chat-template prompts carry their own.
    """
    segments = split_slots(prompt)
    if len(segments) != len(slots) + 1:
        raise ValueError(f"prompt has {len(segments) - 1} media slots but the media fills {len(slots)}")
    pieces = []
    for i, segment in enumerate(segments):
        ids = tokenizer(segment, add_special_tokens=add_bos and i == 0)["input_ids"]
        pieces.append(Piece(list(ids), ids=list(ids)))
        if i < len(slots):
            embeds = media[slots[i]]  # (1, n, D)
            keys = [(attachment_id, slots[i], j) for j in range(embeds.shape[1])]
            pieces.append(Piece(keys, embeds=embeds))
    return [p for p in pieces if len(p)]


def prompt_keys(pieces: list[Piece]) -> list:
    return [k for p in pieces for k in p.keys]
