"""The chat engine's interface over a running API server (`python launch.py --api-url URL`).

``RemoteEngine`` offers what the app's handlers use of ``ChatEngine`` (``model_names``,
``new_conversation``, ``attach_media``, ``ask``, ``regenerate``, ``undo``, ``clear``,
``cancel``, ``trace``), so Chat, Compare and Under the hood work unchanged while the models
run elsewhere (``launch.py serve``, one process or Ray Serve replicas). Plain HTTP (httpx) in
the OpenAI chat-completions format: each question sends the whole conversation, media as a
``data:`` URL, and the server's prefix cache makes the resent part cheap. The trace comes
back in the last chunk (``videollama_trace``).

The file is also decoded here, once per attachment, for what the page shows of it (frames,
waveform, spectrogram, early errors); the model's input is decoded on the server.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import mimetypes
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx

from model.chat.errors import BadRequest, ChatError, EngineBusy
from model.chat.generate import GenerationSettings, settings_from_dict
from model.chat.trace import MediaInfo, Shapes, Timings, TokenCounts, TurnTrace
from model.media import LoadOptions, load_media

# The part type the server expects for each kind of file.
PART_TYPES = {"video": "video_url", "image": "image_url", "audio": "audio_url"}


@dataclass
class RemoteAttachment:
    path: str
    kind: str  # "video", "image" or "audio"
    use_audio: bool
    num_frames: int | None
    notes: list[str] = field(default_factory=list)


@dataclass
class RemoteTurn:
    question: str
    answer: str | None = None


@dataclass(eq=False)
class RemoteConversation:
    """What the app holds per conversation; the server keeps nothing between requests."""

    model: str
    system: str | None = None
    media: RemoteAttachment | None = None
    turns: list[RemoteTurn] = field(default_factory=list)
    last_trace: TurnTrace | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    response: httpx.Response | None = None  # the answer being streamed


class RemoteEngine:
    """A ``ChatEngine`` look-alike whose answers come from the server at ``base_url`` (…/v1)."""

    def __init__(self, base_url: str, timeout: float = 600.0):
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0))
        try:
            listing = self._http.get(f"{self.base_url}/models")
        except httpx.HTTPError as err:
            raise ConnectionError(f"no API server answers at {self.base_url} ({err}); start one with "
                                  "`python launch.py serve` or check --api-url") from None
        if listing.status_code != 200:
            raise ConnectionError(f"{self.base_url}/models answered HTTP {listing.status_code}: {listing.text[:200]}")
        cards = listing.json()["data"]
        self.model_names = [card["id"] for card in cards]
        self.max_frames = min(int(card.get("max_frames", 32)) for card in cards)
        # Each model's recommended settings as its card publishes them; a server that does not
        # (an older one) leaves the original demo's.
        self._defaults = {card["id"]: settings_from_dict(card.get("generation_defaults") or {},
                                                         f"{self.base_url}/models ({card['id']})")
                          for card in cards}

    # -- conversations ----------------------------------------------------------------
    def generation_defaults(self, model: str | None = None) -> GenerationSettings:
        """The settings the page starts from and ``ask`` sends when given none: the model's card
        on the server (its folder's generation_config.json), as ``ChatEngine`` reads the folder. A copy."""
        name = model or self.model_names[0]
        if name not in self._defaults:
            raise BadRequest(f"unknown model {name!r}; the server has: {', '.join(self.model_names)}")
        return dataclasses.replace(self._defaults[name])

    def new_conversation(self, model: str | None = None, system: str | None = None) -> RemoteConversation:
        name = model or self.model_names[0]
        if name not in self.model_names:
            raise BadRequest(f"unknown model {name!r}; the server has: {', '.join(self.model_names)}")
        if system is not None and not isinstance(system, str):
            raise BadRequest(f"the system prompt must be text, not {type(system).__name__}")
        return RemoteConversation(model=name, system=system)

    def attach_media(self, conv: RemoteConversation, path: str | Path, *, kind: str | None = None,
                     use_audio: bool = True, num_frames: int | None = None) -> Any:
        """Decode the file here for the page (raises ``MediaError``) and make it the conversation's."""
        path = str(path)
        if not Path(path).is_file():
            raise BadRequest(f"media file not found: {path!r}; check the path")
        options = LoadOptions(use_audio=use_audio) if num_frames is None else \
            LoadOptions(num_frames=num_frames, use_audio=use_audio)
        media = load_media(path, options)
        self.cancel(conv)
        conv.media = RemoteAttachment(path=path, kind=kind or media.kind, use_audio=use_audio,
                                      num_frames=num_frames, notes=list(media.notes))
        conv.turns.clear()
        conv.last_trace = None
        return media

    def ask(self, conv: RemoteConversation, question: str, settings: GenerationSettings | None = None) -> Iterator[str]:
        if not isinstance(question, str) or not question.strip():
            raise BadRequest("the question is empty; type a question")
        conv.turns.append(RemoteTurn(question.strip()))
        return self._answer(conv, settings or self.generation_defaults(conv.model), previous=None, new_turn=True)

    def regenerate(self, conv: RemoteConversation, settings: GenerationSettings | None = None) -> Iterator[str]:
        if not conv.turns:
            raise BadRequest("nothing to regenerate: the conversation has no question yet")
        previous, conv.turns[-1].answer = conv.turns[-1].answer, None
        return self._answer(conv, settings or self.generation_defaults(conv.model), previous=previous, new_turn=False)

    def undo(self, conv: RemoteConversation) -> None:
        self.cancel(conv)
        if conv.turns:
            conv.turns.pop()

    def clear(self, conv: RemoteConversation) -> None:
        self.cancel(conv)
        conv.turns.clear()
        conv.media = None
        conv.last_trace = None

    def cancel(self, conv: RemoteConversation) -> None:
        """Stop the answer being streamed: closing the connection makes the server cancel it."""
        conv.cancel_event.set()
        response = conv.response
        if response is not None:
            response.close()

    def trace(self, conv: RemoteConversation) -> TurnTrace | None:
        return conv.last_trace

    def close(self, timeout: float | None = None) -> None:
        self._http.close()

    # -- one request ----------------------------------------------------------------------
    def _answer(self, conv: RemoteConversation, settings: GenerationSettings, *, previous: str | None,
                new_turn: bool) -> Iterator[str]:
        self.cancel(conv)  # one answer at a time per conversation, as the engine
        conv.cancel_event = threading.Event()
        body = request_body(conv, settings)
        text = ""
        try:
            with self._http.stream("POST", f"{self.base_url}/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise server_error(response.status_code, response.read())
                conv.response = response
                for chunk in sse_chunks(response, conv.cancel_event):
                    if chunk.get("videollama_trace"):
                        conv.last_trace = trace_from_dict(chunk["videollama_trace"])
                    for choice in chunk.get("choices", []):
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            text += delta
                            yield delta
        except BaseException:
            if not conv.cancel_event.is_set():  # failed (not stopped): undo as the engine does
                if new_turn:
                    conv.turns.pop()
                else:
                    conv.turns[-1].answer = previous
                raise
            # Stopped (cancel closed the connection under us): the answer so far stands.
        finally:
            conv.response = None
        if conv.turns:
            conv.turns[-1].answer = text.strip()


def request_body(conv: RemoteConversation, settings: GenerationSettings) -> dict[str, Any]:
    """The chat-completions request for the whole conversation, the last question pending."""
    messages: list[dict[str, Any]] = []
    if conv.system is not None:
        messages.append({"role": "system", "content": conv.system})
    for i, turn in enumerate(conv.turns):
        content: Any = turn.question
        if i == 0 and conv.media is not None:
            content = [media_part(conv.media), {"type": "text", "text": turn.question}]
        messages.append({"role": "user", "content": content})
        if turn.answer is not None and i < len(conv.turns) - 1:
            messages.append({"role": "assistant", "content": turn.answer})
    body: dict[str, Any] = {"model": conv.model, "messages": messages, "stream": True, "videollama_trace": True,
                            "max_tokens": settings.max_new_tokens, "top_p": settings.top_p,
                            "temperature": 0.0 if settings.greedy else settings.temperature,
                            "top_k": settings.top_k, "repetition_penalty": settings.repetition_penalty,
                            "num_beams": settings.num_beams}
    if settings.seed is not None:
        body["seed"] = settings.seed
    if settings.stop:
        body["stop"] = list(settings.stop)
    if conv.media is not None:
        body["use_audio"] = conv.media.use_audio
        if conv.media.num_frames is not None:
            body["num_frames"] = conv.media.num_frames
    return body


def media_part(media: RemoteAttachment) -> dict[str, Any]:
    mime = mimetypes.guess_type(media.path)[0] or "application/octet-stream"
    url = f"data:{mime};base64,{base64.b64encode(Path(media.path).read_bytes()).decode()}"
    part_type = PART_TYPES[media.kind]
    return {"type": part_type, part_type: {"url": url}}


def sse_chunks(response: httpx.Response, cancel: threading.Event) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream, up to ``[DONE]``; an error object ends it."""
    for line in response.iter_lines():
        if cancel.is_set():
            return
        if not line.startswith("data:"):
            continue
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if "error" in chunk:
            raise ChatError(chunk["error"].get("message", "the server failed to answer"))
        yield chunk


def server_error(status: int, body: bytes) -> ChatError:
    """The engine error matching an HTTP error from the server, with the server's message."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace")[:300] or f"HTTP {status}"
    if status == 429:
        return EngineBusy(message)
    if status in (400, 404, 413):
        return BadRequest(message)
    return ChatError(f"the API server answered HTTP {status}: {message}")


def trace_from_dict(data: dict[str, Any]) -> TurnTrace:
    """A ``TurnTrace`` from its JSON form (fields the server has and this app lacks are skipped)."""
    def build(cls, values: dict | None):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names})

    settings = dict(data.get("settings") or {})
    if "stop" in settings:
        settings["stop"] = tuple(settings["stop"])
    return TurnTrace(model=data.get("model", ""), template=data.get("template", ""),
                     settings=build(GenerationSettings, settings), timings=build(Timings, data.get("timings")),
                     shapes=build(Shapes, data.get("shapes")), tokens=build(TokenCounts, data.get("tokens")),
                     notes=list(data.get("notes") or []),
                     media=build(MediaInfo, data["media"]) if data.get("media") else None,
                     prompt=data.get("prompt", ""), tokens_per_second=data.get("tokens_per_second", 0.0))
