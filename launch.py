"""Entry point: `python launch.py [COMMAND] ...`.

With no command it starts the web app on the bundled model. Each command lives in its
own module with `add_arguments(parser)` and `main(args) -> int`; this file only wires
them together, importing a module when its command is used so that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help). Plain data: go to the module to read it.
COMMANDS: dict[str, tuple[str, str]] = {
    "app": ("app.main", "start the web app (the default command)"),
    "chat": ("model.commands.chat", "chat about a video, image or audio file in the terminal"),
    "batch": ("model.commands.batch", "answer a JSONL file of questions about media files"),
    "media": ("model.commands.media", "show what the model will receive from a media file"),
    "inspect": ("model.commands.inspect", "parameters and memory of a preset or model folder"),
    "convert": ("model.commands.convert", "turn official Video-LLaMA files into a model folder"),
    "download": ("model.commands.download", "fetch the released checkpoints (needs internet)"),
    "train": ("train.cli", "train a model (recipes: toy-world, toy-world --quick, ...)"),
    "eval": ("evaluation.toy_world", "score a model on an evaluation suite"),
}


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser; only the chosen command's module is imported (the others are listed)."""
    parser = argparse.ArgumentParser(prog="launch.py", description="Video-LLaMA: chat about videos.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["app", *argv]  # `python launch.py --port 7861` means the app
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
