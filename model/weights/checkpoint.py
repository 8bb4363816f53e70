"""Safe checkpoint reading and our model folder format (see ARCHITECTURE.md).

Reading never runs code from a file: ``.pth`` goes through ``torch.load(weights_only=True)``
(memory-mapped when the file is in the zip format), ``.safetensors`` through safetensors
(memory-mapped). A file that is empty, truncated, foreign or asks to run code raises a
typed ``CheckpointError`` that says what is wrong and what to do.

``load_model`` builds every module on the meta device and then assigns the tensors of each
component file once (``load_state_dict(strict=True, assign=True)``), so weights are read
from disk once and never initialised randomly first. Frozen encoders and LLMs already
loaded in this process are shared between model folders with the same weights, so two
checkpoints can be compared without paying twice for the big parts. Shared modules are frozen
and in eval mode, and one changed by its user is not shared again; ``load_model(...,
for_training=True)`` gives a model encoders and an LLM of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import weakref
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from model import lora
from model.chat.generate import GenerationSettings, load_generation_defaults, save_generation_defaults
from model.chat.prompts import TEMPLATES
from model.config import ConfigError, VideoLlamaConfig
from model.device import pick_device, pick_dtype
from model.llm import load_llm, resolve_precision
from model.video_llama import VideoLlama, build_audio_branch, build_vision_branch, freeze_frozen_parts
from model.weights.convert import ConversionError, check_against, unfuse_qkv_bias

# Model folder: file stem -> modules it holds (ARCHITECTURE.md "Model folder").
COMPONENT_FILES: dict[str, tuple[str, ...]] = {
    "vision_encoder": ("vision_encoder", "ln_vision", "image_qformer"),
    "audio_encoder": ("audio_encoder",),
    "video_adapter": ("frame_position_embedding", "video_qformer", "video_proj"),
    "audio_adapter": ("audio_position_embedding", "audio_qformer", "audio_proj"),
}
# branch -> (frozen encoder file, trainable adapter file)
BRANCH_FILES: dict[str, tuple[str, str]] = {
    "vision": ("vision_encoder", "video_adapter"),
    "audio": ("audio_encoder", "audio_adapter"),
}
HASH_KEY = "sha256"  # safetensors metadata entry holding the tensors' content hash
HOW_TO_GET = ("create the model folder with `python launch.py convert --preset NAME ... --out DIR` "
              "(official files) or fetch the official files first with `python launch.py download NAME`")


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message says why and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file's pickle asks to import or call something other than tensors and plain data."""


class CorruptCheckpointError(CheckpointError):
    """Empty, truncated, or not a checkpoint at all."""


class MissingWeightsError(FileNotFoundError):
    """A weight file or model folder is not where the config says."""


# -- reading single files -------------------------------------------------------------
def load_pth(path: str | Path) -> dict:
    """Load a ``.pth`` with ``weights_only=True``; memory-mapped when it is a zip-format file."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"checkpoint {path} does not exist; {HOW_TO_GET}")
    size = path.stat().st_size
    if size == 0:
        raise CorruptCheckpointError(f"{path} is empty (0 bytes): an interrupted download? Fetch it again")
    with path.open("rb") as f:
        head = f.read(2)
    if zipfile.is_zipfile(path):
        mmap = True
    elif head == b"PK":
        raise CorruptCheckpointError(f"{path} is a truncated zip checkpoint ({size} bytes): fetch it again")
    elif head[:1] == b"\x80":
        mmap = False  # legacy (pre-zip) torch.save format: readable, but not memory-mappable
    else:
        raise CorruptCheckpointError(f"{path} is not a PyTorch checkpoint (starts with {head!r}); "
                                     "check that the right file was passed")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Weights only load failed" in text:
            detail = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), "")
            raise UnsafeCheckpointError(
                f"refused to load {path}: its pickle would import or run code, not just tensors "
                f"({detail or 'non-tensor object'}). Nothing was executed. Get the file from the official "
                "source; never load it with weights_only=False unless you trust it") from None
        raise CorruptCheckpointError(f"{path} is not a readable checkpoint ({text[:200]})") from err
    except (RuntimeError, EOFError, KeyError, OSError, ValueError) as err:
        raise CorruptCheckpointError(f"{path} could not be read ({type(err).__name__}: {str(err)[:200]}); "
                                     "it may be truncated or not a checkpoint: fetch it again") from err


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Memory-mapped safetensors read with typed errors."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weight file {path} does not exist; {HOW_TO_GET}")
    try:
        return load_file(path)
    except SafetensorError as err:
        raise CorruptCheckpointError(_not_safetensors(path, err)) from None


def _not_safetensors(path: Path, err: Exception) -> str:
    return (f"{path} is not a valid safetensors file ({err}); it may be truncated or empty: "
            "re-create the model folder with `python launch.py convert`")


def check_finite(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights holding NaN or Inf (a diverged training run, a damaged file), naming the tensor."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CorruptCheckpointError(f"{path}: tensor {key} holds {bad} NaN/Inf value(s); the weights are "
                                         "unusable (a diverged training run?): use an earlier checkpoint or retrain")


def model_dict(obj: object, path: str | Path) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a LAVIS training checkpoint (optimizer etc. are ignored)."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
        keys = list(obj)[:6] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path} has no 'model' state dict (found {keys}); expected a Video-LLaMA or "
                              "BLIP-2 training checkpoint")
    return dict(obj["model"])


def flat_dict(obj: object, path: str | Path) -> dict[str, torch.Tensor]:
    """A plain ``{name: tensor}`` checkpoint (EVA, ImageBind)."""
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a flat state dict of tensors; is it the right file?")
    return dict(obj)


# -- fingerprints --------------------------------------------------------------------
def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """Content hash over names, dtypes, shapes and bytes, in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def file_fingerprint(path: str | Path) -> str:
    """A stable id of a component file's weights: the content hash stored at save time.

    Files written by ``save_state_folder`` carry it in their header, so this reads only the
    header; for any other file the whole file is hashed once.
    """
    path = Path(path)
    try:
        with safe_open(path, framework="pt") as f:
            stored = (f.metadata() or {}).get(HASH_KEY)
    except SafetensorError as err:
        raise CorruptCheckpointError(_not_safetensors(path, err)) from None
    if stored is None:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
        stored = h.hexdigest()
    return f"{path.stem}-{stored[:16]}"


# -- writing the model folder -------------------------------------------------------------
def split_components(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Group our-keyed tensors by component file; LLM keys and unknown keys are an error."""
    owner = {module: stem for stem, modules in COMPONENT_FILES.items() for module in modules}
    out: dict[str, dict[str, torch.Tensor]] = {}
    stray = []
    for key, tensor in state.items():
        stem = owner.get(key.split(".", 1)[0])
        if stem is None:
            stray.append(key)
        else:
            out.setdefault(stem, {})[key] = tensor
    if stray:
        raise CheckpointError(f"keys that belong to no component file: {sorted(stray)[:8]}")
    return out


def save_state_folder(state: Mapping[str, torch.Tensor], cfg: VideoLlamaConfig, out_dir: str | Path,
                      generation: GenerationSettings | None = None) -> Path:
    """Write ``config.json``, ``generation_config.json`` (``generation``; default: the original
    demo's settings) and one safetensors file per component present in ``state``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stem, tensors in split_components(state).items():
        tensors = {k: t.detach().cpu().contiguous() for k, t in tensors.items()}
        save_file(tensors, out / f"{stem}.safetensors", metadata={"format": "pt", HASH_KEY: tensors_sha256(tensors)})
    cfg.to_json(out / "config.json")
    save_generation_defaults(generation or GenerationSettings(), out)
    return out


def save_model_folder(model: VideoLlama, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Save a model's encoders and adapters (not its LLM: ``config.llm`` says where that is), its
    LoRA adapter of the LLM if it has one, and its generation defaults. ``dtype``: cast every
    floating-point tensor (the released form is fp16)."""
    if model.config is None:
        raise ValueError("model.config is not set; build the model with build_model or load_model")
    state = {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
             for k, v in model.state_dict().items() if not k.startswith("llm.")}
    cfg = dataclasses.replace(model.config, llm_adapter=lora.ADAPTER_DIR if model.llm_adapter else None)
    out = save_state_folder(state, cfg, out_dir, model.generation_defaults)
    if model.llm_adapter:
        lora.save_adapter(model.llm, model.llm_adapter, lora.settings_of(model.llm, model.llm_adapter),
                          out / lora.ADAPTER_DIR, dtype=dtype)
    return out


# -- loading the model folder -------------------------------------------------------------
# (fingerprint, device, dtype) -> module, and (llm source, precision, device) -> (llm, tokenizer).
# Weak values: a shared module lives as long as some loaded model still uses it.
_ENCODER_CACHE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_SHARED_VERSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # shared module -> its tensors' versions
_LLM_CACHE: dict[tuple, tuple[weakref.ref, object]] = {}


def _load_component(modules: dict[str, nn.Module], path: Path, device: torch.device, dtype: torch.dtype,
                    trainable: bool = False) -> None:
    """Assign ``path``'s tensors into meta-built ``modules`` (strict), then move/cast them.
    Trainable parts (small) are also checked for NaN/Inf."""
    state = unfuse_qkv_bias(load_safetensors(path))  # folders written before EVA's q_bias / v_bias split
    if trainable:
        check_finite(state, path)
    expected = {f"{name}.{k}": v.shape for name, m in modules.items() for k, v in m.state_dict().items()}
    try:
        check_against(state, expected, what=f"model folder file {path.name}")
    except ConversionError as err:
        raise CheckpointError(f"{err}; re-create the folder with `python launch.py convert`") from None
    for name, module in modules.items():
        prefix = f"{name}."
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(part, strict=True, assign=True)
        module.to(device=device, dtype=dtype)


def _frozen_modules(cfg: VideoLlamaConfig, branch: str, path: Path, device: torch.device,
                    dtype: torch.dtype, own: bool = False) -> tuple[dict[str, nn.Module], str]:
    """The frozen encoder modules of ``branch``: from the cache when the same weights are loaded.

    Shared modules are frozen and in eval mode. A cached module that was changed since (a
    parameter unfrozen or written in place, as an optimizer step does: its version counter
    moved) is not handed out again; a fresh copy is read and cached instead. ``own``: read a
    copy that is not shared (a load for training).
    """
    fingerprint = file_fingerprint(path)
    names = COMPONENT_FILES[BRANCH_FILES[branch][0]]
    keys = [(fingerprint, name, str(device), dtype) for name in names]
    cached = [None if own else _ENCODER_CACHE.get(k) for k in keys]
    if all(m is not None and _untouched(m) for m in cached):
        return dict(zip(names, cached, strict=True)), fingerprint
    with torch.device("meta"):
        built = build_vision_branch(cfg) if branch == "vision" else build_audio_branch(cfg)
    modules = {name: built[name] for name in names}
    _load_component(modules, path, device, dtype)
    for module in modules.values():
        module.requires_grad_(False).eval()
    if not own:
        for key, name in zip(keys, names, strict=True):
            _ENCODER_CACHE[key] = modules[name]
            _SHARED_VERSIONS[modules[name]] = _versions(modules[name])
    return modules, fingerprint


def _versions(module: nn.Module) -> tuple[int, ...]:
    """In-place writes to a tensor (optimizer steps, ``copy_`` under no_grad) bump its ``_version``."""
    return tuple(t._version for t in (*module.parameters(), *module.buffers()))


def _untouched(module: nn.Module) -> bool:
    """Still as loaded: every parameter frozen and no tensor written in place since."""
    return (not any(p.requires_grad for p in module.parameters())
            and _SHARED_VERSIONS.get(module) == _versions(module))


def _adapter_modules(cfg: VideoLlamaConfig, branch: str, path: Path, device: torch.device) -> dict[str, nn.Module]:
    with torch.device("meta"):
        built = build_vision_branch(cfg) if branch == "vision" else build_audio_branch(cfg)
    modules = {name: built[name] for name in COMPONENT_FILES[BRANCH_FILES[branch][1]]}
    _load_component(modules, path, device, pick_dtype(device, "adapter"), trainable=True)
    return modules


def _shared_llm(cfg: VideoLlamaConfig, folder: Path, precision: str, device: torch.device, own: bool = False):
    """``load_llm`` once per (weights, precision, device) while some model still holds it;
    ``own``: a copy of its own, neither taken from nor put in the cache (a load for training)."""
    if cfg.llm.hf_path:
        source = str((folder / cfg.llm.hf_path).resolve())
    else:
        source = f"{cfg.llm.gguf_package}:{cfg.llm.gguf_file}"
    if own:
        return load_llm(cfg.llm, root=folder, precision=precision, device=device)
    key = (source, resolve_precision(precision, device), str(device))
    if key in _LLM_CACHE:
        ref, tokenizer = _LLM_CACHE[key]
        if ref() is not None:
            return ref(), tokenizer
    llm, tokenizer = load_llm(cfg.llm, root=folder, precision=precision, device=device)
    _LLM_CACHE[key] = (weakref.ref(llm), tokenizer)
    return llm, tokenizer


def load_model(folder: str | Path, precision: str = "auto", device: str | torch.device | None = None,
               branches: tuple[str, ...] | list[str] | None = None, for_training: bool = False) -> VideoLlama:
    """Load a model folder written by ``launch.py convert`` or by training.

    Args:
        folder: holds ``config.json`` and the component safetensors files.
        precision: LLM precision, one of ``model.llm.PRECISIONS`` (``"auto"``: NF4 on CUDA, fp32 on CPU).
        device: default from ``pick_device()``; encoders use fp16 on CUDA, fp32 on CPU.
        branches: subset of ``("vision", "audio")``; default: those enabled in the config.
        for_training: give this model its own frozen encoders and LLM. Otherwise they are shared
            with other models loaded from the same weights (serving, comparing checkpoints):
            frozen, in eval mode, and never handed out again once changed.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise MissingWeightsError(f"{folder} is not a model folder (no config.json); {HOW_TO_GET}")
    cfg = VideoLlamaConfig.from_file(folder / "config.json")
    if cfg.llm.template not in TEMPLATES:
        raise ConfigError(f"{folder / 'config.json'}: llm.template {cfg.llm.template!r} is not a known prompt "
                          f"template (known: {', '.join(sorted(TEMPLATES))})")
    enabled = [b for b, on in (("vision", cfg.use_vision), ("audio", cfg.use_audio)) if on]
    branches = list(enabled if branches is None else branches)
    unknown = [b for b in branches if b not in enabled]
    if unknown:
        raise ValueError(f"branches {unknown} are not available in {folder} (enabled: {enabled})")
    cfg.use_vision, cfg.use_audio = "vision" in branches, "audio" in branches
    for branch in branches:
        for stem in BRANCH_FILES[branch]:
            if not (folder / f"{stem}.safetensors").is_file():
                raise MissingWeightsError(f"{folder} has no {stem}.safetensors (needed for the {branch} branch); "
                                          f"{HOW_TO_GET}, or load with branches excluding {branch!r}")
    device = pick_device(device)
    parts: dict[str, nn.Module] = {}
    fingerprints: dict[str, str] = {}
    for branch in branches:
        encoder_file, adapter_file = (folder / f"{stem}.safetensors" for stem in BRANCH_FILES[branch])
        frozen, fingerprints[branch] = _frozen_modules(cfg, branch, encoder_file, device,
                                                       pick_dtype(device, "encoder"), own=for_training)
        parts.update(frozen)
        parts.update(_adapter_modules(cfg, branch, adapter_file, device))
    llm, tokenizer = _shared_llm(cfg, folder, precision, device, own=for_training)
    model = VideoLlama(**parts, llm=llm)
    model.config, model.tokenizer, model.fingerprints = cfg, tokenizer, fingerprints
    if cfg.llm_adapter:  # injected into the shared LLM under a name of its own, used on media prompts
        model.llm_adapter = lora.load_adapter(llm, folder / cfg.llm_adapter, read_weights=load_safetensors)
    model.generation_defaults = load_generation_defaults(folder)
    return freeze_frozen_parts(model).eval()
