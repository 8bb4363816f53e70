"""Loading the models into a chat engine: what the single server and each Ray replica run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from app.main import load_models, precision_of
from model.commands.common import load_models as random_weight_models


def build_engine(args: argparse.Namespace, folders: list[Path]) -> Any:
    """Load the models named on the command line and start a ``ChatEngine`` over them."""
    import torch

    from model.chat.engine import ChatEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "random_weights", False):  # --preset NAME --random-weights: a smoke test
        models = random_weight_models(args)
    else:
        models = load_models(folders, precision_of(args), args.device)
    return ChatEngine(models, concurrency=args.concurrency, queue_size=args.queue_size)
