"""A whole conversation given at once, as an OpenAI-style request carries it.

``start_conversation`` turns a list of messages (an optional system prompt, user and assistant
turns ending with a user question) and at most one media file into a fresh engine
``Conversation`` whose earlier turns are already answered; ``ChatEngine.ask`` then answers the
last question. The conversation is marked ``stateless``: the engine puts its KV cache into
the shared prefix store after the turn, where the next request that resends the same
conversation with one more question finds it (``model/chat/prefix.py``).

Plain Python on purpose: the HTTP server (``serve/``) only translates the wire format into
these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.chat.conversation import Conversation, Turn
from model.chat.errors import BadRequest
from model.chat.prompts import IMAGE_SLOT

ROLES = ("system", "user", "assistant")


@dataclass
class Message:
    role: str  # "system", "user" or "assistant"
    text: str


@dataclass
class MediaFile:
    """The conversation's media, already on local disk (the caller resolved any URL)."""

    path: str
    kind: str | None = None  # "video", "image", "audio"; None: guessed from the content
    use_audio: bool = True  # a video's sound track goes to the model
    num_frames: int | None = None  # None: the engine's default


def split_messages(messages: list[Message]) -> tuple[str | None, list[Turn], str]:
    """(system prompt or None, answered turns, last question). Consecutive messages of one
    role are joined with a blank line; several system messages likewise."""
    if not messages:
        raise BadRequest("messages is empty; send at least one user message")
    system: list[str] = []
    merged: list[Message] = []
    for i, message in enumerate(messages):
        if message.role not in ROLES:
            raise BadRequest(f"messages[{i}] has role {message.role!r}; use one of {', '.join(ROLES)}")
        if IMAGE_SLOT in message.text:
            raise BadRequest(f"messages[{i}] contains {IMAGE_SLOT!r}, which marks where media goes; "
                             "send media as a content part instead")
        if message.role == "system":
            system.append(message.text)
        elif merged and merged[-1].role == message.role:
            merged[-1] = Message(message.role, f"{merged[-1].text}\n\n{message.text}")
        else:
            merged.append(Message(message.role, message.text))
    if not merged or merged[0].role != "user":
        raise BadRequest("the first non-system message must come from the user")
    if merged[-1].role != "user":
        raise BadRequest("the last message must be a user question for the model to answer")
    turns = [Turn(q.text, a.text) for q, a in zip(merged[:-1:2], merged[1::2], strict=True)]
    return ("\n\n".join(system) if system else None), turns, merged[-1].text


def start_conversation(engine: Any, messages: list[Message], *, model: str | None = None,
                       media: MediaFile | None = None) -> tuple[Conversation, str]:
    """A fresh stateless conversation holding every turn but the last; returns it and the
    last question, for ``engine.ask(conv, question, settings)``.

    Raises ``BadRequest`` (unknown model, bad message order) or ``MediaError`` (the file).
    """
    system, turns, question = split_messages(messages)
    conv = engine.new_conversation(model, system=system)
    conv.stateless = True
    if media is not None:
        engine.attach_media(conv, media.path, kind=media.kind, use_audio=media.use_audio,
                            num_frames=media.num_frames)
    conv.turns = turns
    return conv, question
