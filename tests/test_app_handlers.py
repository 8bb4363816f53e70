"""Chat-tab handlers called as plain functions on the real engine with tiny models."""

from __future__ import annotations

import time

import pytest

from app import handlers
from app.handlers import MODE_AUDIO, MODE_AV, MODE_VISION
from tests.app_helpers import CLIP, IMAGE, SILENT_CLIP, SOUND, tiny_engine

GREEDY = handlers.make_settings(1.0, 0.9, 16, 1, do_sample=False)


@pytest.fixture(scope="module")
def engine():
    return tiny_engine()


def _answer(engine, session, question, settings=GREEDY):
    steps = list(handlers.ask(engine, session, question, settings))
    return steps, steps[-1][0]


def test_video_with_sound_keeps_every_mode(engine):
    session, status = handlers.load_media(engine, None, str(CLIP), MODE_AV, 4)
    assert status.mode == MODE_AV and status.mode_enabled
    assert session.media.has_audio and len(session.media.frames_uint8) == 4
    assert "4 frames" in status.note and "audio clips" in status.note


@pytest.mark.parametrize("path, mode, info", [
    (SILENT_CLIP, MODE_VISION, "no sound"),
    (IMAGE, MODE_VISION, "image"),
    (SOUND, MODE_AUDIO, "no pictures"),
])
def test_mode_is_fixed_and_greyed_when_the_file_allows_one(engine, path, mode, info):
    session, status = handlers.load_media(engine, None, str(path), MODE_AV, 4)
    assert session.conv is not None
    assert (status.mode, status.mode_enabled) == (mode, False)
    assert info in status.mode_info


def test_ask_streams_into_the_last_turn_and_matches_the_engine(engine):
    session, _ = handlers.load_media(engine, None, str(CLIP), MODE_AV, 4)
    steps, session = _answer(engine, session, "  What colour?  ")
    assert len(steps) > 2 and all(notice == "" for _, notice in steps)
    assert session.turns[-1][0] == "What colour?"
    assert session.turns[-1][1].strip() == session.conv.turns[-1].answer
    messages = session.messages()
    assert [m["role"] for m in messages] == ["user", "assistant"]


def test_bad_requests_become_notices(engine, tmp_path):
    steps, _ = _answer(engine, None, "Hello?")
    assert "Upload" in steps[-1][1]
    session, _ = handlers.load_media(engine, None, str(CLIP), MODE_AV, 4)
    steps, _ = _answer(engine, session, "   ")
    assert "Type a question" in steps[-1][1]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)  # a truncated mp4 header
    session, status = handlers.load_media(engine, session, str(broken), MODE_AV, 4)
    assert status.note.startswith("⚠️") and session.conv is None
    session, status = handlers.load_media(engine, session, str(CLIP), MODE_AV, 4)  # still works
    assert session.conv is not None and not status.note.startswith("⚠️")


def test_undo_regenerate_and_clear(engine):
    session, _ = handlers.load_media(engine, None, str(CLIP), MODE_AV, 4)
    _, session = _answer(engine, session, "First?")
    first = session.turns[-1][1]
    _, session = _answer(engine, session, "Second?")
    assert len(session.turns) == len(session.conv.turns) == 2
    steps = list(handlers.regenerate(engine, session, GREEDY))
    assert steps[-1][1] == "" and session.turns[-1][1].strip() == session.conv.turns[-1].answer
    session, note = handlers.undo(engine, session)
    assert len(session.turns) == len(session.conv.turns) == 1 and session.turns[0][1] == first
    session, note = handlers.clear(engine, session)
    assert session.turns == [] and session.conv.turns == [] and session.conv.media is not None
    assert "still loaded" in note


def test_change_mode_rereads_the_file(engine):
    session, _ = handlers.load_media(engine, None, str(CLIP), MODE_AV, 4)
    _, session = _answer(engine, session, "Anything?")
    session, note = handlers.change_mode(engine, session, MODE_VISION, 6)
    assert "New conversation" in note and session.turns == []
    assert len(session.media.frames_uint8) == 6 and not session.conv.media.use_audio
    session, note = handlers.change_mode(engine, session, MODE_AUDIO, 6)
    assert session.conv.media.kind == "audio" and session.conv.media.use_audio


def test_closing_the_stream_cancels_the_engine(engine):
    session, _ = handlers.load_media(engine, None, str(CLIP), MODE_AV, 4)
    long = handlers.make_settings(1.0, 0.9, 400, 1, do_sample=False)
    stream = handlers.ask(engine, session, "Tell me everything.", long)
    for _ in range(3):
        next(stream)
    stream.close()  # what Gradio does when the user presses Stop
    deadline = time.time() + 10
    while (engine.trace(session.conv) is None or "stopped before the end" not in engine.trace(session.conv).notes) \
            and time.time() < deadline:
        time.sleep(0.05)
    assert "stopped before the end" in engine.trace(session.conv).notes
    assert engine.trace(session.conv).tokens.new < 400


def test_api_settings_are_checked():
    gen, media = handlers.parse_api_settings('{"temperature": 0.5, "num_frames": 3}')
    assert gen.temperature == 0.5 and media == {"num_frames": 3}
    with pytest.raises(ValueError, match="unknown settings"):
        handlers.parse_api_settings({"temprature": 0.5})
    with pytest.raises(ValueError, match="JSON object"):
        handlers.parse_api_settings("[1, 2]")


def test_a_forced_mode_does_not_stick_to_the_next_file(engine):
    session, status = handlers.load_media(engine, None, str(SILENT_CLIP), MODE_AV, 4)
    assert status.mode == MODE_VISION and not status.mode_enabled
    # The page sends back the greyed value with the next upload.
    session, status = handlers.load_media(engine, session, str(CLIP), status.mode, 4)
    assert status.mode == MODE_AV and status.mode_enabled and session.conv.media.use_audio
    # A mode the user picked is kept.
    session, status = handlers.load_media(engine, session, str(CLIP), MODE_VISION, 4)
    assert status.mode == MODE_VISION and status.mode_enabled and not session.conv.media.use_audio
