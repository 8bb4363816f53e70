"""LoRA adapters on the LLM (peft), active only for prompts that carry media.

A model folder may hold an adapter in peft's own format (``llm_adapter/adapter_config.json``
+ ``adapter_model.safetensors``, keys as ``PeftModel.save_pretrained`` writes them), named by
``config.json``'s ``llm_adapter``. Loaded models share one LLM per weights (``load_model``'s
cache), so each folder's adapter is injected into that LLM under a name of its own (from the
file's content hash) and switched per turn:

- a prompt with media runs with the model's adapter (``adapter_scope(llm, name)``);
- a text-only prompt runs with every adapter disabled, i.e. the plain frozen LLM, so its
  answers are token for token those of the LLM without any adapter.

The switch is a module-wide state of the shared LLM, so ``adapter_scope`` holds a lock of that
LLM for as long as the caller runs it: two workers (or two Compare models) on one LLM never
see each other's setting. An LLM without adapters takes no lock.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ADAPTER_DIR = "llm_adapter"  # default sub-folder of a model folder
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # what PeftModel puts before the LLM's own parameter names
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # LLaMA's attention projections

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # llm -> RLock
_LOCKS_GUARD = threading.Lock()


class AdapterError(ValueError):
    """An adapter folder cannot be used; the message says why and what to do."""


@dataclass
class LoraSettings:
    """Shape of a LoRA adapter: rank, scale (alpha / rank), dropout and which Linear layers."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS

    def peft_config(self, inference: bool = False):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), inference_mode=inference)


def lora_layers(llm: nn.Module) -> list[nn.Module]:
    """The LLM's layers that carry LoRA adapters (empty for a plain LLM)."""
    from peft.tuners.lora import LoraLayer

    return [m for m in llm.modules() if isinstance(m, LoraLayer)]


def adapter_names(llm: nn.Module) -> set[str]:
    return {name for m in lora_layers(llm) for name in m.lora_A}


def add_adapter(llm: nn.Module, settings: LoraSettings, name: str) -> list[tuple[str, nn.Parameter]]:
    """Inject a trainable LoRA adapter ``name`` (B = 0: the LLM's output is unchanged) and make
    it the active one; returns its parameters, named as in ``llm.named_parameters()``.

    The adapter weights are fp32 even on a bf16 LLM: AdamW steps would round away in bf16.
    """
    from peft import inject_adapter_in_model

    if name in adapter_names(llm):
        raise ValueError(f"the LLM already has an adapter called {name!r}")
    inject_adapter_in_model(settings.peft_config(), llm, adapter_name=name)
    return train_adapter(llm, name)


def train_adapter(llm: nn.Module, name: str) -> list[tuple[str, nn.Parameter]]:
    """Make adapter ``name`` the active, trainable one (fp32) and return its parameters.

    Training sees media in every example, so the adapter stays on until ``adapter_scope`` is
    used (inference), which switches it per prompt.
    """
    for m in lora_layers(llm):
        if name in m.lora_A:
            m.lora_A[name].float()
            m.lora_B[name].float()
        m.enable_adapters(True)
        m.set_adapter(name)  # peft: the active adapter trains, the others are frozen
    return adapter_parameters(llm, name)


def settings_of(llm: nn.Module, name: str) -> LoraSettings:
    """The shape of adapter ``name`` as injected (rank, alpha, dropout, target layer names)."""
    from peft.tuners.lora import LoraLayer

    rank = alpha = dropout = None
    targets = set()
    for module_name, m in llm.named_modules():
        if isinstance(m, LoraLayer) and name in m.lora_A:
            rank, alpha = m.r[name], m.lora_alpha[name]
            drop = m.lora_dropout[name]
            dropout = drop.p if isinstance(drop, nn.Dropout) else 0.0
            targets.add(module_name.rsplit(".", 1)[-1])
    if rank is None:
        raise ValueError(f"the LLM has no adapter called {name!r}")
    return LoraSettings(rank=rank, alpha=float(alpha), dropout=float(dropout), target_modules=tuple(sorted(targets)))


def adapter_parameters(llm: nn.Module, name: str) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of adapter ``name``'s LoRA matrices, by module identity, not by name."""
    mine = {id(p) for m in lora_layers(llm) if name in m.lora_A
            for p in (*m.lora_A[name].parameters(), *m.lora_B[name].parameters())}
    return [(n, p) for n, p in llm.named_parameters() if id(p) in mine]


def adapter_state(llm: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Adapter ``name``'s tensors keyed as peft's ``adapter_model.safetensors`` keys them."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(llm, adapter_name=name)
    if not state:
        raise ValueError(f"the LLM has no adapter called {name!r}")
    return {PEFT_PREFIX + k: v for k, v in state.items()}


def save_adapter(llm: nn.Module, name: str, settings: LoraSettings, folder: str | Path,
                 dtype: torch.dtype | None = None) -> Path:
    """Write adapter ``name`` in peft's format: ``adapter_config.json`` + ``adapter_model.safetensors``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous()
             for k, v in adapter_state(llm, name).items()}
    save_file(state, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    settings.peft_config(inference=True).save_pretrained(folder)
    return folder


def read_settings(folder: str | Path) -> LoraSettings:
    """The rank, alpha, dropout and target modules of a saved adapter (typed errors)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise AdapterError(f"{folder} is not an LLM adapter folder (no {CONFIG_FILE}); re-save the model "
                           "folder, or remove 'llm_adapter' from its config.json to load it without one")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{path} is not valid JSON ({err}); re-save the model folder") from err
    if data.get("peft_type") != "LORA":
        raise AdapterError(f"{path} describes a {data.get('peft_type')!r} adapter; only LoRA adapters load here")
    targets = data.get("target_modules") or []
    if isinstance(targets, str):
        raise AdapterError(f"{path}: target_modules is a pattern ({targets!r}); list the module names instead")
    return LoraSettings(rank=int(data["r"]), alpha=float(data["lora_alpha"]),
                        dropout=float(data.get("lora_dropout", 0.0)), target_modules=tuple(sorted(targets)))


def adapter_id(folder: str | Path) -> str:
    """A name for the adapter inside a shared LLM: the same files give the same name."""
    h = hashlib.sha256()
    for file in (CONFIG_FILE, WEIGHTS_FILE):
        h.update((Path(folder) / file).read_bytes())
    return "adapter_" + h.hexdigest()[:16]


def load_adapter(llm: nn.Module, folder: str | Path,
                 read_weights: Callable[[Path], dict[str, torch.Tensor]] | None = None) -> str:
    """Inject the adapter saved in ``folder`` into ``llm`` (once per content) and return its name.

    ``read_weights`` reads the safetensors file (``model.weights.checkpoint.load_safetensors`` gives
    typed errors; passed in because the checkpoint module imports this one).

    Every tensor must fit a LoRA matrix of the injected adapter and every LoRA matrix must be
    given: a partial or foreign file is an ``AdapterError``, not a silently half-loaded adapter.
    """
    from peft import inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    settings = read_settings(folder)
    name = adapter_id(folder)
    if name in adapter_names(llm):
        return name
    state = (read_weights or load_file)(folder / WEIGHTS_FILE)
    stray = [k for k in state if not k.startswith(PEFT_PREFIX)]
    if stray:
        raise AdapterError(f"{folder / WEIGHTS_FILE} has keys outside peft's layout ({stray[:3]}); "
                           f"expected names starting with {PEFT_PREFIX!r}")
    state = {k[len(PEFT_PREFIX):]: v for k, v in state.items()}
    inject_adapter_in_model(settings.peft_config(inference=True), llm, adapter_name=name)
    expected = {k: tuple(p.shape) for k, p in adapter_parameters(llm, name)}
    given = {k.replace(".weight", f".{name}.weight"): tuple(v.shape) for k, v in state.items()}
    if given != expected:
        missing, extra = sorted(set(expected) - set(given))[:3], sorted(set(given) - set(expected))[:3]
        wrong = [f"{k}: {given[k]} for {expected[k]}" for k in sorted(set(given) & set(expected))
                 if given[k] != expected[k]][:2]
        _remove(llm, name)
        raise AdapterError(f"{folder / WEIGHTS_FILE} does not fit this LLM with its {CONFIG_FILE} (missing "
                           f"{missing}, unexpected {extra}, shapes {wrong}); was it saved for another LLM "
                           "or another rank?")
    dtype = llm.get_input_embeddings().weight.dtype
    result = set_peft_model_state_dict(llm, {k: v.to(dtype) for k, v in state.items()}, adapter_name=name)
    if getattr(result, "unexpected_keys", None):
        _remove(llm, name)
        raise AdapterError(f"{folder / WEIGHTS_FILE}: keys that fit no LoRA matrix: {result.unexpected_keys[:3]}")
    for m in lora_layers(llm):
        m.enable_adapters(False)  # plain LLM until a media prompt asks for the adapter
    return name


def _remove(llm: nn.Module, name: str) -> None:
    for m in lora_layers(llm):
        if name in m.lora_A:
            m.delete_adapter(name)


def parameter_count(folder: str | Path) -> int:
    """Numbers in a saved adapter's weights (read from the file header only)."""
    from safetensors import safe_open

    total = 0
    with safe_open(Path(folder) / WEIGHTS_FILE, framework="pt") as f:
        for key in f.keys():
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= d
            total += n
    return total


def _lock(llm: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(llm)
        if lock is None:
            lock = _LOCKS[llm] = threading.RLock()
        return lock


@contextmanager
def adapter_scope(llm: nn.Module, name: str | None) -> Iterator[None]:
    """Run the body with adapter ``name`` active, or with no adapter at all when ``name`` is None.

    Holds the LLM's lock for the whole body (see the module docstring); on leaving, every
    adapter is disabled again, so code that never asks for one sees the plain LLM.
    """
    layers = lora_layers(llm)
    if not layers:
        if name is not None:
            raise ValueError(f"adapter {name!r} is not loaded into this LLM")
        yield
        return
    with _lock(llm):
        try:
            for m in layers:
                if name is None:
                    m.enable_adapters(False)
                else:
                    m.enable_adapters(True)
                    m.set_adapter(name, inference_mode=True)  # inference: leave requires_grad off
            yield
        finally:
            for m in layers:
                m.enable_adapters(False)
