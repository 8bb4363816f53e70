"""Parameter counts and weight-memory estimates, from a config alone (meta device).

Bytes per component follow what the loaders actually allocate:

- encoders (EVA ViT, ln_vision, image Q-Former, ImageBind audio): fp16 on CUDA, fp32 on CPU
  (``model.device.pick_dtype``); adapters keep fp32 master weights;
- the LLM at ``nf4``: transformers + bitsandbytes replace every ``nn.Linear`` of the decoder
  layers with ``Linear4bit`` and leave the embeddings, norms and ``lm_head`` in the compute
  dtype (fp16/bf16 on CUDA, fp32 on CPU). A 4-bit weight of n values stores n/2 packed
  bytes plus its quantization state: with double quantization (as ``model.llm`` configures)
  one uint8 absmax per 64-value block, one fp32 absmax per 256 blocks, a 16-entry fp32 NF4
  code, a 256-entry fp32 code for the absmax and an fp32 offset;
- ``int8``: ``Linear8bitLt`` stores int8 weights plus one fp32 scale per output row.

``tests/test_inspect.py`` checks these rules against a real NF4 / int8 load on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from model.config import VideoLlamaConfig
from model.llm import resolve_precision
from model.lora import LoraSettings
from model.video_llama import FROZEN, VideoLlama, build_model

NF4_BLOCK = 64  # values per absmax block (bitsandbytes' default blocksize)
NESTED_BLOCK = 256  # absmax values per second-level block under double quantization
NF4_FIXED_BYTES = 16 * 4 + 256 * 4 + 4  # NF4 code + absmax code + offset, per quantized Linear
_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
COMPONENT_ORDER = ("vision_encoder", "ln_vision", "image_qformer", "frame_position_embedding", "video_qformer",
                   "video_proj", "audio_encoder", "audio_position_embedding", "audio_qformer", "audio_proj", "llm")


@dataclass
class ComponentMemory:
    params: int
    trainable: bool
    dtype: str
    bytes: int


def nf4_linear_bytes(numel: int) -> int:
    """Bytes of one bitsandbytes NF4 weight with double quantization (see module docstring)."""
    blocks = math.ceil(numel / NF4_BLOCK)
    return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + NF4_FIXED_BYTES


def _float_name(device: str, kind: str) -> str:
    if device != "cuda":
        return "fp32"
    return "fp16" if kind in ("encoder", "llm") else "fp32"  # bf16 LLMs take the same 2 bytes


def llm_bytes(llm: nn.Module, precision: str, device: str) -> tuple[int, str]:
    """Estimated weight bytes of the LLM at ``precision`` and the dtype label."""
    if precision in _BYTES:
        return sum(p.numel() for p in llm.parameters()) * _BYTES[precision], precision
    rest = _float_name(device, "llm")
    quantized: set[int] = set()
    total = 0
    for name, module in llm.named_modules():
        # transformers keeps lm_head (the output embedding) out of quantization.
        if isinstance(module, nn.Linear) and not name.endswith("lm_head"):
            n = module.weight.numel()
            total += nf4_linear_bytes(n) if precision == "nf4" else n + 4 * module.out_features
            quantized.add(id(module.weight))
    seen = set(quantized)
    for p in llm.parameters():  # embeddings, norms, lm_head, any biases: compute dtype
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * _BYTES[rest]
    return total, f"{precision}+{rest}"


def lora_params(llm: nn.Module, adapter: LoraSettings) -> int:
    """Numbers in a LoRA adapter of ``llm``: rank x (in + out) for every targeted ``nn.Linear``."""
    return sum(adapter.rank * (m.in_features + m.out_features) for name, m in llm.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in adapter.target_modules)


def estimate(cfg: VideoLlamaConfig, precision: str = "auto", device: str = "cuda",
             adapter: LoraSettings | None = None) -> dict:
    """Per-component params and bytes for ``cfg`` at ``precision`` on ``device`` (``"cuda"``/``"cpu"``).

    ``adapter``: the model folder's LoRA adapter of the LLM (``llm_adapter/adapter_config.json``),
    listed as a component of its own, ``llm_adapter``, in the LLM's compute dtype (as ``load_model``
    casts it). Returns a JSON-ready dict: ``components`` (name -> params, trainable, dtype, bytes),
    ``total_bytes``, ``soft_tokens`` per modality, and the resolved ``precision``/``device``.
    """
    precision = resolve_precision(precision, torch.device(device))
    model = build_model(cfg, device="meta", with_llm=True)
    components = {}
    for name in COMPONENT_ORDER:
        module = getattr(model, name)
        if module is None:
            continue
        params = sum(p.numel() for p in module.parameters())
        if name == "llm":
            size, dtype = llm_bytes(module, precision, device)
        else:
            dtype = _float_name(device, "encoder" if name in FROZEN else "adapter")
            size = params * _BYTES[dtype]
        components[name] = ComponentMemory(params, name not in FROZEN, dtype, size)
    if adapter is not None and adapter.rank:
        n, dtype = lora_params(model.llm, adapter), _float_name(device, "llm")
        components["llm_adapter"] = ComponentMemory(n, True, dtype, n * _BYTES[dtype])
    return {
        "name": cfg.name, "device": device, "precision": precision,
        "components": {k: asdict(v) for k, v in components.items()},
        "total_bytes": sum(c.bytes for c in components.values()),
        "total_params": sum(c.params for c in components.values()),
        "soft_tokens": soft_tokens(model),
    }


def soft_tokens(model: VideoLlama) -> dict[str, int]:
    """LLM input tokens each modality becomes (image = a one-frame video)."""
    out = {}
    if model.video_qformer is not None:
        q = model.video_qformer.cfg.num_queries
        out.update(video=q, image=q)
    if model.audio_qformer is not None:
        out["audio"] = model.audio_qformer.cfg.num_queries
    return out


def format_report(report: dict) -> str:
    """Human-readable table of ``estimate``'s result."""
    lines = [f"{report['name']}  (device {report['device']}, LLM precision {report['precision']})",
             f"{'component':26s} {'params':>14s} {'state':>9s} {'dtype':>10s} {'memory':>10s}"]
    for name, c in report["components"].items():
        state = "trainable" if c["trainable"] else "frozen"
        lines.append(f"{name:26s} {c['params']:>14,d} {state:>9s} {c['dtype']:>10s} {_gib(c['bytes']):>10s}")
    lines.append(f"{'total':26s} {report['total_params']:>14,d} {'':>9s} {'':>10s} {_gib(report['total_bytes']):>10s}")
    tokens = ", ".join(f"{k} {v}" for k, v in report["soft_tokens"].items())
    lines.append(f"soft tokens per item: {tokens}")
    lines.append("memory = weights only (activations and the KV cache come on top)")
    return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"
