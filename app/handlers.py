"""Chat-tab handlers: plain functions over the chat engine, one `ChatSession` per browser tab.

Each handler takes the engine explicitly (ui.py binds it with functools.partial), the
tab's session, and the values of the page's controls, and returns or yields plain values.
The chat history shown in the page is rebuilt from the session's own list of turns, so
nothing depends on the format Gradio sends messages back in.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from model.chat.engine import GenerationSettings
from model.media import NO_SOUND_NOTE, MediaError

log = logging.getLogger(__name__)

MODE_AV = "Audio + vision"
MODE_VISION = "Vision only"
MODE_AUDIO = "Audio only"
MODES = (MODE_AV, MODE_VISION, MODE_AUDIO)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".m4a", ".flac", ".ogg", ".oga", ".opus", ".aac"}

# Sessions (tabs, API clients) of one engine that keep a conversation: each holds its decoded
# media (a few MB for 8 frames, ~25 MB for 32 at 224 px) for as long as Gradio keeps the tab's
# state (hours). The least recently used beyond this count lose theirs and are told so.
MAX_LIVE_SESSIONS = 64
EXPIRED = ("This conversation expired: the server keeps the {n} most recently used conversations "
           "and this one was the oldest. Load the file again to start a new conversation")

# The API's optional settings: GenerationSettings fields plus these media and conversation options.
MEDIA_SETTING_KEYS = ("mode", "num_frames", "model", "system")


@dataclass
class ChatSession:
    """Everything one browser tab (or one API client) owns. Never shared between tabs."""

    conv: Any = None  # the engine's Conversation
    model: str | None = None
    media_path: str | None = None
    media: Any = None  # the MediaInput the engine returned, for the under-the-hood tab
    mode: str = MODE_AV
    num_frames: int | None = None  # None: the engine's default (LoadOptions.num_frames)
    turns: list[list[str]] = field(default_factory=list)  # [question, answer] pairs
    mode_forced: bool = False  # the file allowed one mode only (the page greyed the choice)
    system: str | None = None  # the system prompt of new conversations (None: the model's default)
    expired: bool = False  # its conversation was dropped by LiveSessions (the page says so)

    def messages(self) -> list[dict[str, str]]:
        """The chat history in Gradio's messages format."""
        out = []
        for question, answer in self.turns:
            out.append({"role": "user", "content": question})
            out.append({"role": "assistant", "content": answer})
        return out


class LiveSessions:
    """The sessions holding a conversation on one engine, at most ``max_items``: the least
    recently used beyond that loses its conversation (media, KV cache) and is marked expired."""

    def __init__(self, max_items: int):
        if max_items < 1:
            raise ValueError(f"at least one live session is needed, got {max_items}")
        self.max_items = max_items
        self._sessions: OrderedDict[int, ChatSession] = OrderedDict()  # id(session) -> session
        self._lock = threading.Lock()

    def touch(self, engine, session: ChatSession) -> None:
        """``session`` holds a conversation and was just used; expire the oldest beyond the limit."""
        with self._lock:
            self._sessions[id(session)] = session
            self._sessions.move_to_end(id(session))
            dropped = [self._sessions.popitem(last=False)[1] for _ in range(len(self._sessions) - self.max_items)]
        for old in dropped:  # outside the lock: clear() waits for a running answer to stop
            if old.conv is not None:
                engine.clear(old.conv)
                old.conv, old.media, old.expired = None, None, True

    def discard(self, session: ChatSession) -> None:
        with self._lock:
            self._sessions.pop(id(session), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


_live: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> its LiveSessions
_live_lock = threading.Lock()


def live_sessions(engine) -> LiveSessions:
    """The ``LiveSessions`` of ``engine`` (made on first use; goes with the engine)."""
    with _live_lock:
        if engine not in _live:
            _live[engine] = LiveSessions(MAX_LIVE_SESSIONS)
        return _live[engine]


def no_conversation(engine, session: ChatSession) -> str:
    """Why ``session`` cannot take a question: it expired, or no file was loaded yet."""
    if session.expired:
        return EXPIRED.format(n=live_sessions(engine).max_items)
    return "Upload a video, an image or an audio file first (or pick an example)."


def error_text(err: Exception) -> str:
    """A message for the page. Media errors already read well; anything else is logged."""
    if isinstance(err, MediaError):
        return str(err)
    if isinstance(err, (ValueError, KeyError)):
        return str(err).strip("'\"")
    log.exception("unexpected error in a handler")
    return f"Something went wrong ({type(err).__name__}: {err}). The app is still running; try again."


def media_kind(path: str | Path) -> str:
    """'image', 'audio' or 'video' from the file name (the media loader checks the content)."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    return "video"


def close_session(engine, session: ChatSession | None) -> None:
    """Free a finished tab's conversation (Gradio calls this when the tab's state expires)."""
    if session is not None:
        live_sessions(engine).discard(session)
        if session.conv is not None:
            engine.clear(session.conv)


def state_closer(close: Callable[[Any, Any], None], engine) -> Callable[[Any], None]:
    """A ``gr.State`` delete callback calling ``close(engine, value)``, as a plain function.

    Gradio puts the callback into the page config, which it deep-copies on every ``/config``
    request. A ``functools.partial`` is copied with its arguments, so each request copied the
    engine and every model weight (3 s and a model's worth of memory per page load); a
    function is copied by reference.
    """
    def delete(value: Any) -> None:
        close(engine, value)
    return delete


# -- media ---------------------------------------------------------------------------


@dataclass
class MediaStatus:
    """What the page shows after a file is loaded: a note and how the mode choice looks."""

    note: str
    mode: str
    mode_enabled: bool
    mode_info: str
    kind: str | None = None


def _attach(engine, session: ChatSession) -> Any:
    """Start a fresh conversation on the session's media with its mode and frame count."""
    session.conv = engine.new_conversation(session.model, session.system)
    session.turns = []
    session.media = None
    session.expired = False
    use_audio = session.mode != MODE_VISION
    # The loader finds the kind from the content; only a video's soundtrack alone is asked for.
    kind = "audio" if session.mode == MODE_AUDIO and media_kind(session.media_path) == "video" else None
    session.media = engine.attach_media(session.conv, session.media_path, kind=kind,
                                        use_audio=use_audio, num_frames=session.num_frames)
    live_sessions(engine).touch(engine, session)
    return session.media


def describe_media(media: Any, extra_notes: list[str] | None = None) -> str:
    frames = 0 if media.frames_uint8 is None else len(media.frames_uint8)
    parts = [f"Loaded a {media.kind}"]
    if frames:
        parts.append(f"{frames} frame{'s' if frames != 1 else ''}")
    if media.has_audio:
        parts.append(f"{len(media.clip_starts)} audio clips")
    elif media.kind == "video":
        parts.append("no sound")
    text = ", ".join(parts) + "."
    notes = dict.fromkeys(str(n).strip().rstrip(".") for n in [*(media.notes or []), *(extra_notes or [])])
    notes.pop(NO_SOUND_NOTE, None)  # already said above
    return " ".join([text, *(n[:1].upper() + n[1:] + "." for n in notes if n)])


def load_media(engine, session: ChatSession | None, path: str | None, mode: str,
               num_frames: int | None, model: str | None = None) -> tuple[ChatSession, MediaStatus]:
    """Attach a newly uploaded or recorded file, starting a new conversation about it."""
    session = session or ChatSession()
    if model:
        session.model = model
    session.num_frames = _frames(num_frames)
    # A mode the last file forced is not the user's choice: a new file starts from the default.
    session.mode = MODE_AV if session.mode_forced or mode not in MODES else mode
    session.mode_forced = False
    if not path:
        return session, MediaStatus("Upload a video, an image or an audio file to start.",
                                    session.mode, True, "")
    session.media_path = str(path)
    kind = media_kind(path)
    if kind == "image":
        session.mode = MODE_VISION
    elif kind == "audio":
        session.mode = MODE_AUDIO
    try:
        media = _attach(engine, session)
    except Exception as err:  # noqa: BLE001 - every failure becomes a message in the page
        session.conv, session.media_path = None, None
        return session, MediaStatus(f"⚠️ {error_text(err)}", session.mode, True, "", None)
    return session, _status_for(session, media)


def _status_for(session: ChatSession, media: Any) -> MediaStatus:
    note = describe_media(media, getattr(getattr(session.conv, "media", None), "notes", None))
    kind = media_kind(session.media_path)
    if kind == "image":
        session.mode_forced = True
        return MediaStatus(note, MODE_VISION, False, "An image has no sound.", kind)
    if kind == "audio":
        session.mode_forced = True
        return MediaStatus(note, MODE_AUDIO, False, "An audio file has no pictures.", kind)
    if session.mode == MODE_AV and not media.has_audio:
        # The file has no sound: audio modes make no sense, so the choice greys out.
        session.mode, session.mode_forced = MODE_VISION, True
        return MediaStatus(note, MODE_VISION, False, "This video has no sound: audio is off.", kind)
    return MediaStatus(note, session.mode, True, "", kind)


def _frames(value: Any) -> int | None:
    """A frame count from a control or the API (None: the engine's default)."""
    return None if value is None else int(value)


def change_mode(engine, session: ChatSession | None, mode: str, num_frames: int | None) -> tuple[ChatSession, str]:
    """Re-read the current file with another mode or frame count (a new conversation)."""
    session = session or ChatSession()
    if session.media_path is None:
        session.mode, session.num_frames = mode, _frames(num_frames)
        return session, ""
    if mode == session.mode and _frames(num_frames) == session.num_frames:
        return session, ""
    status = load_media(engine, session, session.media_path, mode, num_frames)[1]
    return session, status.note + " New conversation."


def set_system(engine, session: ChatSession | None, text: str | None) -> tuple[ChatSession, str]:
    """Use ``text`` as the system prompt (blank: the model's default); a loaded file starts a
    new conversation with it."""
    session = session or ChatSession()
    system = text if text and text.strip() else None
    if system == session.system:
        return session, ""
    previous, session.system = session.system, system
    try:
        if session.media_path is None:
            engine.new_conversation(session.model, system)  # only checks the text
            return session, "System prompt set."
        _attach(engine, session)
    except Exception as err:  # noqa: BLE001
        session.system = previous
        return session, f"⚠️ {error_text(err)}"
    return session, "System prompt set. New conversation."


# -- asking --------------------------------------------------------------------------


def make_settings(temperature: float, top_p: float, max_new_tokens: int, num_beams: int,
                  **extra: Any) -> GenerationSettings:
    """Settings from the sidebar's sliders. Values are not coerced (a slider sends numbers; a
    hand-made request may send anything): the engine checks them and names a bad one."""
    return GenerationSettings(max_new_tokens=_whole(max_new_tokens), temperature=temperature,
                              top_p=top_p, num_beams=_whole(num_beams), **extra)


def _whole(value: Any) -> Any:
    """A slider's 300.0 as 300; anything else unchanged (2.5 stays 2.5 and is refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _stream(session: ChatSession, deltas: Iterator[str], engine) -> Iterator[ChatSession]:
    """Add each text delta to the last turn's answer; cancel the engine if we are stopped."""
    finished = False
    try:
        for delta in deltas:
            session.turns[-1][1] += delta
            yield session
        finished = True
    finally:
        if not finished:
            # Gradio closes the generator when the user presses Stop or leaves the page.
            engine.cancel(session.conv)


def ask(engine, session: ChatSession | None, question: str,
        settings: GenerationSettings) -> Iterator[tuple[ChatSession, str]]:
    """Stream the answer to `question`; yields (session, notice) after every delta."""
    session = session or ChatSession()
    question = (question or "").strip()
    if session.conv is None:
        yield session, f"⚠️ {no_conversation(engine, session)}."
        return
    if not question:
        yield session, "⚠️ Type a question first."
        return
    live_sessions(engine).touch(engine, session)
    session.turns.append([question, ""])
    yield session, ""
    try:
        yield from ((s, "") for s in _stream(session, engine.ask(session.conv, question, settings), engine))
    except Exception as err:  # noqa: BLE001
        session.turns.pop()
        yield session, f"⚠️ {error_text(err)}"


def regenerate(engine, session: ChatSession | None,
               settings: GenerationSettings) -> Iterator[tuple[ChatSession, str]]:
    session = session or ChatSession()
    if session.conv is None and session.expired:
        yield session, f"⚠️ {no_conversation(engine, session)}."
        return
    if session.conv is None or not session.turns:
        yield session, "⚠️ There is no answer to regenerate yet."
        return
    live_sessions(engine).touch(engine, session)
    previous = session.turns[-1][1]
    session.turns[-1][1] = ""
    yield session, ""
    try:
        yield from ((s, "") for s in _stream(session, engine.regenerate(session.conv, settings), engine))
    except Exception as err:  # noqa: BLE001
        session.turns[-1][1] = previous
        yield session, f"⚠️ {error_text(err)}"


def stop(engine, session: ChatSession | None) -> str:
    if session is not None and session.conv is not None:
        engine.cancel(session.conv)
    return "Stopped."


def undo(engine, session: ChatSession | None) -> tuple[ChatSession, str]:
    session = session or ChatSession()
    if session.conv is None or not session.turns:
        return session, "Nothing to undo."
    engine.undo(session.conv)
    session.turns.pop()
    return session, "Removed the last question and answer."


def clear(engine, session: ChatSession | None) -> tuple[ChatSession, str]:
    """Forget the chat but keep the file: the next question starts a new conversation on it."""
    session = session or ChatSession()
    if session.conv is not None:
        engine.clear(session.conv)
    if session.media_path is None:
        return ChatSession(model=session.model), "Cleared."
    try:
        _attach(engine, session)
    except Exception as err:  # noqa: BLE001
        return ChatSession(model=session.model), f"⚠️ {error_text(err)}"
    return session, "Cleared. The file is still loaded."


# -- the scriptable endpoint ---------------------------------------------------------


def parse_api_settings(raw: Any) -> tuple[GenerationSettings, dict[str, Any]]:
    """Split the API's optional settings (a dict or JSON text) into generation and media parts."""
    if raw in (None, "", {}):
        return GenerationSettings(), {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"settings is not valid JSON ({err.msg}); send an object such as "
                             '{"temperature": 0.7}') from err
    if not isinstance(raw, dict):
        raise ValueError('settings must be a JSON object such as {"temperature": 0.7}')
    gen_keys = {f.name for f in fields(GenerationSettings)}
    unknown = set(raw) - gen_keys - set(MEDIA_SETTING_KEYS)
    if unknown:
        known = ", ".join(sorted(gen_keys | set(MEDIA_SETTING_KEYS)))
        raise ValueError(f"unknown settings {sorted(unknown)}; known settings: {known}")
    gen = GenerationSettings(**{k: v for k, v in raw.items() if k in gen_keys})
    gen.check()  # types and ranges, each message naming the setting
    media = {k: v for k, v in raw.items() if k in MEDIA_SETTING_KEYS}
    for key, value in media.items():
        is_type, kind = MEDIA_SETTING_TYPES[key]
        if not is_type(value):
            raise ValueError(f"setting {key} must be {kind}, got {value!r:.60}")
    return gen, media


# API media settings -> (type test, type in words); ranges are the engine's (it knows the model).
MEDIA_SETTING_TYPES = {
    "mode": (lambda v: isinstance(v, str), f"one of {', '.join(MODES)}"),
    "num_frames": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "model": (lambda v: v is None or isinstance(v, str), "a model name"),
    "system": (lambda v: v is None or isinstance(v, str), "text"),
}


def api_chat(engine, session: ChatSession | None, media_path: str | None, question: str,
             settings: Any = None) -> Iterator[tuple[ChatSession, str]]:
    """The `chat` API: a media file and a question in, the growing answer out.

    Sending a file starts a new conversation about it; sending no file asks a follow-up
    in the same client's conversation. Errors raise ValueError with a readable message.
    """
    session = session or ChatSession()
    gen, media_opts = parse_api_settings(settings)
    if media_opts.get("model") is not None and media_opts["model"] not in engine.model_names:
        raise ValueError(f"unknown model {media_opts['model']!r}; models: {', '.join(engine.model_names)}")
    if "system" in media_opts and not media_path:
        raise ValueError("the system setting starts a new conversation: send it with a media file")
    if media_path:
        session.system = media_opts.get("system")
        mode = media_opts.get("mode", MODE_AV)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
        session, status = load_media(engine, session, media_path, mode,
                                     media_opts.get("num_frames", session.num_frames),
                                     media_opts.get("model"))
        if session.conv is None:
            raise ValueError(status.note.removeprefix("⚠️ "))
    elif session.conv is None and session.expired:
        raise ValueError(no_conversation(engine, session) + " (send the media file with the question)")
    elif session.conv is None:
        raise ValueError("send a media file (video, image or audio) with the first question")
    answer = ""
    for current, notice in ask(engine, session, question, gen):
        if notice:
            raise ValueError(notice.removeprefix("⚠️ "))
        answer = current.turns[-1][1] if current.turns else ""
        yield current, answer
