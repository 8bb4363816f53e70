"""The app keeps at most MAX_LIVE_SESSIONS conversations per engine; the least recently used
beyond that loses its media and KV cache, and its next question says it expired."""

from __future__ import annotations

import pytest

from app import handlers
from app.handlers import MODE_AV
from tests.app_helpers import CLIP, IMAGE, SOUND, tiny_engine

GREEDY = handlers.make_settings(1.0, 0.9, 4, 1, do_sample=False)


@pytest.fixture
def engine(monkeypatch):
    monkeypatch.setattr(handlers, "MAX_LIVE_SESSIONS", 2)
    engine = tiny_engine()  # a fresh engine: its LiveSessions is made with the limit above
    yield engine
    engine.close()


def _load(engine, path):
    session, status = handlers.load_media(engine, None, str(path), MODE_AV, 2)
    assert session.conv is not None, status.note
    return session


def _notice(engine, session, question="What is it?"):
    return list(handlers.ask(engine, session, question, GREEDY))[-1][1]


def test_the_least_recently_used_session_expires_with_a_clear_message(engine):
    first, second = _load(engine, CLIP), _load(engine, IMAGE)
    assert _notice(engine, first) == ""  # first is now more recent than second
    conv = second.conv
    third = _load(engine, SOUND)
    assert len(handlers.live_sessions(engine)) == 2
    assert second.expired and second.conv is None and second.media is None
    assert conv.media is None and conv.kv is None  # the engine's side was freed too
    assert first.conv is not None and third.conv is not None and not first.expired
    notice = _notice(engine, second)
    assert "expired" in notice and "2 most recently used" in notice and "Load the file again" in notice
    assert "expired" in list(handlers.regenerate(engine, second, GREEDY))[-1][1]
    with pytest.raises(ValueError, match="expired"):
        list(handlers.api_chat(engine, second, None, "And now?"))
    assert _notice(engine, first, "And the colour?") == ""  # the others still answer
    assert _notice(engine, third) == ""


def test_loading_again_revives_an_expired_session(engine):
    old = _load(engine, CLIP)
    _load(engine, IMAGE), _load(engine, SOUND)
    assert old.expired
    session, status = handlers.load_media(engine, old, str(CLIP), MODE_AV, 2)
    assert session.conv is not None and not session.expired, status.note
    assert _notice(engine, session) == ""


def test_a_closed_tab_leaves_the_live_set(engine):
    first, second = _load(engine, CLIP), _load(engine, IMAGE)
    handlers.close_session(engine, first)
    assert len(handlers.live_sessions(engine)) == 1
    _load(engine, SOUND)
    assert not second.expired and second.conv is not None  # the closed tab made room
