import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import launch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(launch.COMMANDS))
def test_every_command_has_a_module_with_arguments_and_main(name):
    module = importlib.import_module(launch.COMMANDS[name][0])
    assert callable(module.add_arguments) and callable(module.main)
    parser = launch.build_parser(name)
    assert parser.parse_args([name] + _required_args(name)).command == name


def _required_args(name):
    # The smallest argument list each command accepts, so parsing is exercised for real.
    return {
        "chat": [], "batch": ["--input", "q.jsonl", "--output", "a.jsonl"], "media": ["clip.mp4"],
        "inspect": ["--preset", "tiny"], "download": ["video-llama-2-7b"],
        "convert": ["--preset", "tiny", "--vl", "a", "--eva", "b", "--blip2", "c", "--llm", "d", "--out", "e"],
        "train": ["--recipe", "toy-world"], "eval": ["--suite", "toy-world"], "app": [], "serve": [],
    }[name]


def test_top_level_help_lists_commands_without_importing_them():
    code = ("import sys, launch\n"
            "try:\n    launch.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "inspect" in out and "convert" in out and "chat" in out
    assert out.strip().endswith("False")  # nothing heavy was imported for --help


def test_no_command_means_the_app_and_options_go_to_it(monkeypatch):
    seen = {}
    app_main = importlib.import_module("app.main")
    monkeypatch.setattr(app_main, "main", lambda args: seen.setdefault("args", args) and 0)
    assert launch.main(["--port", "7999"]) == 0
    assert seen["args"].command == "app" and seen["args"].port == 7999
