"""Arguments and model loading shared by the `chat` and `batch` commands and the chat bench."""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

import torch

from model.chat.generate import GenerationSettings
from model.config import PRESETS, VideoLlamaConfig

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "checkpoints" / "toy-world"  # the bundled model folder


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", type=Path, action="append", metavar="DIR",
                       help="model folder (repeatable; default: the bundled checkpoints/toy-world)")
    which.add_argument("--preset", choices=sorted(PRESETS),
                       help="random weights of a named architecture (smoke tests; practical only for 'tiny')")
    parser.add_argument("--precision", default="auto", help="LLM precision: auto, nf4, int8, fp16, bf16, fp32")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    d = GenerationSettings()
    group = parser.add_argument_group("sampling (defaults as the original demo)")
    group.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    group.add_argument("--temperature", type=float, default=d.temperature)
    group.add_argument("--top-p", type=float, default=d.top_p)
    group.add_argument("--top-k", type=int, default=d.top_k, help="0: off")
    group.add_argument("--beams", type=int, default=d.num_beams, help="beam search width (1: no beams)")
    group.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty)
    group.add_argument("--seed", type=int, default=d.seed, help="makes sampling reproducible")
    group.add_argument("--greedy", action="store_true", help="always take the likeliest token")


def settings_from_args(args: argparse.Namespace) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              top_k=args.top_k, num_beams=args.beams, repetition_penalty=args.repetition_penalty,
                              seed=args.seed, do_sample=not args.greedy)


class ModelMissing(FileNotFoundError):
    """The default bundled model folder does not exist yet."""


def load_models(args: argparse.Namespace) -> dict:
    """name -> loaded VideoLlama from ``--model`` folders, ``--preset`` or the bundled model."""
    from model.weights.checkpoint import load_model

    if args.preset:
        return {args.preset: random_model(VideoLlamaConfig.from_name(args.preset))}
    folders = args.model or [DEFAULT_MODEL]
    if not args.model and not (DEFAULT_MODEL / "config.json").is_file():
        raise ModelMissing(f"the bundled model is not at {DEFAULT_MODEL} yet; train it with "
                           "`python launch.py train --recipe toy-world`, or pass --model DIR (a model folder) "
                           "or --preset tiny (random weights, for a smoke test)")
    models = {}
    for folder in folders:
        name = folder.name if folder.name not in models else str(folder)
        models[name] = load_model(folder, precision=args.precision, device=args.device)
    return models


def random_model(cfg: VideoLlamaConfig, seed: int = 0, device: str = "cpu"):
    """A model of ``cfg``'s architecture with random encoders and adapters.

    The LLM is loaded when the config names its weights (e.g. the bundled SmolLM2), else it
    is random too, with a character-level tokenizer padded to the vocabulary size.
    """
    from model.llm import load_llm
    from model.video_llama import build_model

    has_weights = bool(cfg.llm.hf_path or cfg.llm.gguf_package)
    torch.manual_seed(seed)
    model = build_model(cfg, device=device, with_llm=not has_weights)
    if has_weights:
        model.llm, model.tokenizer = load_llm(cfg.llm, device=device)
    else:
        model.tokenizer = char_tokenizer(cfg.llm.vocab_size)
    model.config = cfg
    model.fingerprints = {"vision": f"random-{cfg.name}-{seed}", "audio": f"random-{cfg.name}-{seed}"}
    return model.eval()


def char_tokenizer(vocab_size: int):
    """One token per printable ASCII character, LLaMA's special ids (0 unk, 1 bos, 2 eos)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]  # 96 characters
    tokens = specials + chars + [f"<extra_{i}>" for i in range(max(0, vocab_size - 99))]
    if len(tokens) > vocab_size:
        raise ValueError(f"a character tokenizer needs a vocabulary of at least 99, got {vocab_size}")
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>")


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
