"""Entry point: `python launch.py [COMMAND] ...`.

With no command it starts the web app on the bundled model. Each command lives in its
own module with `add_arguments(parser)` and `main(args) -> int`; this file only wires
them together, importing a module when its command is used so that `--help` stays fast.
An expected error (bad input, a missing or damaged file) prints its one-line message only;
`--debug` anywhere on the line shows the traceback.
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
    "serve": ("serve.main", "OpenAI-compatible API server (--replicas N: Ray Serve replicas)"),
    "eval": ("evaluation.cli", "score models on a benchmark or the toy world; compare two runs"),
}


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser; only the chosen command's module is imported (the others are listed)."""
    parser = argparse.ArgumentParser(prog="launch.py", description="Video-LLaMA: chat about videos.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (anywhere on the line; taken out before parsing)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


# Errors that are about the user's input or files (a missing file, a damaged config, a refused
# checkpoint): every one of them carries a message that says what to do, so the command prints
# that message alone. Anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ValueError, KeyError, OSError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # anywhere on the line: show the traceback of an expected error too
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["app", *argv]  # `python launch.py --port 7861` means the app
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.main(args) or 0)
    except EXPECTED_ERRORS as err:
        if debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err  # KeyError's str() adds quotes
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
