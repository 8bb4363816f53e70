"""Request handlers: plain functions over an injected ``ChatEngine`` (no HTTP objects here).

``prepare`` turns a validated ``ChatCompletionRequest`` into a stateless engine conversation
(media resolved to a local file, system prompt, earlier turns) and generation settings;
``open_answer`` queues it on the engine (``EngineBusy`` here means 429, before any byte is
sent); ``complete`` and ``chunks`` turn the engine's text deltas into a ``chat.completion``
or a sequence of ``chat.completion.chunk`` objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from model.chat.conversation import Conversation
from model.chat.generate import GenerationSettings, generation_dict
from model.chat.stateless import MediaFile, Message, start_conversation
from serve.errors import ApiError
from serve.media import MediaPolicy, resolve_audio, resolve_url
from serve.schema import (
    AnswerMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    Health,
    ModelCard,
    ModelList,
    RequestMessage,
    Usage,
    completion_id,
)

# The part type that says which kind of file the client meant.
PART_KINDS = {"image_url": "image", "video_url": "video", "audio_url": "audio", "input_audio": "audio"}


@dataclass
class Prepared:
    """A request ready to run: the engine conversation, its last question and settings."""

    id: str
    model: str
    conv: Conversation
    question: str
    settings: GenerationSettings
    with_trace: bool
    with_usage: bool  # streaming: a last chunk with the usage block (stream_options.include_usage)


def list_models(engine: Any) -> ModelList:
    return ModelList(data=[ModelCard(id=name, max_frames=engine.models[name].config.max_frame_pos,
                                     generation_defaults=generation_dict(engine.generation_defaults(name)))
                           for name in engine.model_names])


def health(engine: Any | None) -> Health:
    if engine is None:
        return Health(status="loading", models_loaded=False, models=[])
    return Health(status="ok", models_loaded=True, models=list(engine.model_names))


def prepare(engine: Any, request: ChatCompletionRequest, policy: MediaPolicy) -> Prepared:
    """Check the request against the loaded models and turn it into an engine conversation.

    Blocking (it may fetch and decode the media): call it from a worker thread.
    """
    if request.model not in engine.model_names:
        raise ApiError(404, f"the model {request.model!r} does not exist here; loaded models: "
                            f"{', '.join(engine.model_names)} (GET /v1/models)", param="model",
                       code="model_not_found")
    messages, media = convert_messages(request, policy)
    conv, question = start_conversation(engine, messages, model=request.model, media=media)
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    return Prepared(id=completion_id(), model=request.model, conv=conv, question=question,
                    settings=settings_for(engine.generation_defaults(request.model), request),
                    with_trace=request.videollama_trace, with_usage=include_usage)


def convert_messages(request: ChatCompletionRequest, policy: MediaPolicy) -> tuple[list[Message], MediaFile | None]:
    """Engine messages (text only) and the one media file the request carries, if any."""
    messages, media_parts = [], []
    for i, message in enumerate(request.messages):
        texts = []
        for part in _parts(message):
            if part.type == "text":
                texts.append(part.text)
            elif message.role != "user":
                raise ApiError(400, f"messages[{i}] ({message.role}) has a {part.type} part; only user "
                                    "messages may carry media", param=f"messages[{i}].content")
            else:
                media_parts.append(part)
        role = "system" if message.role == "developer" else message.role  # OpenAI's newer name for system
        messages.append(Message(role, "\n".join(texts)))
    if len(media_parts) > 1:
        raise ApiError(400, f"the conversation carries {len(media_parts)} media files; Video-LLaMA talks about "
                            "one file per conversation (start a new conversation for another)", param="messages")
    if not media_parts:
        return messages, None
    part = media_parts[0]
    if part.type == "input_audio":
        path = resolve_audio(part.input_audio.data, part.input_audio.format, policy)
    else:
        path = resolve_url(getattr(part, part.type).url, policy)
    return messages, MediaFile(path=path, kind=PART_KINDS[part.type], use_audio=request.use_audio,
                               num_frames=request.num_frames)


def _parts(message: RequestMessage) -> list[Any]:
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [_Text(message.content)]
    return list(message.content)


@dataclass
class _Text:
    text: str
    type: str = "text"


def settings_for(defaults: GenerationSettings, request: ChatCompletionRequest) -> GenerationSettings:
    """The model folder's generation defaults with the request's values on top."""
    changes: dict[str, Any] = {}
    if request.temperature is not None:
        changes["temperature"] = request.temperature  # 0: greedy
    if request.top_p is not None:
        changes["top_p"] = request.top_p
    limit = request.max_completion_tokens or request.max_tokens
    if limit is not None:
        changes["max_new_tokens"] = limit
    for name in ("seed", "top_k", "repetition_penalty", "num_beams"):
        if getattr(request, name) is not None:
            changes[name] = getattr(request, name)
    if request.stop is not None:
        changes["stop"] = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop)
    return dataclasses.replace(defaults, **changes)


def open_answer(engine: Any, prepared: Prepared) -> Iterator[str]:
    """Queue the request; returns the engine's iterator of text deltas (raises ``EngineBusy``)."""
    return engine.ask(prepared.conv, prepared.question, prepared.settings)


def complete(engine: Any, prepared: Prepared, deltas: Iterator[str]) -> ChatCompletion:
    """Read the whole answer (blocking) into one ``chat.completion``."""
    text = "".join(deltas)
    usage, finish, trace = _outcome(engine, prepared)
    return ChatCompletion(id=prepared.id, model=prepared.model, usage=usage, videollama_trace=trace,
                          choices=[Choice(message=AnswerMessage(content=text), finish_reason=finish)])


def chunks(engine: Any, prepared: Prepared, deltas: Iterator[str]) -> Iterator[ChatCompletionChunk]:
    """The answer as chunks: the role first, one per text delta, then the finish reason (with
    the trace if asked for), then the usage if asked for (as OpenAI: empty ``choices``)."""
    def chunk(delta: Delta, finish: str | None = None, **extra) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=prepared.id, model=prepared.model,
                                   choices=[ChunkChoice(delta=delta, finish_reason=finish)], **extra)

    yield chunk(Delta(role="assistant", content=""))
    for text in deltas:
        yield chunk(Delta(content=text))
    usage, finish, trace = _outcome(engine, prepared)
    yield chunk(Delta(), finish, videollama_trace=trace)
    if prepared.with_usage:
        yield ChatCompletionChunk(id=prepared.id, model=prepared.model, choices=[], usage=usage)


def _outcome(engine: Any, prepared: Prepared) -> tuple[Usage, str, dict | None]:
    """Usage, finish reason and (if asked for) the trace of the finished turn."""
    trace = engine.trace(prepared.conv)
    if trace is None:  # the turn did not run (cancelled while queued)
        return Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0), "stop", None
    prompt, new = trace.tokens.prompt, trace.tokens.new
    # "length" also when the context cut the answer short of max_tokens (OpenAI does the same).
    finish = "length" if new >= (trace.tokens.limit or prepared.settings.max_new_tokens) else "stop"
    usage = Usage(prompt_tokens=prompt, completion_tokens=new, total_tokens=prompt + new)
    return usage, finish, (trace.to_dict() if prepared.with_trace else None)
