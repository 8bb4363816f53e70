"""A model folder's generation_config.json: written, read, and where the tools start from it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from model.chat.engine import ChatEngine
from model.chat.generate import GENERATION_FILE, GenerationSettings, load_generation_defaults, save_generation_defaults
from model.weights import checkpoint as ck
from tests import tiny


def test_round_trip_and_hugging_face_keys(tmp_path):
    settings = GenerationSettings(max_new_tokens=64, temperature=0.3, top_p=0.8, top_k=5, do_sample=False)
    save_generation_defaults(settings, tmp_path)
    data = json.loads((tmp_path / GENERATION_FILE).read_text())
    assert data == {"max_new_tokens": 64, "temperature": 0.3, "top_p": 0.8, "top_k": 5, "num_beams": 1,
                    "repetition_penalty": 1.0, "do_sample": False}
    assert load_generation_defaults(tmp_path) == dataclasses.replace(settings, seed=None)
    # A Hugging Face file: token ids and versions are not sampling settings; an int temperature is a float
    (tmp_path / GENERATION_FILE).write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2, 3], "temperature": 1,
                                                        "transformers_version": "5.0", "do_sample": True}))
    assert load_generation_defaults(tmp_path) == GenerationSettings(temperature=1.0)


def test_missing_file_gives_the_original_demo_settings_and_bad_values_are_named(tmp_path):
    assert load_generation_defaults(tmp_path) == GenerationSettings()
    assert GenerationSettings().temperature == 1.0 and GenerationSettings().top_p == 0.9
    (tmp_path / GENERATION_FILE).write_text(json.dumps({"top_p": 2.0}))
    with pytest.raises(ValueError, match="top_p"):
        load_generation_defaults(tmp_path)
    (tmp_path / GENERATION_FILE).write_text(json.dumps({"do_sample": "yes"}))
    with pytest.raises(ValueError, match="do_sample must be a bool"):
        load_generation_defaults(tmp_path)


def test_model_folder_carries_its_defaults_and_the_engine_starts_from_them(tmp_path, tiny_llm_dir):
    model = tiny.tiny_model(with_llm=False, llm={"hf_path": str(tiny_llm_dir)})
    official = ck.save_model_folder(model, tmp_path / "official")
    assert load_generation_defaults(official) == GenerationSettings()  # presets: the original demo's
    model.generation_defaults = GenerationSettings(max_new_tokens=7, do_sample=False)
    folder = ck.save_model_folder(model, tmp_path / "tuned")
    loaded = ck.load_model(folder, precision="fp32", device="cpu")
    assert loaded.generation_defaults == GenerationSettings(max_new_tokens=7, do_sample=False)
    engine = ChatEngine({"tuned": loaded, "official": ck.load_model(official, precision="fp32", device="cpu")})
    try:
        assert engine.generation_defaults("tuned") == loaded.generation_defaults
        assert engine.generation_defaults("official") == GenerationSettings()
        conv = engine.new_conversation("tuned")
        list(engine.ask(conv, "Hi"))  # no settings given: the folder's
        assert engine.trace(conv).settings == loaded.generation_defaults
        list(engine.ask(conv, "Again", GenerationSettings(max_new_tokens=3)))  # the caller's win
        assert engine.trace(conv).settings.max_new_tokens == 3
    finally:
        engine.close()


def test_chat_and_batch_flags_go_on_top_of_the_folder_settings():
    import argparse

    from model.commands.common import add_sampling_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)
    folder = GenerationSettings(max_new_tokens=40, do_sample=False, top_p=0.5)
    assert settings_from_args(parser.parse_args([]), folder) == folder
    assert settings_from_args(parser.parse_args([]), None) == GenerationSettings()  # the original demo's
    hot = settings_from_args(parser.parse_args(["--temperature", "0.7"]), folder)
    assert hot.do_sample and hot.temperature == 0.7 and hot.max_new_tokens == 40 and hot.top_p == 0.5
    assert settings_from_args(parser.parse_args(["--temperature", "0.7", "--greedy"]), folder).greedy
    assert settings_from_args(parser.parse_args(["--max-new-tokens", "9"]), folder) == \
        dataclasses.replace(folder, max_new_tokens=9)
