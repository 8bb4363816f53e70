"""Generation and API settings are checked by type and range; each refusal names the setting."""

from __future__ import annotations

import dataclasses

import pytest

from app import handlers
from model.chat.engine import BadRequest, ChatEngine
from model.chat.generate import SETTING_RULES, GenerationSettings
from tests import tiny

BAD = [
    ("temperature", "abc", "temperature must be a number"),
    ("temperature", None, "temperature must be a number"),
    ("temperature", "hot", "temperature must be a number"),
    ("temperature", float("inf"), "temperature must be a number"),
    ("temperature", -1, "temperature=-1 must be between 0 and 100"),
    ("max_new_tokens", 2.5, "max_new_tokens must be a whole number"),
    ("max_new_tokens", "100", "max_new_tokens must be a whole number"),
    ("max_new_tokens", True, "max_new_tokens must be a whole number"),
    ("max_new_tokens", 0, "max_new_tokens=0 must be between 1"),
    ("num_beams", 2.5, "num_beams must be a whole number"),
    ("num_beams", 99, "num_beams=99 must be between 1 and 16"),
    ("top_p", 0, "top_p=0 must be in"),
    ("top_p", [0.5], "top_p must be a number"),
    ("top_k", -1, "top_k=-1 must be 0"),
    ("repetition_penalty", 0, "repetition_penalty=0 must be above 0"),
    ("seed", 2 ** 70, "seed=1.18e\\+21 must be between 0 and 2\\*\\*63 - 1"),
    ("seed", -5, "seed=-5 must be between 0"),
    ("seed", "7", "seed must be a whole number or null"),
    ("do_sample", "no", "do_sample must be true or false"),
    ("do_sample", 0, "do_sample must be true or false"),
    ("stop", "###", "stop must be a list of strings"),
]


def test_every_setting_has_a_rule():
    assert set(SETTING_RULES) == {f.name for f in dataclasses.fields(GenerationSettings)}
    assert set(handlers.MEDIA_SETTING_TYPES) == set(handlers.MEDIA_SETTING_KEYS)
    GenerationSettings().check()
    GenerationSettings(temperature=0, top_p=1, seed=(1 << 63) - 1, do_sample=False, stop=["###"]).check()


@pytest.mark.parametrize("name,value,message", BAD)
def test_bad_setting_is_named(name, value, message):
    with pytest.raises(ValueError, match=f"generation setting {message}"):
        GenerationSettings(**{name: value}).check()
    with pytest.raises(ValueError, match=message):
        handlers.parse_api_settings({name: value})


@pytest.mark.parametrize("raw,message", [
    ({"num_frames": "abc"}, "setting num_frames must be a whole number"),
    ({"num_frames": 2.5}, "setting num_frames must be a whole number"),
    ({"mode": 3}, "setting mode must be one of"),
    ({"model": ["a"]}, "setting model must be a model name"),
    ('{"temperature": "hot"}', "temperature must be a number"),
    ('{"seed": 1180591620717411303424}', "seed=1.18e\\+21"),
])
def test_bad_media_settings_are_named(raw, message):
    with pytest.raises(ValueError, match=message):
        handlers.parse_api_settings(raw)


def test_engine_refuses_bad_settings_before_running_and_the_app_says_why(tmp_path):
    engine = ChatEngine({"tiny": tiny.tiny_model()})
    try:
        from tests import media_factory as mf
        image = mf.image(tmp_path / "red.png")
        conv = engine.new_conversation()
        engine.attach_media(conv, image)
        for name, value, message in BAD:
            with pytest.raises(BadRequest, match=message):
                engine.ask(conv, "hi", GenerationSettings(**{name: value}))
        assert conv.turns == []
        # The app's API: a clear ValueError (shown by Gradio), never "Something went wrong".
        for raw in ({"temperature": "abc"}, {"do_sample": "no"}, {"seed": 2 ** 70}, {"num_beams": None}):
            with pytest.raises(ValueError, match=f"setting {next(iter(raw))}") as err:
                list(handlers.api_chat(engine, None, str(image), "hi", raw))
            assert "Something went wrong" not in str(err.value)
        # The page's sliders: a bad value is a notice naming it.
        session, _ = handlers.load_media(engine, None, str(image), handlers.MODE_AV, None)
        notices = [n for _, n in handlers.ask(engine, session, "hi", handlers.make_settings(None, 0.9, 8.0, 1))]
        assert notices[-1].startswith("⚠️ generation setting temperature must be a number")
    finally:
        engine.close()
