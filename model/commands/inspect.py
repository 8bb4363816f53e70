"""`launch.py inspect`: parameters and weight memory of a preset or a model folder.

    python launch.py inspect --preset video-llama-2-7b            # table
    python launch.py inspect --model checkpoints/my-model --json  # one JSON object

A model folder with a LoRA adapter of the LLM lists it as the component ``llm_adapter``.

Nothing is loaded: the model is built on the meta device from the config. ``--device``
says which machine to estimate for (default ``cuda``, whose defaults are a 4-bit LLM and
fp16 encoders); ``--precision`` overrides the LLM precision. JSON schema:
``{"name", "device", "precision", "components": {name: {"params", "trainable", "dtype",
"bytes"}}, "total_bytes", "total_params", "soft_tokens": {modality: count}}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.commands.common import add_precision_arguments
from model.config import PRESETS, VideoLlamaConfig
from model.lora import read_settings
from model.weights.memory import estimate, format_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", choices=sorted(PRESETS), metavar="NAME",
                       help="a named architecture (model/config.py PRESETS; only its config is read)")
    which.add_argument("--model", type=Path, help="a model folder (reads only its config.json)")
    add_precision_arguments(parser)  # the same --precision (and --load-4bit/--load-8bit) as every command
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="device to estimate for")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def main(args: argparse.Namespace) -> int:
    if args.model is not None:
        config_path = args.model / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{args.model} is not a model folder (no config.json); "
                                    "create one with `python launch.py convert`")
        cfg = VideoLlamaConfig.from_file(config_path)
        # the LoRA adapter of the LLM, if any: its own component (its adapter_config.json is read too)
        adapter = read_settings(args.model / cfg.llm_adapter) if cfg.llm_adapter else None
    else:
        cfg, adapter = VideoLlamaConfig.from_name(args.preset), None
    report = estimate(cfg, precision=args.precision, device=args.device, adapter=adapter)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
