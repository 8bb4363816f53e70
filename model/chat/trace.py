"""What happened in one chat turn: written by ``model/chat/turn.py``, read by attribute.

``ChatEngine.trace(conv)`` returns the ``TurnTrace`` of the conversation's last turn (None
before the first one). The web app's Under-the-hood tab (``app/inspect_view.py``), the
``chat --trace`` command and the batch command's notes read it; none of them needs to know
how a turn is run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from model.chat.generate import GenerationSettings


@dataclass
class Timings:
    """Seconds per stage of the turn; None when the stage did not run (e.g. features came from
    the cache, or there is no media). Fields are in the order the stages run."""

    queue_wait: float = 0.0  # from the request being submitted to a worker taking it
    decode: float | None = None  # loading the media file (first turn about it only)
    vision_encode: float | None = None  # frozen EVA ViT + image Q-Former (0.0: from the cache)
    audio_encode: float | None = None  # frozen ImageBind audio encoder (0.0: from the cache)
    adapters: float | None = None  # video / audio Q-Formers and projections, both branches
    embed: float | None = None  # prompt tokens embedded, media tokens spliced in
    prefill: float | None = None  # the LLM over the new prompt tokens, including the first sample
    first_token: float | None = None  # from the request being submitted to the first answer token
    generate: float | None = None  # the whole answer
    total: float | None = None  # the whole turn on the worker

    def rows(self) -> list[tuple[str, float]]:
        """(stage, seconds) for the stages that ran, in order."""
        return [(f.name, value) for f in dataclasses.fields(self)
                if (value := getattr(self, f.name)) is not None]


@dataclass
class Shapes:
    """Tensor shapes along the pipeline (None: that tensor was not computed in this turn)."""

    frames: list[int] | None = None  # (1, T, 3, H, W) sampled frames
    fbank: list[int] | None = None  # (1, S, 1, mel, time) audio clips
    frame_features: list[int] | None = None  # (1, T, Qi, H) frozen vision output
    clip_embeddings: list[int] | None = None  # (1, S, E) frozen audio output
    video_tokens: list[int] | None = None  # (1, Qv, D) soft tokens
    audio_tokens: list[int] | None = None  # (1, Qa, D) soft tokens
    prompt_embeds: list[int] | None = None  # (1, L, D) what the LLM prefilled


@dataclass
class TokenCounts:
    prompt: int = 0  # the whole prompt, media tokens included
    media: int = 0  # soft tokens in the prompt
    turns_in_prompt: int = 0  # turns the model sees (older ones may be dropped to fit)
    reused: int = 0  # prompt tokens taken from the conversation's KV cache
    prefilled: int = 0  # prompt tokens the LLM ran over
    new: int = 0  # answer tokens generated
    limit: int = 0  # answer tokens allowed: max_new_tokens, or less when the context is nearly full


@dataclass
class MediaInfo:
    path: str
    kind: str  # "video", "image" or "audio"
    sound: bool  # whether the model heard the file's sound


@dataclass
class TurnTrace:
    """The prompt, stage timings, tensor shapes, token counts and notes of one turn."""

    model: str  # the engine's name for the model that answered
    template: str  # its prompt template
    settings: GenerationSettings
    timings: Timings = field(default_factory=Timings)
    shapes: Shapes = field(default_factory=Shapes)
    tokens: TokenCounts = field(default_factory=TokenCounts)
    notes: list[str] = field(default_factory=list)  # for the user, e.g. "this video has no sound"
    media: MediaInfo | None = None
    prompt: str = ""  # the rendered prompt (media slots as text)
    tokens_per_second: float = 0.0

    def add_time(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to a stage that may run more than once per turn (the adapters)."""
        setattr(self.timings, stage, (getattr(self.timings, stage) or 0.0) + seconds)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (the ``chat`` command's ``/trace``)."""
        return dataclasses.asdict(self)
