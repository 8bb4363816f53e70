"""The OpenAI chat-completions wire format, as pydantic models (requests in, responses out).

Written here rather than imported from the ``openai`` package: its request types are
TypedDicts for building requests, not validators, and the server should not depend on a
client library. Field names and shapes follow the OpenAI API reference; media parts follow
vLLM (``video_url``, ``audio_url``) where OpenAI has none. ``extra="forbid"`` on the request
makes a misspelt parameter a 400 naming it, as OpenAI does, instead of being silently ignored.

Project-specific request fields (documented in the README's "Serving" section):
``num_frames`` (frames sampled from a video), ``use_audio`` (give the model a video's sound
track; default true), ``videollama_trace`` (add the turn's trace to the response) and, as
vLLM spells them, ``top_k``, ``repetition_penalty`` and ``num_beams``.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- request ---------------------------------------------------------------------------
class MediaURL(_Strict):
    url: str
    detail: str | None = None  # OpenAI's image detail level; accepted and ignored


class InputAudio(_Strict):
    data: str  # base64
    format: str  # "wav", "mp3", ...


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: MediaURL


class VideoPart(_Strict):
    type: Literal["video_url"]
    video_url: MediaURL


class AudioURLPart(_Strict):
    type: Literal["audio_url"]
    audio_url: MediaURL


class InputAudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[TextPart | ImagePart | VideoPart | AudioURLPart | InputAudioPart,
                        Field(discriminator="type")]


class RequestMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str
    messages: list[RequestMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)  # one answer per request
    user: str | None = None
    # Project-specific (extra body fields).
    num_frames: int | None = Field(None, ge=1)
    use_audio: bool = True
    videollama_trace: bool = False
    top_k: int | None = Field(None, ge=0)  # as vLLM's extra sampling parameters
    repetition_penalty: float | None = Field(None, gt=0)
    num_beams: int | None = Field(None, ge=1, le=16)


# -- response --------------------------------------------------------------------------
def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AnswerMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AnswerMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    videollama_trace: dict[str, Any] | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    videollama_trace: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "videollama"
    max_frames: int  # frames a video may be sampled into (the frame position embedding's size)
    # The settings a request's omitted fields take (the model folder's generation_config.json,
    # under its keys), so a client can start from them.
    generation_defaults: dict[str, Any] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "loading"]
    models_loaded: bool
    models: list[str]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
