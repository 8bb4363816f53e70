"""`python launch.py [app] ...`: load the models, build the chat engine, serve the page.

With no `--model`/`--preset` the bundled model folder `checkpoints/toy-world` is served.
`--preset NAME` means the folder `checkpoints/NAME` (where `launch.py download NAME` and
`launch.py convert` put it). Every model named is offered in the model choices and the
Compare tab.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "checkpoints"
DEFAULT_MODEL = CHECKPOINTS / "toy-world"

log = logging.getLogger("app")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=[], metavar="DIR",
                        help="model folder to serve (repeatable); default: checkpoints/toy-world")
    parser.add_argument("--preset", action="append", default=[], metavar="NAME",
                        help="serve checkpoints/NAME, e.g. video-llama-2-7b (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--load-4bit", action="store_true", help="LLM in 4-bit NF4 (bitsandbytes)")
    precision.add_argument("--load-8bit", action="store_true", help="LLM in 8-bit (bitsandbytes)")
    precision.add_argument("--fp16", action="store_true", help="LLM in float16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: automatic)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="answers generated at once (each holds its own LLM state)")
    parser.add_argument("--queue-size", type=int, default=16, help="requests waiting beyond that are refused")
    parser.add_argument("--votes", default="runs/votes.jsonl", help="where Compare-tab votes are appended")


def precision_of(args: argparse.Namespace) -> str:
    if args.load_4bit:
        return "nf4"
    if args.load_8bit:
        return "int8"
    if args.fp16:
        return "fp16"
    return "auto"


def model_folders(args: argparse.Namespace) -> list[Path]:
    """Folders named by --model and --preset, in order; the bundled model if none."""
    folders = [Path(d) for d in args.model] + [CHECKPOINTS / name for name in args.preset]
    return folders or [DEFAULT_MODEL]


def missing_message(folder: Path) -> str | None:
    """What to run when a model folder is not there (None when it looks complete)."""
    if (folder / "config.json").is_file():
        return None
    if folder.resolve() == DEFAULT_MODEL.resolve():
        return (f"The bundled model is missing ({folder} has no config.json). Train it with "
                "`python launch.py train --recipe toy-world` (or `--recipe toy-world --quick` for a "
                "rough one in minutes), or serve another folder with `--model DIR`.")
    name = folder.name
    return (f"No model at {folder} (no config.json). Fetch the released files with "
            f"`python launch.py download {name}` and turn them into a model folder with "
            f"`python launch.py convert --preset {name} ... --out {folder}`, or pass `--model DIR`.")


def unique_names(folders: list[Path]) -> list[str]:
    """A display name per folder: its name, with a number when two folders share one."""
    names: list[str] = []
    for folder in folders:
        name = folder.resolve().name
        candidate, n = name, 2
        while candidate in names:
            candidate, n = f"{name} ({n})", n + 1
        names.append(candidate)
    return names


def load_models(folders: list[Path], precision: str, device: str | None) -> dict:
    from model.weights.checkpoint import load_model

    models = {}
    for name, folder in zip(unique_names(folders), folders, strict=True):
        log.info("loading %s from %s (precision %s)", name, folder, precision)
        models[name] = load_model(folder, precision=precision, device=device)
    return models


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    folders = model_folders(args)
    for folder in folders:
        problem = missing_message(folder)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    from app.ui import build_demo, serve
    from model.chat.engine import ChatEngine

    try:
        models = load_models(folders, precision_of(args), args.device)
    except (FileNotFoundError, ValueError) as err:  # checkpoint errors say what to run
        print(f"error: {err}", file=sys.stderr)
        return 2
    engine = ChatEngine(models, concurrency=args.concurrency, queue_size=args.queue_size)
    max_frames = min(m.config.max_frame_pos for m in models.values())
    demo = build_demo(engine, votes_path=args.votes, max_frames=max_frames, concurrency=args.concurrency)
    serve(demo, host=args.host, port=args.port, share=args.share, concurrency=args.concurrency,
          queue_size=args.queue_size, votes_path=args.votes, block=True)
    return 0
