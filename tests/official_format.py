"""Write state dicts with the ORIGINAL key names and layouts of the released files.

Used by the converter tests: the tiny preset gives small random files that load into the tiny
model; the full-size presets give meta tensors for key and shape checks without any weights.
Key names and shapes follow ``shared/reference/videollama.md`` section 3 and the public
sources (LAVIS ``eva_vit.py`` / ``Qformer.py``, ImageBind ``imagebind_model.py``); the
layouts are the original ones (EVA's separate ``q_bias``/``v_bias``, BERT-named Q-Former
layers, ImageBind's ``modality_*`` nesting), plus the extra keys and buffers those files
carry, so that the converter's drop lists are exercised too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from model.config import AudioConfig, ImageBindVisionConfig, QFormerConfig, VideoLlamaConfig, VisionConfig

Make = Callable[[tuple[int, ...]], torch.Tensor]
StateDict = dict[str, torch.Tensor]


def random_maker(seed: int = 0, std: float = 0.2) -> Make:
    gen = torch.Generator().manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=gen) * std


def meta_maker() -> Make:
    return lambda shape: torch.empty(shape, device="meta")


def eva_state_dict(cfg: VisionConfig, make: Make, extra_blocks: int = 1) -> StateDict:
    """``eva_vit_g.pth``: flat EVA keys, ``depth + extra_blocks`` blocks (EVA-CLIP-g has 40)."""
    W, M = cfg.width, cfg.mlp_dim
    sd = {"cls_token": make((1, 1, W)), "pos_embed": make((1, 1 + cfg.num_patches, W)),
          "patch_embed.proj.weight": make((W, 3, cfg.patch_size, cfg.patch_size)),
          "patch_embed.proj.bias": make((W,))}
    for i in range(cfg.depth + extra_blocks):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": make((W,)), b + "norm1.bias": make((W,)),
                   b + "attn.qkv.weight": make((3 * W, W)),  # no bias tensor: q_bias / v_bias instead
                   b + "attn.q_bias": make((W,)), b + "attn.v_bias": make((W,)),
                   b + "attn.proj.weight": make((W, W)), b + "attn.proj.bias": make((W,)),
                   b + "norm2.weight": make((W,)), b + "norm2.bias": make((W,)),
                   b + "mlp.fc1.weight": make((M, W)), b + "mlp.fc1.bias": make((M,)),
                   b + "mlp.fc2.weight": make((W, M)), b + "mlp.fc2.bias": make((W,))})
    return sd


def _linear(sd: StateDict, key: str, out_dim: int, in_dim: int, make: Make) -> None:
    sd[key + ".weight"] = make((out_dim, in_dim))
    sd[key + ".bias"] = make((out_dim,))


def _norm(sd: StateDict, key: str, dim: int, make: Make) -> None:
    sd[key + ".weight"] = make((dim,))
    sd[key + ".bias"] = make((dim,))


def qformer_state_dict(cfg: QFormerConfig, bert: str, queries: str, make: Make,
                       text_parts: bool = False, vocab: int = 30522, max_pos: int = 512) -> StateDict:
    """A LAVIS ``BertModel`` Q-Former under ``{bert}.bert.*`` plus its query tokens.

    ``text_parts`` adds what BLIP-2's file still holds and Video-LLaMA prunes: word/position
    embeddings, each layer's text FFN and the ``cls`` LM head.
    """
    H, inter, E = cfg.hidden_size, cfg.intermediate_size, cfg.encoder_width
    sd = {queries: make((1, cfg.num_queries, H))}
    emb = f"{bert}.bert.embeddings"
    _norm(sd, emb + ".LayerNorm", H, make)
    sd[emb + ".position_ids"] = torch.arange(max_pos).unsqueeze(0)  # a buffer, int64
    for i in range(cfg.num_layers):
        lay = f"{bert}.bert.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            _linear(sd, f"{lay}.attention.self.{name}", H, H, make)
        _linear(sd, f"{lay}.attention.output.dense", H, H, make)
        _norm(sd, f"{lay}.attention.output.LayerNorm", H, make)
        if i % cfg.cross_attention_freq == 0:
            _linear(sd, f"{lay}.crossattention.self.query", H, H, make)
            _linear(sd, f"{lay}.crossattention.self.key", H, E, make)
            _linear(sd, f"{lay}.crossattention.self.value", H, E, make)
            _linear(sd, f"{lay}.crossattention.output.dense", H, H, make)
            _norm(sd, f"{lay}.crossattention.output.LayerNorm", H, make)
        _linear(sd, f"{lay}.intermediate_query.dense", inter, H, make)
        _linear(sd, f"{lay}.output_query.dense", H, inter, make)
        _norm(sd, f"{lay}.output_query.LayerNorm", H, make)
        if text_parts:
            _linear(sd, f"{lay}.intermediate.dense", inter, H, make)
            _linear(sd, f"{lay}.output.dense", H, inter, make)
            _norm(sd, f"{lay}.output.LayerNorm", H, make)
    if text_parts:
        sd[emb + ".word_embeddings.weight"] = make((vocab, H))
        sd[emb + ".position_embeddings.weight"] = make((max_pos, H))
        _linear(sd, f"{bert}.cls.predictions.transform.dense", H, H, make)
        _norm(sd, f"{bert}.cls.predictions.transform.LayerNorm", H, make)
        sd[f"{bert}.cls.predictions.decoder.weight"] = make((vocab, H))
        sd[f"{bert}.cls.predictions.bias"] = make((vocab,))
    return sd


def blip2_state_dict(cfg: VideoLlamaConfig, make: Make, t5_dim: int = 4096) -> StateDict:
    """``blip2_pretrained_flant5xxl.pth`` ``model`` dict: Q-Former with text parts, ln_vision, t5_proj."""
    sd = qformer_state_dict(cfg.image_qformer, "Qformer", "query_tokens", make, text_parts=True)
    _norm(sd, "ln_vision", cfg.vision.width, make)
    _linear(sd, "t5_proj", t5_dim, cfg.image_qformer.hidden_size, make)
    return sd


def imagebind_vision_state_dict(cfg: ImageBindVisionConfig, make: Make) -> StateDict:
    """The vision modality of ``imagebind_huge.pth`` in full (its normaliser has no keys)."""
    W, M = cfg.width, cfg.mlp_dim
    v = "modality_preprocessors.vision."
    sd = {v + "cls_token": make((1, 1, W)),
          # rgbt_stem.proj = Sequential(PadIm2Video, Conv3d(bias=False)); only index 1 has weights
          v + "rgbt_stem.proj.1.weight": make((W, 3, cfg.num_frames, cfg.patch_size, cfg.patch_size)),
          v + "pos_embedding_helper.pos_embed": make((1, 1 + cfg.num_patches, W))}
    _norm(sd, "modality_trunks.vision.pre_transformer_layer.0", W, make)
    for i in range(cfg.depth):
        b = f"modality_trunks.vision.blocks.{i}."
        sd[b + "attn.in_proj_weight"] = make((3 * W, W))
        sd[b + "attn.in_proj_bias"] = make((3 * W,))  # no bias_k / bias_v: add_bias_kv=False
        _linear(sd, b + "attn.out_proj", W, W, make)
        _norm(sd, b + "norm_1", W, make)
        _norm(sd, b + "norm_2", W, make)
        _linear(sd, b + "mlp.fc1", M, W, make)
        _linear(sd, b + "mlp.fc2", W, M, make)
    _norm(sd, "modality_heads.vision.0", W, make)
    sd["modality_heads.vision.2.weight"] = make((cfg.out_dim, W))
    return sd


def imagebind_state_dict(cfg: AudioConfig, make: Make, vision: ImageBindVisionConfig | None = None) -> StateDict:
    """``imagebind_huge.pth``: the audio modality in full plus a few keys of every other one.

    With ``vision``, the vision modality is written in full too (for the vision converter).
    """
    W, M = cfg.width, cfg.mlp_dim
    a = "modality_preprocessors.audio."
    sd = {a + "cls_token": make((1, 1, W)),
          a + "rgbt_stem.proj.weight": make((W, 1, cfg.kernel_size, cfg.kernel_size)),
          a + "pos_embedding_helper.pos_embed": make((1, 1 + cfg.num_patches, W))}
    _norm(sd, a + "rgbt_stem.norm_layer", W, make)
    for i in range(cfg.depth):
        b = f"modality_trunks.audio.blocks.{i}."
        sd[b + "attn.in_proj_weight"] = make((3 * W, W))
        sd[b + "attn.in_proj_bias"] = make((3 * W,))
        sd[b + "attn.bias_k"] = make((1, 1, W))
        sd[b + "attn.bias_v"] = make((1, 1, W))
        _linear(sd, b + "attn.out_proj", W, W, make)
        _norm(sd, b + "norm_1", W, make)
        _norm(sd, b + "norm_2", W, make)
        _linear(sd, b + "mlp.fc1", M, W, make)
        _linear(sd, b + "mlp.fc2", W, M, make)
    _norm(sd, "modality_heads.audio.0", W, make)
    sd["modality_heads.audio.2.weight"] = make((cfg.out_dim, W))
    sd["modality_postprocessors.audio.1.log_logit_scale"] = torch.tensor(math.log(cfg.logit_scale))
    # Other modalities: representative keys of each kind, all dropped by the converter.
    for m in ("text", "depth", "thermal", "imu"):
        sd[f"modality_trunks.{m}.blocks.0.attn.in_proj_weight"] = make((3 * 8, 8))
        sd[f"modality_heads.{m}.0.weight"] = make((8,))
    if vision is None:
        sd["modality_trunks.vision.blocks.0.attn.in_proj_weight"] = make((3 * 8, 8))
        sd["modality_heads.vision.0.weight"] = make((8,))
        sd["modality_preprocessors.vision.rgbt_stem.proj.1.weight"] = make((8, 3, 2, 14, 14))
    else:
        sd.update(imagebind_vision_state_dict(vision, make))
    sd["modality_preprocessors.text.mask"] = torch.full((77, 77), float("-inf")).triu(1)
    sd["modality_postprocessors.text.1.log_logit_scale"] = torch.tensor(math.log(1 / 0.07))
    for m, scale in (("depth", 5.0), ("thermal", 10.0), ("imu", 5.0)):
        sd[f"modality_postprocessors.{m}.1.log_logit_scale"] = torch.tensor(math.log(scale))
    return sd


def _buffers(cfg: VideoLlamaConfig, with_imagebind: bool) -> StateDict:
    """Buffers the original saved alongside the trainable weights."""
    sd = {f"{q}.bert.embeddings.position_ids": torch.arange(512).unsqueeze(0)
          for q in ("Qformer", "video_Qformer") + (("audio_Qformer",) if with_imagebind else ())}
    half = cfg.llm.hidden_size // cfg.llm.num_heads // 2
    for i in range(cfg.llm.num_layers):
        sd[f"llama_model.model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.rand(half)
    if with_imagebind:
        sd["audio_encoder.modality_preprocessors.text.mask"] = torch.full((77, 77), float("-inf")).triu(1)
        for m, scale in (("audio", cfg.audio.logit_scale), ("depth", 5.0), ("thermal", 10.0), ("imu", 5.0)):
            sd[f"audio_encoder.modality_postprocessors.{m}.1.log_logit_scale"] = torch.tensor(math.log(scale))
    return sd


def vl_state_dict(cfg: VideoLlamaConfig, make: Make) -> StateDict:
    """``VL_*.pth`` ``model`` dict: video Q-Former, frame positions, ``llama_proj``, buffers."""
    H = cfg.video_qformer.hidden_size
    sd = qformer_state_dict(cfg.video_qformer, "video_Qformer", "video_query_tokens", make)
    sd["video_frame_position_embedding.weight"] = make((cfg.max_frame_pos, H))
    _linear(sd, "llama_proj", cfg.llm.hidden_size, H, make)
    sd.update(_buffers(cfg, with_imagebind=False))
    return sd


def al_state_dict(cfg: VideoLlamaConfig, make: Make) -> StateDict:
    """``AL_*.pth`` ``model`` dict: audio Q-Former, audio positions, ``audio_llama_proj``, buffers."""
    H = cfg.audio_qformer.hidden_size
    sd = qformer_state_dict(cfg.audio_qformer, "audio_Qformer", "audio_query_tokens", make)
    sd["audio_position_embedding.weight"] = make((cfg.audio.num_clips, cfg.audio.out_dim))
    _linear(sd, "audio_llama_proj", cfg.llm.hidden_size, H, make)
    sd.update(_buffers(cfg, with_imagebind=True))
    return sd


def training_checkpoint(model_sd: StateDict) -> dict:
    """What ``RunnerBase._save_checkpoint`` writes: ``model`` plus optimizer and friends."""
    first = next(iter(model_sd.values()))
    return {"model": model_sd,
            "optimizer": {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(first),
                                        "exp_avg_sq": torch.zeros_like(first)}},
                          "param_groups": [{"lr": 1e-4, "weight_decay": 0.05, "params": [0]}]},
            "config": {"model": {"arch": "video_llama", "num_query_token": 32}},
            "scaler": {"scale": 65536.0, "growth_factor": 2.0},
            "epoch": 2}


def write_official_files(cfg: VideoLlamaConfig, folder: Path, seed: int = 0) -> dict[str, Path]:
    """Tiny random official-format files in ``folder``; returns name -> path."""
    make = random_maker(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"eva": (folder / "eva_vit_g.pth", eva_state_dict(cfg.vision, make)),
             "blip2": (folder / "blip2_pretrained_flant5xxl.pth", {"model": blip2_state_dict(cfg, make)}),
             "imagebind": (folder / "imagebind_huge.pth", imagebind_state_dict(cfg.audio, make)),
             "vl": (folder / "VL_tiny.pth", training_checkpoint(vl_state_dict(cfg, make))),
             "al": (folder / "AL_tiny.pth", training_checkpoint(al_state_dict(cfg, make)))}
    for path, obj in files.values():
        torch.save(obj, path)
    return {name: path for name, (path, _) in files.items()}
