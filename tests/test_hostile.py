"""Hostile input, fast cases of bench/fuzz.py: damaged model folders and nasty uploads end in
one clear line naming the problem, never a crash; the command line shows no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import fuzz
from model.chat.engine import ChatEngine
from model.weights import checkpoint as ck
from tests import tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory, tiny_llm_dir):
    model = tiny.tiny_model(with_llm=False, llm={"hf_path": str(tiny_llm_dir)})
    return ck.save_model_folder(model, tmp_path_factory.mktemp("good") / "folder")


def test_the_good_folder_loads(good_folder):
    assert ck.load_model(good_folder, precision="fp32", device="cpu").config.name == "tiny"


@pytest.mark.parametrize("case", sorted(fuzz.FOLDER_DAMAGES))
def test_damaged_folder_is_one_line_naming_the_file(case, good_folder, tmp_path):
    folder, names = fuzz.damaged_copy(good_folder, tmp_path / "bad", fuzz.FOLDER_DAMAGES[case])
    out = fuzz.try_folder(case, folder, names, lambda f: ck.load_model(f, precision="fp32", device="cpu"))
    assert out.ok, out.message


@pytest.mark.parametrize("config_text,field", [
    ('[1, 2, 3]', "JSON object"),
    ('{"vision": {"image_size": "112"}}', "vision.image_size must be a whole number"),
])  # (every other damage is checked in-process above; a subprocess costs seconds)
def test_command_line_prints_the_message_not_a_traceback(tmp_path, config_text, field):
    (tmp_path / "config.json").write_text(config_text)
    run = subprocess.run([sys.executable, "launch.py", "inspect", "--model", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'config.json'}: ")
    assert field in run.stderr and "Traceback" not in run.stderr


def test_debug_flag_shows_the_traceback(tmp_path):
    (tmp_path / "config.json").write_text('{"vision": {"image_size": "112"}}')
    run = subprocess.run([sys.executable, "launch.py", "inspect", "--model", str(tmp_path), "--debug"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "Traceback" in run.stderr and "ConfigError" in run.stderr


def test_convert_refusal_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, "launch.py", "convert", "--preset", "tiny", "--vl", "a.pth", "--eva", "b",
                          "--blip2", "c", "--llm", str(tmp_path), "--out", str(tmp_path / "out")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert [line for line in run.stderr.splitlines() if line.startswith("error:")] == [run.stderr.strip()]
    assert "has no config.json" in run.stderr


def test_nasty_and_random_uploads_are_refused_and_the_engine_still_answers(tmp_path):
    engine = ChatEngine({"tiny": tiny.tiny_model()})
    try:
        paths = fuzz.nasty_uploads(tmp_path / "nasty") + fuzz.random_uploads(tmp_path / "random", 24, seed=1)
        outcomes = [fuzz.try_upload(engine, p) for p in paths]
        assert [o for o in outcomes if not o.ok] == []
        assert all(o.message != "decoded" for o in outcomes)  # none of them is media
        image = tmp_path / "ok.png"
        from tests import media_factory as mf
        mf.image(image)
        conv = engine.new_conversation()
        engine.attach_media(conv, image)
        from model.chat.generate import GenerationSettings
        answer = "".join(engine.ask(conv, "What colour?", GenerationSettings(max_new_tokens=3, do_sample=False)))
        assert conv.turns[-1].answer == answer.strip()
    finally:
        engine.close()
