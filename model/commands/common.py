"""Arguments and model loading shared by the commands that run a model (chat, batch, the app, the
benches): one meaning per flag."""

from __future__ import annotations

import argparse
import dataclasses
import string
import sys
from pathlib import Path

import torch

from model.chat.generate import GenerationSettings
from model.config import PRESETS, VideoLlamaConfig
from model.llm import PRECISIONS

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ROOT / "checkpoints"  # where `download` + `convert` put a preset's model folder
DEFAULT_MODEL = CHECKPOINTS / "toy-world"  # the bundled model folder
PRESET_HELP = ("a named architecture (model/config.py PRESETS); commands that run a model load its weights "
               "from checkpoints/NAME, the folder `launch.py download` and `convert` make")


def add_precision_arguments(parser: argparse.ArgumentParser, choices: tuple[str, ...] = PRECISIONS) -> None:
    """``--precision`` of the LLM; the original demo's ``--load-4bit`` / ``--load-8bit`` are kept as
    spellings of ``--precision nf4`` / ``--precision int8`` where those are offered."""
    parser.add_argument("--precision", choices=choices, default="auto",
                        help="LLM precision (default auto: NF4 on CUDA, fp32 on a CPU)")
    if "nf4" in choices:
        parser.add_argument("--load-4bit", dest="precision", action="store_const", const="nf4",
                            help="the same as --precision nf4")
    if "int8" in choices:
        parser.add_argument("--load-8bit", dest="precision", action="store_const", const="int8",
                            help="the same as --precision int8")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which models to run: ``--model DIR`` and ``--preset NAME`` (both repeatable), the precision
    and the device. The same flags, with the same meaning, in every command that runs a model."""
    parser.add_argument("--model", type=Path, action="append", default=[], metavar="DIR",
                        help="model folder (repeatable; default: the bundled checkpoints/toy-world)")
    parser.add_argument("--preset", action="append", default=[], choices=sorted(PRESETS), metavar="NAME",
                        help=PRESET_HELP + " (repeatable)")
    parser.add_argument("--random-weights", action="store_true",
                        help="with --preset: random encoders and adapters instead (smoke tests; the LLM is "
                             "loaded when the preset names its weights)")
    add_precision_arguments(parser)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")


def model_folders(args: argparse.Namespace) -> list[Path]:
    """Folders named by --model and --preset, in order; the bundled model if none."""
    folders = [Path(d) for d in args.model] + [CHECKPOINTS / name for name in args.preset]
    return folders or [DEFAULT_MODEL]


def first_missing(args: argparse.Namespace) -> str | None:
    """What to run for the first model folder named by ``args`` that is not there (None when all
    look complete, or when ``--random-weights`` needs no folder): commands check this before the
    slow imports."""
    if getattr(args, "random_weights", False):
        return None
    return next(filter(None, map(missing_message, model_folders(args))), None)


def missing_message(folder: Path) -> str | None:
    """What to run when a model folder is not there (None when it looks complete)."""
    if (folder / "config.json").is_file():
        return None
    if folder.resolve() == DEFAULT_MODEL.resolve():
        return (f"The bundled model is missing ({folder} has no config.json). Train it with "
                "`python launch.py train --recipe toy-world` (or `--recipe toy-world --quick` for a "
                "rough one in minutes), or pass --model DIR (a model folder) or --preset tiny "
                "--random-weights (for a smoke test).")
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


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling (default: the model folder's generation_config.json; the "
                                      "original demo's settings for a folder without one)")
    group.add_argument("--max-new-tokens", type=int, default=None)
    group.add_argument("--temperature", type=float, default=None, help="sets sampling on (unless --greedy)")
    group.add_argument("--top-p", type=float, default=None, help="sets sampling on (unless --greedy)")
    group.add_argument("--top-k", type=int, default=None, help="0: off; sets sampling on (unless --greedy)")
    group.add_argument("--beams", type=int, default=None, help="beam search width (1: no beams)")
    group.add_argument("--repetition-penalty", type=float, default=None)
    group.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    group.add_argument("--greedy", action="store_true", help="always take the likeliest token")


# flag attribute -> GenerationSettings field
_SAMPLING_FLAGS = {"max_new_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p",
                   "top_k": "top_k", "beams": "num_beams", "repetition_penalty": "repetition_penalty", "seed": "seed"}


def settings_from_args(args: argparse.Namespace, defaults: GenerationSettings | None = None) -> GenerationSettings:
    """``defaults`` (the model folder's settings; the original demo's if None) with the flags given on top.

    A sampling knob given on the command line (temperature, top-p, top-k) means sampling, even when
    the folder's default is greedy; ``--greedy`` always wins.
    """
    base = dataclasses.replace(defaults) if defaults is not None else GenerationSettings()
    given = {name: getattr(args, flag) for flag, name in _SAMPLING_FLAGS.items() if getattr(args, flag) is not None}
    if {"temperature", "top_p", "top_k"} & set(given):
        given["do_sample"] = True
    if args.greedy:
        given["do_sample"] = False
    return dataclasses.replace(base, **given)


class ModelMissing(FileNotFoundError):
    """The default bundled model folder does not exist yet."""


def load_models(args: argparse.Namespace) -> dict:
    """name -> loaded VideoLlama from ``--model`` folders and ``--preset`` names (or the bundled model);
    ``--random-weights`` builds each preset with random weights instead."""
    from model.weights.checkpoint import load_model

    if args.random_weights:
        if not args.preset or args.model:
            raise ValueError("--random-weights goes with --preset NAME (and no --model): it replaces the "
                             "preset's weights")
        return {name: random_model(VideoLlamaConfig.from_name(name)) for name in dict.fromkeys(args.preset)}
    problem = first_missing(args)
    if problem:
        raise ModelMissing(problem)
    folders = model_folders(args)
    return {name: load_model(folder, precision=args.precision, device=args.device)
            for name, folder in zip(unique_names(folders), folders, strict=True)}


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
