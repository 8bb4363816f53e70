"""`python launch.py [app] ...`: load the models, build the chat engine, serve the page.

With no `--model`/`--preset` the bundled model folder `checkpoints/toy-world` is served.
`--preset NAME` names an architecture and loads its weights from `checkpoints/NAME` (where
`launch.py download NAME` and `launch.py convert` put them), as in every command;
`--preset tiny --random-weights` serves random weights (smoke tests). Every model named is
offered in the model choices and the Compare tab.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from model.commands import common
from model.commands.common import add_model_arguments, first_missing, missing_message, model_folders, unique_names

__all__ = ["add_arguments", "load_models", "main", "missing_message", "model_folders", "precision_of", "unique_names"]

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

log = logging.getLogger("app")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)  # --model, --preset, --random-weights, --precision (--load-4bit/8bit), --device
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="answers generated at once (each holds its own LLM state)")
    parser.add_argument("--queue-size", type=int, default=16, help="requests waiting beyond that are refused")
    parser.add_argument("--votes", default="runs/votes.jsonl", help="where Compare-tab votes are appended")
    parser.add_argument("--api-url", default=None, metavar="URL",
                        help="use a running API server (`launch.py serve`, e.g. http://127.0.0.1:8000) "
                             "instead of loading models here")


def precision_of(args: argparse.Namespace) -> str:
    """The LLM precision asked for (``--precision``, or its aliases ``--load-4bit``/``--load-8bit``)."""
    return args.precision


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
    from model.chat import heap

    heap.limit_arenas()  # before torch, the engine and Gradio start threads (model/chat/heap.py)
    if args.api_url:
        return run_remote(args)
    problem = first_missing(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from app.ui import build_demo, serve
    from model.chat.engine import ChatEngine

    try:
        if args.random_weights:
            models = common.load_models(args)
        else:
            models = load_models(model_folders(args), precision_of(args), args.device)
    except (FileNotFoundError, ValueError) as err:  # checkpoint errors say what to run
        print(f"error: {err}", file=sys.stderr)
        return 2
    engine = ChatEngine(models, concurrency=args.concurrency, queue_size=args.queue_size)
    max_frames = min(m.config.max_frame_pos for m in models.values())
    demo = build_demo(engine, votes_path=args.votes, max_frames=max_frames, concurrency=args.concurrency)
    serve(demo, host=args.host, port=args.port, share=args.share, concurrency=args.concurrency,
          queue_size=args.queue_size, votes_path=args.votes, block=True)
    return 0


def run_remote(args: argparse.Namespace) -> int:
    """The page over a running API server: the models load and scale there, not here."""
    from app.remote import RemoteEngine
    from app.ui import build_demo, serve

    try:
        engine = RemoteEngine(args.api_url)
    except ConnectionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    demo = build_demo(engine, votes_path=args.votes, max_frames=engine.max_frames, concurrency=args.concurrency)
    serve(demo, host=args.host, port=args.port, share=args.share, concurrency=args.concurrency,
          queue_size=args.queue_size, votes_path=args.votes, block=True)
    return 0
