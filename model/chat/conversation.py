"""A conversation about one media file, and how it becomes the LLM's input.

The conversation keeps plain data (media, question/answer turns, its system prompt) and
becomes a ``Dialogue`` for the prompt builder (``model/chat/builder.py``, shared with
training): the media message is the first user message and the first question is appended
to it with one space, as the original ``Chat`` does. The builder's text parts become token
pieces and its media slots the media embeddings.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from model.chat.builder import Dialogue, Part, build_prompt
from model.chat.cache import KVState, Piece
from model.chat.prompts import Template, media_message
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
    answer_prefix: str = ""  # pre-filled start of the answer, in the prompt only (``answer`` is what follows it)


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


def dialogue(conv: Conversation, start: int = 0) -> Dialogue:
    """Turns ``start:`` of the conversation (the last one may be pending), with its media and system prompt."""
    message, slots = conv.media.message_and_slots if conv.media is not None else ("", [])
    pending = conv.turns[-1] if conv.turns and conv.turns[-1].answer is None else None
    return Dialogue(turns=[(t.question, t.answer) for t in conv.turns[start:]], system=conv.system,
                    media_kind=conv.media.kind if conv.media is not None else None,
                    media_message=message, slots=tuple(slots),
                    answer_prefix=pending.answer_prefix if pending is not None else "")


def render_prompt(conv: Conversation, template: Template, tokenizer: Any, start: int) -> tuple[str, list[str]]:
    """The prompt string for turns ``start:`` and the slot branches (what people read; the
    model gets ``build_prompt(...).parts``)."""
    d = dialogue(conv, start)
    return build_prompt(template, d, tokenizer).text, list(d.slots)


def prompt_pieces(parts: list[Part], media: dict[str, Any], attachment_id: Any) -> list[Piece]:
    """The built prompt's parts as cache pieces: text ids, and media embeddings in the slots.

    Args:
        parts: ``build_prompt(...).parts(tokenizer)``.
        media: branch -> embeddings (1, n, D).
        attachment_id: makes media keys unique to the attached file.
    """
    pieces = []
    for part in parts:
        if part.ids is not None:
            pieces.append(Piece(list(part.ids), ids=list(part.ids)))
            continue
        if part.slot not in media:
            raise ValueError(f"the prompt has a {part.slot} slot but the media has no {part.slot} tokens")
        embeds = media[part.slot]  # (1, n, D)
        pieces.append(Piece([(attachment_id, part.slot, j) for j in range(embeds.shape[1])], embeds=embeds))
    return [p for p in pieces if len(p)]


def prompt_keys(pieces: list[Piece]) -> list:
    return [k for p in pieces for k in p.keys]
