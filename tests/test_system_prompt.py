"""A conversation's own system prompt: the original demo's conversations, the engine, the
`chat` command, the batch file and the app's handlers."""

from __future__ import annotations

import json
import sys

import pytest

import launch
from app import handlers
from app.handlers import MODE_AV, MODE_VISION
from model.chat.conversation import Attachment, Conversation, Turn, render_prompt
from model.chat.engine import BadRequest, ChatEngine, GenerationSettings
from model.chat.prompts import IMAGE_SYSTEM, LLAMA_2, VICUNA_V0
from tests.app_helpers import CLIP, IMAGE, tiny_engine
from tests.test_chat_cli import TINY  # the tiny preset's arguments (random weights, short greedy answers)
from tests.tiny import tiny_model

GREEDY = GenerationSettings(max_new_tokens=4, do_sample=False)
FRAMES_MSG = "The video contains 8 frames sampled at 0.0, 1.2, 2.5, 3.8, 5.0, 6.2, 7.5, 8.8 seconds. "


class _Media:  # what the conversation reads from a MediaInput
    frame_message = FRAMES_MSG


def _video_conv(system: str | None, question: str = "What is the dog doing?") -> Conversation:
    conv = Conversation(model="m", system=system, turns=[Turn(question)])
    conv.media = Attachment(path="x", kind="video", media=_Media(), use_audio=False, options_key=())
    return conv


# The two conversations of the original demo that carry a system sentence: `demo_video.py`
# sets the image sentence for a video too (written out from the reference's template rules).
def test_demo_video_conversation_with_the_image_sentence_vicuna():
    prompt, _ = render_prompt(_video_conv(IMAGE_SYSTEM), VICUNA_V0, None, 0)
    assert prompt == (IMAGE_SYSTEM + "###Human: <Video><ImageHere></Video> " + FRAMES_MSG
                      + " What is the dog doing?###Assistant:")
    default, _ = render_prompt(_video_conv(None), VICUNA_V0, None, 0)
    assert default.startswith("###Human:")  # demo_audiovideo.py's empty system prompt stays the default


def test_demo_video_conversation_with_the_image_sentence_llama2():
    prompt, _ = render_prompt(_video_conv(IMAGE_SYSTEM), LLAMA_2, None, 0)
    assert prompt == (f"[INST] <<SYS>>\n{IMAGE_SYSTEM}\n<</SYS>>\n\n<Video><ImageHere></Video> " + FRAMES_MSG
                      + " What is the dog doing? [/INST]")


def test_an_empty_system_prompt_replaces_the_template_default():
    conv = Conversation(model="m", system="", turns=[Turn("Hi")])
    assert render_prompt(conv, LLAMA_2, None, 0)[0] == "[INST] <<SYS>>\n\n<</SYS>>\n\nHi [/INST]"


@pytest.fixture(scope="module")
def engine():
    engine = ChatEngine({"m": tiny_model()})
    yield engine
    engine.close()


def test_engine_conversation_keeps_its_system_prompt(engine):
    conv = engine.new_conversation(system="Be brief.")
    engine.attach_media(conv, IMAGE)
    list(engine.ask(conv, "Colour?", GREEDY))
    prompt = engine.trace(conv).prompt
    assert prompt == "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<Image><ImageHere></Image>  Colour? [/INST]"
    engine.clear(conv)
    assert conv.system == "Be brief."
    plain = engine.new_conversation()
    engine.attach_media(plain, IMAGE)
    list(engine.ask(plain, "Colour?", GREEDY))
    assert "Be brief." not in engine.trace(plain).prompt


@pytest.mark.parametrize("bad, words", [(3, "must be text"), ("a <ImageHere> b", "may not contain"),
                                        ("x" * 20_001, "limit")])
def test_engine_refuses_bad_system_prompts(engine, bad, words):
    with pytest.raises(BadRequest, match=words):
        engine.new_conversation(system=bad)


def test_chat_command_system_flag(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("hello\n/trace\n/quit\n"))
    argv = ["chat", "--image", str(IMAGE), "--system", "Answer in French.", *TINY]
    assert launch.main(argv) == 0
    assert "<<SYS>>\\nAnswer in French.\\n<</SYS>>" in capsys.readouterr().err  # /trace shows the prompt


def test_batch_line_system_prompt(tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"image": str(IMAGE), "question": "Colour?", "system": 5}) + "\n")
    out = tmp_path / "a.jsonl"
    assert launch.main(["batch", "--input", str(questions), "--output", str(out), *TINY]) == 1
    assert "system prompt must be text" in json.loads(out.read_text())["error"]


@pytest.fixture(scope="module")
def app_engine():
    return tiny_engine()


def test_app_system_field_starts_a_new_conversation_with_it(app_engine):
    session, _ = handlers.set_system(app_engine, None, "Name the colour.")
    assert session.system == "Name the colour." and session.conv is None
    session, _ = handlers.load_media(app_engine, session, str(CLIP), MODE_AV, 4)
    assert session.conv.system == "Name the colour."
    session, note = handlers.set_system(app_engine, session, "   ")  # blank: back to the default
    assert session.system is None and session.conv.system is None and "New conversation" in note
    session, note = handlers.set_system(app_engine, session, "<ImageHere>")
    assert note.startswith("⚠️") and session.system is None


def test_app_api_takes_a_system_setting_with_a_file(app_engine):
    settings = {"system": "Answer yes or no.", "max_new_tokens": 2, "do_sample": False, "mode": MODE_VISION}
    session = [s for s, _ in handlers.api_chat(app_engine, None, str(CLIP), "Red?", settings)][-1]
    assert session.conv.system == "Answer yes or no."
    with pytest.raises(ValueError, match="media file"):
        list(handlers.api_chat(app_engine, session, None, "And?", {"system": "x"}))
