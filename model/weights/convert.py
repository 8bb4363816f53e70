"""Official Video-LLaMA checkpoint keys -> our keys: pure functions, no model, no I/O.

Each source file has a mapping table from its key template (layer numbers as ``{}``) to our
key template (see the key table in ARCHITECTURE.md). ``get_mapped_key`` raises on a key the
table does not know, so a file of the wrong kind fails loudly instead of loading half-way.
Keys that are dropped on purpose are listed here, each with its reason:

- EVA ``blocks.{depth}`` (exactly one block, ``EVA_LEFTOVER_BLOCKS``): BLIP-2 builds 39 of
  EVA-CLIP-g's 40 blocks (it reads the penultimate layer), so the 40th block of the released
  ``eva_vit_g.pth`` is never used. A block beyond that one is not the released file: it raises;
- BLIP-2: the T5 side (``t5_proj.*``, ``t5_model.*``) and the Q-Former's text parts
  (``Qformer.cls.*``, word/position embeddings, each layer's text FFN ``intermediate`` /
  ``output``), which Video-LLaMA deletes before loading;
- ImageBind: every modality except audio (explicit prefix list ``IMAGEBIND_OTHER_MODALITIES``);
  the audio postprocessor's fixed ``log_logit_scale`` buffer is *checked* to equal
  log(logit_scale) rather than dropped silently, since our encoder uses the config value;
- ImageBind vision (``convert_imagebind_vision``, the training-time teacher of the audio
  branch): every modality except vision (explicit prefix list ``IMAGEBIND_NOT_VISION``),
  including audio's ``log_logit_scale`` (the vision postprocessor has no scale at all);
- Video-LLaMA adapter files: buffers the original saved with the trainable weights
  (``*.embeddings.position_ids``, ``llama_model...rotary_emb.inv_freq``, ImageBind's text
  ``mask`` and fixed logit scales). Optimizer state, ``config``, ``scaler`` and ``epoch``
  sit outside the ``model`` dict and are never read.

Anything else raises ``ConversionError`` naming the keys; so does a wrong shape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import torch

StateDict = dict[str, torch.Tensor]


class ConversionError(ValueError):
    """An official checkpoint does not have the keys or shapes we expect."""


# -- key tables ------------------------------------------------------------------------
# EVA ViT-g (LAVIS ``eva_vit.py``): the same names, ``attn.q_bias`` / ``attn.v_bias`` included.
EVA_TO_OURS: dict[str, str] = {
    "cls_token": "vision_encoder.cls_token",
    "pos_embed": "vision_encoder.pos_embed",
    "patch_embed.proj.weight": "vision_encoder.patch_embed.weight",
    "patch_embed.proj.bias": "vision_encoder.patch_embed.bias",
    **{f"blocks.{{}}.{name}.{p}": f"vision_encoder.blocks.{{}}.{name}.{p}"
       for name in ("norm1", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
       for p in ("weight", "bias")},
    **{f"blocks.{{}}.attn.{name}": f"vision_encoder.blocks.{{}}.attn.{name}"
       for name in ("qkv.weight", "q_bias", "v_bias")},
}

# One BERT layer of the LAVIS Q-Former (query path) -> one layer of ours (model/qformer.py).
QFORMER_LAYER_TO_OURS: dict[str, str] = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "self_attn_norm",
    "crossattention.self.query": "cross_attn.q_proj",
    "crossattention.self.key": "cross_attn.k_proj",
    "crossattention.self.value": "cross_attn.v_proj",
    "crossattention.output.dense": "cross_attn.out_proj",
    "crossattention.output.LayerNorm": "cross_attn_norm",
    "intermediate_query.dense": "mlp.fc1",
    "output_query.dense": "mlp.fc2",
    "output_query.LayerNorm": "mlp_norm",
}


def qformer_table(bert: str, queries: str, ours: str) -> dict[str, str]:
    """Mapping for one Q-Former: ``{bert}.bert.*`` and its query tokens ``queries``."""
    table = {
        queries: f"{ours}.query_tokens",
        f"{bert}.bert.embeddings.LayerNorm.weight": f"{ours}.input_norm.weight",
        f"{bert}.bert.embeddings.LayerNorm.bias": f"{ours}.input_norm.bias",
    }
    for theirs, mine in QFORMER_LAYER_TO_OURS.items():
        for p in ("weight", "bias"):
            table[f"{bert}.bert.encoder.layer.{{}}.{theirs}.{p}"] = f"{ours}.layers.{{}}.{mine}.{p}"
    return table


BLIP2_TO_OURS: dict[str, str] = {
    **qformer_table("Qformer", "query_tokens", "image_qformer"),
    "ln_vision.weight": "ln_vision.weight",
    "ln_vision.bias": "ln_vision.bias",
}

# Video-LLaMA VL / AL adapter files (``model`` dict of VL_*.pth, AL_*.pth, Series .pth).
VIDEOLLAMA_TO_OURS: dict[str, str] = {
    **qformer_table("video_Qformer", "video_query_tokens", "video_qformer"),
    "video_frame_position_embedding.weight": "frame_position_embedding.weight",
    "llama_proj.weight": "video_proj.weight",
    "llama_proj.bias": "video_proj.bias",
    **qformer_table("audio_Qformer", "audio_query_tokens", "audio_qformer"),
    "audio_position_embedding.weight": "audio_position_embedding.weight",
    "audio_llama_proj.weight": "audio_proj.weight",
    "audio_llama_proj.bias": "audio_proj.bias",
}

IMAGEBIND_TO_OURS: dict[str, str] = {
    "modality_preprocessors.audio.cls_token": "audio_encoder.cls_token",
    "modality_preprocessors.audio.rgbt_stem.proj.weight": "audio_encoder.patch_embed.weight",
    "modality_preprocessors.audio.rgbt_stem.norm_layer.weight": "audio_encoder.patch_norm.weight",
    "modality_preprocessors.audio.rgbt_stem.norm_layer.bias": "audio_encoder.patch_norm.bias",
    "modality_preprocessors.audio.pos_embedding_helper.pos_embed": "audio_encoder.pos_embed",
    # nn.MultiheadAttention on both sides: the same tensors under the same names.
    **{f"modality_trunks.audio.blocks.{{}}.attn.{n}": f"audio_encoder.blocks.{{}}.attn.{n}"
       for n in ("in_proj_weight", "in_proj_bias", "bias_k", "bias_v", "out_proj.weight", "out_proj.bias")},
    **{f"modality_trunks.audio.blocks.{{}}.{theirs}.{p}": f"audio_encoder.blocks.{{}}.{mine}.{p}"
       for theirs, mine in (("norm_1", "norm1"), ("norm_2", "norm2"), ("mlp.fc1", "mlp.fc1"),
                            ("mlp.fc2", "mlp.fc2"))
       for p in ("weight", "bias")},
    # The head is nn.Sequential(LayerNorm, SelectElement, Linear): indices 0 and 2 are exact keys.
    "modality_heads.audio.0.weight": "audio_encoder.head_norm.weight",
    "modality_heads.audio.0.bias": "audio_encoder.head_norm.bias",
    "modality_heads.audio.2.weight": "audio_encoder.head_proj.weight",
}
# ImageBind's vision path -> ImageBindVisionEncoder's own keys (model/imagebind_vision.py). No
# prefix: the encoder is a training-time teacher, not part of VideoLlama or the model folder.
IMAGEBIND_VISION_TO_OURS: dict[str, str] = {
    "modality_preprocessors.vision.cls_token": "cls_token",
    # rgbt_stem.proj is nn.Sequential(PadIm2Video, Conv3d): the Conv3d is index 1.
    "modality_preprocessors.vision.rgbt_stem.proj.1.weight": "patch_embed.weight",
    "modality_preprocessors.vision.pos_embedding_helper.pos_embed": "pos_embed",
    # pre_transformer_layer is nn.Sequential(LayerNorm, EinOpsRearrange).
    "modality_trunks.vision.pre_transformer_layer.0.weight": "pre_norm.weight",
    "modality_trunks.vision.pre_transformer_layer.0.bias": "pre_norm.bias",
    # nn.MultiheadAttention without bias_kv on both sides.
    **{f"modality_trunks.vision.blocks.{{}}.attn.{n}": f"blocks.{{}}.attn.{n}"
       for n in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")},
    **{f"modality_trunks.vision.blocks.{{}}.{theirs}.{p}": f"blocks.{{}}.{mine}.{p}"
       for theirs, mine in (("norm_1", "norm1"), ("norm_2", "norm2"), ("mlp.fc1", "mlp.fc1"),
                            ("mlp.fc2", "mlp.fc2"))
       for p in ("weight", "bias")},
    "modality_heads.vision.0.weight": "head_norm.weight",
    "modality_heads.vision.0.bias": "head_norm.bias",
    "modality_heads.vision.2.weight": "head_proj.weight",
    # The vision postprocessor is a parameter-free Normalize: it has no keys.
}
IMAGEBIND_LOGIT_SCALE = "modality_postprocessors.audio.1.log_logit_scale"
IMAGEBIND_OTHER_MODALITIES = tuple(
    f"modality_{part}.{m}." for part in ("preprocessors", "trunks", "heads", "postprocessors")
    for m in ("vision", "text", "depth", "thermal", "imu")
)
IMAGEBIND_NOT_VISION = tuple(
    f"modality_{part}.{m}." for part in ("preprocessors", "trunks", "heads", "postprocessors")
    for m in ("audio", "text", "depth", "thermal", "imu")
)

# Dropped on purpose (see module docstring). Prefixes, and templates with ``{}`` layers.
BLIP2_IGNORED_PREFIXES = ("t5_proj.", "t5_model.", "Qformer.cls.", "Qformer.bert.embeddings.word_embeddings.",
                          "Qformer.bert.embeddings.position_embeddings.", "Qformer.bert.embeddings.position_ids")
BLIP2_IGNORED_TEMPLATES = {f"Qformer.bert.encoder.layer.{{}}.{m}.{p}" for m in
                           ("intermediate.dense", "output.dense", "output.LayerNorm") for p in ("weight", "bias")}
VIDEOLLAMA_IGNORED_TEMPLATES = {
    "Qformer.bert.embeddings.position_ids", "video_Qformer.bert.embeddings.position_ids",
    "audio_Qformer.bert.embeddings.position_ids", "llama_model.model.layers.{}.self_attn.rotary_emb.inv_freq",
    "audio_encoder.modality_preprocessors.text.mask",
    *(f"audio_encoder.modality_postprocessors.{m}.{{}}.log_logit_scale" for m in ("text", "depth", "thermal", "imu")),
}
VIDEOLLAMA_LOGIT_SCALE = "audio_encoder." + IMAGEBIND_LOGIT_SCALE


# Blocks of the released eva_vit_g.pth beyond the depth BLIP-2 builds: its 40th (EVA-CLIP-g's last).
EVA_LEFTOVER_BLOCKS = 1
# Our model folders written before ``q_bias`` / ``v_bias`` were parameters of their own held one
# fused bias, [q_bias, k_bias, v_bias]; ``unfuse_qkv_bias`` reads them.
LEGACY_FUSED_QKV_BIAS = "vision_encoder.blocks.{}.attn.qkv.bias"


# -- key mapping -----------------------------------------------------------------------
_LAYER_NUMBER = re.compile(r"(?<=\.)\d+(?=\.|$)")


def key_template(key: str) -> tuple[str, list[str]]:
    """``"blocks.3.attn.proj.weight"`` -> ``("blocks.{}.attn.proj.weight", ["3"])``."""
    return _LAYER_NUMBER.sub("{}", key), _LAYER_NUMBER.findall(key)


def get_mapped_key(key: str, table: Mapping[str, str]) -> str:
    """Our key for an original ``key``: exact match first, then by layer template."""
    if key in table:
        return table[key]
    template, numbers = key_template(key)
    if template not in table:
        raise ConversionError(f"unknown checkpoint key {key!r} (no rule for {template!r})")
    return table[template].format(*numbers)


def _is_ignored(key: str, prefixes: Iterable[str] = (), templates: Iterable[str] = ()) -> bool:
    return key.startswith(tuple(prefixes)) or key in templates or key_template(key)[0] in templates


def _map_all(sd: Mapping[str, torch.Tensor], table: Mapping[str, str], source: str) -> StateDict:
    """Rename every key of ``sd`` by ``table``; all unknown keys are reported together."""
    out: StateDict = {}
    unknown = []
    for key, tensor in sd.items():
        try:
            out[get_mapped_key(key, table)] = tensor
        except ConversionError:
            unknown.append(key)
    if unknown:
        raise ConversionError(f"{source}: {len(unknown)} unexpected keys, e.g. {sorted(unknown)[:8]}; "
                              "is this the right file for this argument?")
    return out


# -- tensor surgery --------------------------------------------------------------------
def unfuse_qkv_bias(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A model folder file with fused ``attn.qkv.bias`` (3W,) -> ``attn.q_bias`` and ``attn.v_bias`` (W,).

    Other keys pass unchanged. The middle third, a key bias, is dropped: EVA has none, and it
    cannot change attention (it adds ``q . b`` to every score of a query, which softmax
    ignores), so folders whose training let it move load to the same outputs.
    """
    out: StateDict = {}
    for key, tensor in state.items():
        if key_template(key)[0] != LEGACY_FUSED_QKV_BIAS:
            out[key] = tensor
            continue
        if tensor.ndim != 1 or tensor.numel() % 3:
            raise ConversionError(f"{key} has shape {tuple(tensor.shape)}; a fused qkv bias is (3 * width,)")
        q_bias, _, v_bias = tensor.chunk(3)  # [q; k; v] rows of qkv.weight
        prefix = key[: -len("qkv.bias")]
        out[prefix + "q_bias"], out[prefix + "v_bias"] = q_bias.clone(), v_bias.clone()
    return out


def check_logit_scale(value: torch.Tensor, expected_scale: float, key: str) -> None:
    """The audio postprocessor's buffer must be log(scale): our encoder multiplies by the config value."""
    if value.numel() != 1 or not math.isclose(float(value), math.log(expected_scale), rel_tol=1e-4):
        raise ConversionError(f"{key} is {value.flatten()[:4].tolist()}, expected log({expected_scale}) = "
                              f"{math.log(expected_scale):.6f}; this file's audio scaling differs from "
                              "the config's audio.logit_scale")


# -- one converter per source file ------------------------------------------------------
def convert_eva(sd: Mapping[str, torch.Tensor], depth: int) -> StateDict:
    """``eva_vit_g.pth`` (flat) -> ``vision_encoder.*``.

    Block ``depth`` (the released file's 40th, which BLIP-2 does not build) is dropped; a key
    of any block after it raises, naming the first such key: that file is not the one the
    preset expects (another EVA, or a preset whose ``vision.depth`` is wrong).
    """
    kept: StateDict = {}
    beyond: list[tuple[int, str]] = []
    for key, tensor in sd.items():
        _, numbers = key_template(key)
        block = int(numbers[0]) if key.startswith("blocks.") and numbers else -1
        if block >= depth + EVA_LEFTOVER_BLOCKS:
            beyond.append((block, key))
        elif block < depth:
            kept[key] = tensor
        # else: the documented leftover block; BLIP-2 reads block depth-1's output
    if beyond:
        last = max(b for b, _ in beyond)
        raise ConversionError(
            f"EVA ViT checkpoint: unexpected key {min(beyond)[1]!r}: the file has blocks up to {last}, but the "
            f"model builds {depth} (0-{depth - 1}) and the released eva_vit_g.pth has only one more (block "
            f"{depth}, unused); is this the right file, and does the preset's vision.depth match it?")
    return _map_all(kept, EVA_TO_OURS, "EVA ViT checkpoint")


def convert_blip2(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """``blip2_pretrained_flant5xxl.pth`` ``model`` dict -> ``image_qformer.*``, ``ln_vision.*``."""
    kept = {k: t for k, t in sd.items()
            if not _is_ignored(k, BLIP2_IGNORED_PREFIXES, BLIP2_IGNORED_TEMPLATES)}
    return _map_all(kept, BLIP2_TO_OURS, "BLIP-2 checkpoint")


def convert_imagebind_audio(sd: Mapping[str, torch.Tensor], logit_scale: float) -> StateDict:
    """``imagebind_huge.pth`` (flat) -> ``audio_encoder.*``; other modalities dropped."""
    kept = {}
    for key, tensor in sd.items():
        if key == IMAGEBIND_LOGIT_SCALE:
            check_logit_scale(tensor, logit_scale, key)
        elif not key.startswith(IMAGEBIND_OTHER_MODALITIES):
            kept[key] = tensor
    return _map_all(kept, IMAGEBIND_TO_OURS, "ImageBind checkpoint")


def convert_imagebind_vision(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """``imagebind_huge.pth`` (flat) -> ``ImageBindVisionEncoder`` keys; other modalities dropped.

    The result loads with ``ImageBindVisionEncoder.load_state_dict`` (it has no prefix).
    """
    kept = {k: t for k, t in sd.items() if not k.startswith(IMAGEBIND_NOT_VISION)}
    return _map_all(kept, IMAGEBIND_VISION_TO_OURS, "ImageBind checkpoint (vision)")


def convert_videollama(sd: Mapping[str, torch.Tensor], logit_scale: float = 20.0) -> StateDict:
    """A VL/AL/Series file's ``model`` dict -> our adapter keys (video and/or audio)."""
    kept = {}
    for key, tensor in sd.items():
        if key == VIDEOLLAMA_LOGIT_SCALE:
            check_logit_scale(tensor, logit_scale, key)
        elif not _is_ignored(key, templates=VIDEOLLAMA_IGNORED_TEMPLATES):
            kept[key] = tensor
    return _map_all(kept, VIDEOLLAMA_TO_OURS, "Video-LLaMA checkpoint")


def merge(*parts: tuple[str, Mapping[str, torch.Tensor]]) -> StateDict:
    """Union of converted dicts; a key supplied by two files is an error naming both."""
    out: StateDict = {}
    owner: dict[str, str] = {}
    for name, part in parts:
        for key, tensor in part.items():
            if key in out:
                raise ConversionError(f"{key!r} is in both {owner[key]} and {name}; pass each branch once")
            out[key], owner[key] = tensor, name
    return out


# -- checks against our model --------------------------------------------------------------
def check_against(converted: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size | tuple],
                  what: str = "model") -> None:
    """Exact key set and shapes, or a ``ConversionError`` naming every offending key.

    Args:
        converted: our-keyed tensors from the converters above.
        expected: key -> shape, e.g. from our model's ``state_dict()`` on the meta device.
    """
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = [f"{k}: expected {tuple(expected[k])}, found {tuple(converted[k].shape)}"
             for k in sorted(set(expected) & set(converted))
             if tuple(converted[k].shape) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:6]}): a source file was not given "
                        "or is from another model")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:6]})")
    if wrong:
        problems.append(f"{len(wrong)} wrong shapes: " + "; ".join(wrong[:6]) +
                        " (does the preset match the checkpoint, e.g. 7B vs 13B?)")
    if problems:
        raise ConversionError(f"converted weights do not fit the {what}: " + " | ".join(problems))
