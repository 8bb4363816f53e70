"""The chat engine: conversations about media, served to many callers at once.

One ``ChatEngine`` holds one or more loaded models and serves any number of conversations.
Requests go through a bounded queue to ``concurrency`` worker threads; each ``ask`` returns
an iterator of text deltas fed by the worker. Two caches keep follow-up turns cheap:

- frozen media features (``encode_frames`` / ``encode_clips`` outputs), keyed by the file's
  content hash, the load options and the fingerprint of the encoder weights, so another turn
  or another checkpoint with the same frozen encoders does not encode the file again;
- the KV cache of each conversation, so a follow-up turn runs the LLM only over new tokens.

Example:
    engine = ChatEngine({"toy": load_model("checkpoints/toy-world")})
    conv = engine.new_conversation()
    engine.attach_media(conv, "clip.mp4")
    for delta in engine.ask(conv, "What is moving?"):
        print(delta, end="", flush=True)
"""

from __future__ import annotations

import collections
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from model.chat.cache import FeatureCache, LRUCache
from model.chat.conversation import Attachment, Conversation, Turn
from model.chat.errors import BadRequest, ChatError, EngineBusy, WrongMediaKind
from model.chat.generate import GenerationSettings
from model.chat.prefix import PrefixStore
from model.chat.prompts import IMAGE_SLOT
from model.chat.trace import TurnTrace
from model.chat.turn import run_turn
from model.media import NO_SOUND_NOTE, LoadOptions, MediaError, check_path, load_media

__all__ = ["BadRequest", "ChatEngine", "ChatError", "Conversation", "EngineBusy", "GenerationSettings", "TurnTrace"]

MAX_QUESTION_CHARS = 20_000  # refuse pasted novels before tokenizing them
# Byte budgets of the media caches: an entry is a few MB (8 frames) to ~100 MB (32 frames at
# 224 px with float and uint8 copies), so the entry count alone does not bound memory.
MEDIA_CACHE_BYTES = 256 << 20
FEATURE_CACHE_BYTES = 128 << 20
KV_CONVERSATIONS = 8  # conversations whose KV cache is kept (each can be ~1 GB on a 7B model)
PREFIX_CACHES = 16  # KV caches of stateless requests kept for their follow-ups (same size caveat)


@dataclasses.dataclass(eq=False)
class _Request:
    conv: Conversation
    action: str  # "ask" or "regenerate"
    question: str | None
    settings: GenerationSettings
    answer_prefix: str = ""
    out: queue.Queue = dataclasses.field(default_factory=queue.Queue)
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    submitted: float = dataclasses.field(default_factory=time.perf_counter)

    def emit(self, delta: str) -> None:
        if delta:
            self.out.put(("delta", delta))


class ChatEngine:
    """Serve conversations about media over one or more models.

    Args:
        models: name -> loaded ``VideoLlama`` (with ``config``, ``tokenizer``, ``fingerprints``).
        concurrency: worker threads generating at the same time.
        queue_size: requests that may wait for a worker before ``EngineBusy`` is raised.
        media_cache_items: entries in each media cache (decoded files; frozen features).
        media_options: base ``LoadOptions``: its ``num_frames`` is the frame count when ``attach_media`` is
            given none; sizes and clip settings come from each model's config, audio use per attachment.
        prefix_cache_items: KV caches kept for stateless requests (``model/chat/stateless.py``),
            reused by the next request whose prompt starts the same way.
    """

    def __init__(self, models: dict[str, Any], *, concurrency: int = 1, queue_size: int = 16,
                 media_cache_items: int = 32, media_options: LoadOptions | None = None,
                 prefix_cache_items: int = PREFIX_CACHES):
        if not models:
            raise ValueError("ChatEngine needs at least one model")
        if concurrency < 1 or queue_size < 1:
            raise ValueError("concurrency and queue_size must be at least 1")
        for name, model in models.items():
            if getattr(model, "config", None) is None or getattr(model, "tokenizer", None) is None:
                raise ValueError(f"model {name!r} has no config or tokenizer; "
                                 "load it with model.weights.checkpoint.load_model")
        self.models = dict(models)
        self.model_names = list(self.models)
        self.media_options = media_options or LoadOptions()
        self.features = FeatureCache(media_cache_items, FEATURE_CACHE_BYTES)  # frozen encoder outputs
        self.loaded = LRUCache(media_cache_items, MEDIA_CACHE_BYTES)  # decoded media files
        self._kv_owners = LRUCache(KV_CONVERSATIONS)  # conversation id -> conversation holding a KV cache
        self.prefixes = PrefixStore(prefix_cache_items)  # KV caches of finished stateless requests
        self.cancelled_requests = 0  # requests stopped before their answer ended (cancel, disconnect)
        self._lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._workers = [threading.Thread(target=self._work, name=f"chat-worker-{i}", daemon=True)
                         for i in range(concurrency)]
        for worker in self._workers:
            worker.start()

    # -- conversations -------------------------------------------------------------
    def new_conversation(self, model: str | None = None, system: str | None = None) -> Conversation:
        """Start a conversation with ``model`` (default: the first loaded one).

        ``system`` replaces the system prompt that the template (or, with media, the original
        demo) would use; "" is an empty system prompt, None keeps the default. It stays with
        the conversation through ``clear``.
        """
        name = model or self.model_names[0]
        if name not in self.models:
            raise BadRequest(f"unknown model {name!r}; loaded models: {', '.join(self.model_names)}")
        return Conversation(model=name, system=_check_system(system))

    def attach_media(self, conv: Conversation, path: str | os.PathLike, *, kind: str | None = None,
                     use_audio: bool = True, num_frames: int | None = None,
                     window: tuple[float, float] | None = None) -> Any:
        """Load a media file and make it the subject of ``conv`` (before its first question).

        Args:
            kind: "video", "image" or "audio"; None guesses from the file.
            use_audio: give the model the video's sound (ignored for images).
            num_frames: frames sampled from a video; None: the engine's ``media_options.num_frames``
                (``LoadOptions``' default unless the engine was given other options).
            window: (start, end) seconds: frames only from this part of a video (a benchmark's
                question about one moment); None: the whole video.

        Returns:
            The ``MediaInput`` (frames, fbank, ``has_audio``, ``notes``, ...).
        """
        model = self.models[conv.model]
        path = os.fspath(path)
        try:
            check_path(path)  # says what the path is: missing, a folder, a named pipe, unreadable
        except MediaError as err:
            raise BadRequest(f"media {err}") from None
        if kind not in (None, "video", "image", "audio"):
            raise BadRequest(f"unknown media kind {kind!r}; use 'video', 'image' or 'audio'")
        num_frames = self.media_options.num_frames if num_frames is None else num_frames
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) \
                or not 1 <= num_frames <= model.config.max_frame_pos:  # rows of its frame position embedding
            raise BadRequest(f"num_frames must be between 1 and {model.config.max_frame_pos} for model "
                             f"{conv.model!r}, got {num_frames}")
        options = dataclasses.replace(self.media_options, num_frames=num_frames,
                                      use_audio=use_audio and model.config.use_audio,
                                      image_size=model.config.vision.image_size,
                                      num_clips=model.config.audio.num_clips,
                                      clip_duration=model.config.audio.clip_duration,
                                      num_mel_bins=model.config.audio.num_mel_bins,
                                      target_length=model.config.audio.target_length)
        if window is not None:
            options = dataclasses.replace(options, start=float(window[0]), end=float(window[1]))
            try:
                options.validate()
            except ValueError as err:
                raise BadRequest(f"window {tuple(window)}: {err}") from None
        stat = os.stat(path)
        load_key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size, _options_key(options, True))
        start = time.perf_counter()
        media = self.loaded.get(load_key)
        if media is None:
            media = load_media(path, options)  # raises MediaError with a message for the user
            self.loaded.put(load_key, media)
        attachment = self._attachment(model, path, media, kind or media.kind, options, use_audio)
        attachment.load_seconds = time.perf_counter() - start
        self.cancel(conv)
        with conv.lock:
            if conv.turns:
                raise BadRequest("this conversation already has questions; clear() it or start a new "
                                 "conversation to talk about another file")
            conv.media = attachment
            conv.reset_caches()
        return media

    def _attachment(self, model: Any, path: str, media: Any, kind: str, options: LoadOptions,
                    use_audio: bool) -> Attachment:
        # Asking for "audio" on a video means: listen to its sound only.
        if kind != media.kind and not (kind == "audio" and media.kind == "video"):
            raise WrongMediaKind(path, media.kind, kind)
        notes = list(media.notes)
        has_audio = media.has_audio and media.audio is not None
        if kind == "audio" and not model.config.use_audio:
            raise BadRequest(f"model {model.config.name!r} has no audio branch; attach a video or an image")
        if kind in ("video", "image") and not model.config.use_vision:
            raise BadRequest(f"model {model.config.name!r} has no vision branch; attach an audio file")
        sound = False
        if kind == "video" and use_audio:
            if not model.config.use_audio:
                notes.append("this model has no audio branch: the sound is not used")
            elif not has_audio:
                notes.append(NO_SOUND_NOTE)
            else:
                sound = True
        if kind == "audio":
            if not has_audio:
                raise BadRequest(f"no audio could be read from {path!r}")
            sound = True
        return Attachment(path=path, kind=kind, media=media, use_audio=sound,
                          options_key=_options_key(options, False), notes=_unique(notes))

    def generation_defaults(self, model: str | None = None) -> GenerationSettings:
        """The model folder's recommended settings (its ``generation_config.json``; the original
        demo's when it has none): what ``ask`` uses when no settings are given. A copy."""
        name = model or self.model_names[0]
        if name not in self.models:
            raise BadRequest(f"unknown model {name!r}; loaded models: {', '.join(self.model_names)}")
        defaults = getattr(self.models[name], "generation_defaults", None)
        return dataclasses.replace(defaults) if defaults is not None else GenerationSettings()

    def ask(self, conv: Conversation, question: str, settings: GenerationSettings | None = None, *,
            answer_prefix: str = "") -> Iterator[str]:
        """Ask a question; returns an iterator of text deltas. The answer is stored in ``conv``
        when the iterator ends. Bad input raises ``BadRequest`` here, before anything runs.

        ``answer_prefix``: text the answer starts with, written into the prompt after the
        assistant's role for the model to continue (a benchmark's "Best option:("); the deltas
        and the stored answer are what the model writes after it.
        """
        question = self._check_question(conv, question)
        settings = self._check_settings(settings or self.generation_defaults(conv.model))
        if not isinstance(answer_prefix, str) or len(answer_prefix) > MAX_QUESTION_CHARS:
            raise BadRequest(f"answer_prefix must be text of at most {MAX_QUESTION_CHARS} characters")
        return self._stream(_Request(conv, "ask", question, settings, answer_prefix))

    def regenerate(self, conv: Conversation, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Answer the last question again (replacing its answer)."""
        if not conv.turns:
            raise BadRequest("nothing to regenerate: the conversation has no question yet")
        settings = self._check_settings(settings or self.generation_defaults(conv.model))
        return self._stream(_Request(conv, "regenerate", None, settings))

    def undo(self, conv: Conversation) -> None:
        """Remove the last question and its answer (cancelling it if it is running)."""
        self.cancel(conv)
        with conv.lock:
            if conv.turns:
                conv.turns.pop()
                conv.first_turn = min(conv.first_turn, max(0, len(conv.turns) - 1))

    def clear(self, conv: Conversation) -> None:
        """Forget the media and every turn; the conversation keeps its model."""
        self.cancel(conv)
        with conv.lock:
            conv.turns.clear()
            conv.media = None
            conv.first_turn = 0
            conv.reset_caches()
            conv.last_trace = None

    def cancel(self, conv: Conversation) -> None:
        """Stop the running (and any queued) request of ``conv``; the stream ends within a token."""
        with self._lock:
            requests = list(conv.requests)
        for request in requests:
            request.cancel.set()

    def drop_kv_cache(self, conv: Conversation) -> None:
        """Forget the conversation's KV cache: the next turn recomputes the whole prompt."""
        with conv.lock:
            conv.kv = None

    def trace(self, conv: Conversation) -> TurnTrace | None:
        """What happened in the last turn: prompt, stage timings, shapes, token counts, notes
        (None before the first answer). Each turn writes a new ``TurnTrace``; treat it as read-only."""
        with conv.lock:
            return conv.last_trace

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop the workers after the queued requests and wait up to ``timeout`` seconds for them
        (the engine is unusable afterwards). Waiting matters at exit: a worker still inside torch
        while the interpreter shuts down aborts the process ("terminate called without an active
        exception", exit status 134)."""
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            if worker is not threading.current_thread():
                worker.join(timeout)

    # -- checks --------------------------------------------------------------------
    def _check_question(self, conv: Conversation, question: Any) -> str:
        if not isinstance(question, str) or not question.strip():
            raise BadRequest("the question is empty; type a question")
        question = question.strip()
        if IMAGE_SLOT in question:
            raise BadRequest(f"the question may not contain {IMAGE_SLOT!r} (it marks where media goes)")
        if len(question) > MAX_QUESTION_CHARS:
            raise BadRequest(f"the question is {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
        model = self.models[conv.model]
        budget = model.config.llm.max_context - _media_token_count(model, conv.media) - 1
        n = len(model.tokenizer(question, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        if n > budget:
            raise BadRequest(f"the question is {n} tokens but only {budget} fit in the model's context "
                             f"of {model.config.llm.max_context} tokens with the media; shorten it")
        return question

    @staticmethod
    def _check_settings(settings: GenerationSettings | None) -> GenerationSettings:
        settings = settings or GenerationSettings()
        try:
            settings.check()
        except ValueError as err:
            raise BadRequest(str(err)) from err
        return settings

    # -- queue and workers ------------------------------------------------------------
    def _stream(self, request: _Request) -> Iterator[str]:
        conv = request.conv
        with self._lock:  # not conv.lock: that one is held while an answer is generated
            conv.requests.append(request)
        try:
            self._jobs.put_nowait(request)
        except queue.Full:
            with self._lock:
                conv.requests.remove(request)
            raise EngineBusy(f"{self._jobs.maxsize} requests are already waiting; try again shortly") from None
        return self._drain(request)

    @staticmethod
    def _drain(request: _Request) -> Iterator[str]:
        try:
            while True:
                kind, value = request.out.get()
                if kind == "delta":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            request.cancel.set()  # the caller stopped reading: free the worker

    def _work(self) -> None:
        while True:
            request = self._jobs.get()
            if request is None:
                return
            conv = request.conv
            try:
                with conv.lock:
                    if not request.cancel.is_set():
                        self._serve(request)
                if request.cancel.is_set():
                    with self._lock:
                        self.cancelled_requests += 1
                request.out.put(("done", None))
            except Exception as err:  # reported to this request's caller only
                request.out.put(("error", err))
            finally:
                with self._lock:
                    if request in conv.requests:
                        conv.requests.remove(request)

    def _serve(self, request: _Request) -> None:
        conv = request.conv
        if request.action == "ask":
            conv.turns.append(Turn(request.question, answer_prefix=request.answer_prefix))
            previous = None
        else:
            if not conv.turns:
                raise BadRequest("nothing to regenerate: the conversation has no question yet")
            previous, conv.turns[-1].answer = conv.turns[-1].answer, None
        try:
            run_turn(self.models[conv.model], request, self.features, self.prefixes)
        except BaseException:
            conv.kv = None  # the cache may be half-updated
            if request.action == "ask":
                conv.turns.pop()
            else:
                conv.turns[-1].answer = previous
            raise
        if conv.stateless:
            if conv.kv is not None:
                self.prefixes.put(conv.model, conv.kv)
            conv.kv = None
        elif conv.kv is not None:
            evicted = self._keep_kv(conv)
            if evicted is not None and evicted is not conv:
                with evicted.lock:
                    evicted.kv = None

    def _keep_kv(self, conv: Conversation) -> Conversation | None:
        """Record that ``conv`` holds a KV cache; return a conversation whose cache must go."""
        with self._lock:
            oldest = None
            if conv.id not in self._kv_owners and len(self._kv_owners) >= KV_CONVERSATIONS:
                oldest = self._kv_owners.pop(self._kv_owners.oldest())
            self._kv_owners.put(conv.id, conv)
            return oldest

    @property
    def encoder_calls(self) -> collections.Counter:
        """Encoder runs per branch ("vision", "audio") since the engine started."""
        return self.features.encoder_calls


def _options_key(options: LoadOptions, with_audio: bool) -> tuple:
    """Load options that shape the tensors (limits and timeouts do not)."""
    skip = {"max_bytes", "max_duration_s", "max_pixels", "timeout_s"} | (set() if with_audio else {"use_audio"})
    return tuple((k, v) for k, v in dataclasses.asdict(options).items() if k not in skip)


def _check_system(system: Any) -> str | None:
    if system is None:
        return None
    if not isinstance(system, str):
        raise BadRequest(f"the system prompt must be text, not {type(system).__name__}")
    if IMAGE_SLOT in system:
        raise BadRequest(f"the system prompt may not contain {IMAGE_SLOT!r} (it marks where media goes)")
    if len(system) > MAX_QUESTION_CHARS:
        raise BadRequest(f"the system prompt is {len(system)} characters; the limit is {MAX_QUESTION_CHARS}")
    return system


def _media_token_count(model: Any, attachment: Attachment | None) -> int:
    if attachment is None:
        return 0
    _, slots = attachment.message_and_slots
    per_branch = {"video": model.config.video_qformer.num_queries, "audio": model.config.audio_qformer.num_queries}
    return sum(per_branch[s] for s in slots)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
