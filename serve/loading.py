"""Loading the models into a chat engine: what the single server and each Ray replica run."""

from __future__ import annotations

import argparse
from typing import Any

from model.commands import common


def build_engine(args: argparse.Namespace) -> Any:
    """Load the models named on the command line (``--model``/``--preset``, the bundled model by
    default) and start a ``ChatEngine`` over them."""
    import torch

    from model.chat.engine import ChatEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    return ChatEngine(common.load_models(args), concurrency=args.concurrency, queue_size=args.queue_size)
