"""Reusable tiny fixtures-as-functions for tests: config, tokenizer, LLM folder, model.

Everything is built in code from the ``tiny`` preset with fixed seeds: no files are read
and no hub is contacted.
"""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from model.config import VideoLlamaConfig
from model.llm import llama_config
from model.video_llama import VideoLlama, build_model

SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2, as in LLaMA
# 95 printable ASCII characters plus newline: 96 + 3 specials = 99 = the tiny LLM vocab.
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def tiny_config() -> VideoLlamaConfig:
    return VideoLlamaConfig.from_name("tiny")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer (vocab 99) with LLaMA's special-token ids."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    assert len(vocab) == 99, len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", 1)])
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


# LLM widths that are multiples of 64 (kv: 32), for bitsandbytes' CPU 4-bit kernel (see
# model.llm.check_cpu_nf4_shapes); the tiny preset's odd widths are for catching transposes.
NF4_LLM = dict(hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2)


def tiny_llm(seed: int = 0, **llm_overrides) -> LlamaForCausalLM:
    """A random tiny LlamaForCausalLM; ``llm_overrides`` change ``LLMConfig`` fields."""
    cfg = dataclasses.replace(tiny_config().llm, **llm_overrides)
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(cfg)).eval()


def tiny_llm_folder(tmp_path: str | Path, seed: int = 0, **llm_overrides) -> Path:
    """Save a random tiny LlamaForCausalLM and ``tiny_tokenizer()`` to ``tmp_path/llm``.

    Pass ``**NF4_LLM`` for a model that bitsandbytes can run in 4 bits on the CPU.
    """
    folder = Path(tmp_path) / "llm"
    tiny_llm(seed, **llm_overrides).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def tiny_model(with_llm: bool = True, seed: int = 0, **overrides) -> VideoLlama:
    """A built tiny VideoLlama on the CPU (random weights), with tokenizer and config set.

    ``overrides`` are merged (nested dicts included) into the tiny preset, e.g.
    ``use_audio=False`` or ``llm={"hf_path": "llm"}``.
    """
    cfg = VideoLlamaConfig.from_dict(_merge(tiny_config().to_dict(), overrides))
    torch.manual_seed(seed)
    model = build_model(cfg, device="cpu", with_llm=with_llm)
    model.tokenizer = tiny_tokenizer()
    model.fingerprints = {"vision": f"tiny-random-{seed}", "audio": f"tiny-random-{seed}"}
    return model.eval()


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def tiny_frames(cfg: VideoLlamaConfig, batch: int = 1, frames: int = 3) -> torch.Tensor:
    size = cfg.vision.image_size
    return torch.randn(batch, frames, 3, size, size)


def tiny_fbank(cfg: VideoLlamaConfig, batch: int = 1, clips: int = 4) -> torch.Tensor:
    return torch.randn(batch, clips, 1, cfg.audio.num_mel_bins, cfg.audio.target_length)
