"""ImageBind vision encoder (the audio branch's training teacher), its converter and config,
and the AL training input path of train/al_visual.py."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import model.weights.convert as conv
import tests.official_format as off
from model.config import PRESETS, ConfigError, ImageBindVisionConfig, VideoLlamaConfig
from model.imagebind_vision import ImageBindVisionEncoder
from tests.reference_math import imagebind_block
from tests.tiny import tiny_model
from train.al_visual import audio_tokens_from_frames, build_teacher, frame_embeddings_for_audio_branch, load_teacher

# Odd sizes catch transposes; out_dim 20 = the tiny preset's audio.out_dim.
TINY_TEACHER = dict(image_size=28, patch_size=7, width=24, depth=2, num_heads=4, mlp_dim=37, out_dim=20)
ADAPTER = ("audio_position_embedding", "audio_qformer", "audio_proj")


def tiny_teacher_cfg() -> ImageBindVisionConfig:
    return ImageBindVisionConfig(**TINY_TEACHER)


def reference_vision(s: dict, cfg: ImageBindVisionConfig, images: torch.Tensor) -> torch.Tensor:
    """ImageBind's vision path in plain tensor ops, including the literal 2-frame padding."""
    W, nh = cfg.width, cfg.num_heads
    clip = images.unsqueeze(2).repeat(1, 1, 2, 1, 1)  # PadIm2Video: (N, 3, 2, H, W)
    x = F.conv3d(clip, s["patch_embed.weight"], stride=(2, cfg.patch_size, cfg.patch_size))  # (N, W, 1, h, w)
    N = x.shape[0]
    x = x.reshape(N, W, -1).permute(0, 2, 1)  # (N, P, W): time, row, column order
    x = torch.cat([s["cls_token"].expand(N, -1, -1), x], dim=1) + s["pos_embed"]
    x = F.layer_norm(x, (W,), s["pre_norm.weight"], s["pre_norm.bias"], eps=1e-6)
    for i in range(cfg.depth):
        x = imagebind_block(s, f"blocks.{i}.", x, nh, bias_kv=False)
    cls = F.layer_norm(x, (W,), s["head_norm.weight"], s["head_norm.bias"], eps=1e-6)[:, 0]
    out = cls @ s["head_proj.weight"].T
    return out / out.norm(dim=-1, keepdim=True)  # no logit scale for vision


def random_teacher(seed: int = 0) -> ImageBindVisionEncoder:
    torch.manual_seed(seed)
    enc = ImageBindVisionEncoder(tiny_teacher_cfg()).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.3)
    return enc


# -- encoder -------------------------------------------------------------------------
def test_matches_reference_math():
    enc, cfg = random_teacher(), tiny_teacher_cfg()
    images = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        want = reference_vision(enc.state_dict(), cfg, images)
        got = enc(images)
    assert got.shape == (3, cfg.out_dim)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(3))


def test_each_image_is_encoded_on_its_own():
    enc = random_teacher()
    images = torch.randn(4, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(enc(images)[2:3], enc(images[2:3]), rtol=1e-5, atol=1e-5)


def test_bad_image_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(N, 3, 28, 28\)"):
        random_teacher()(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="fold frames"):
        random_teacher()(torch.randn(1, 2, 3, 28, 28))


def full_size_param_count() -> int:
    """ViT-H/14 of ImageBind-Huge counted from its architecture, independently of our module."""
    W, M, D, P = 1280, 5120, 32, 256
    stem = W * 3 * 2 * 14 * 14
    block = 2 * 2 * W + (3 * W * W + 3 * W) + (W * W + W) + (M * W + M) + (W * M + W)
    return stem + W + (1 + P) * W + 2 * W + D * block + 2 * W + W * 1024


def test_full_size_on_meta_has_imagebind_huge_shapes():
    cfg = ImageBindVisionConfig()
    with torch.device("meta"):
        enc = ImageBindVisionEncoder(cfg)
    sd = enc.state_dict()
    assert sd["patch_embed.weight"].shape == (1280, 3, 2, 14, 14)
    assert sd["pos_embed"].shape == (1, 257, 1280) and sd["cls_token"].shape == (1, 1, 1280)
    assert sd["head_proj.weight"].shape == (1024, 1280) and "head_proj.bias" not in sd
    assert "patch_embed.bias" not in sd and "blocks.0.attn.bias_k" not in sd
    assert len(enc.blocks) == 32 and enc.blocks[0].attn.num_heads == 16
    assert enc.pre_norm.eps == enc.blocks[0].norm1.eps == enc.head_norm.eps == 1e-6
    n = sum(p.numel() for p in enc.parameters())
    assert n == full_size_param_count() == 632_829_440  # ~633M: the "ViT-H 630M" of the paper


# -- converter -----------------------------------------------------------------------
def test_full_size_official_keys_convert_exactly():
    cfg = ImageBindVisionConfig()
    sd = off.imagebind_state_dict(VideoLlamaConfig().audio, off.meta_maker(), vision=cfg)
    converted = conv.convert_imagebind_vision(sd)
    with torch.device("meta"):
        expected = {k: v.shape for k, v in ImageBindVisionEncoder(cfg).state_dict().items()}
    conv.check_against(converted, expected, what="ImageBind vision encoder")
    # the same file still converts for the audio encoder: the vision keys are dropped there
    audio = conv.convert_imagebind_audio(sd, 20.0)
    assert audio and all(k.startswith("audio_encoder.") for k in audio)


def test_tiny_official_file_loads_and_matches_reference():
    cfg = tiny_teacher_cfg()
    sd = off.imagebind_state_dict(VideoLlamaConfig.from_name("tiny").audio, off.random_maker(3), vision=cfg)
    converted = conv.convert_imagebind_vision(sd)
    assert converted["patch_embed.weight"] is sd["modality_preprocessors.vision.rgbt_stem.proj.1.weight"]
    assert converted["pre_norm.bias"] is sd["modality_trunks.vision.pre_transformer_layer.0.bias"]
    assert converted["blocks.1.norm2.weight"] is sd["modality_trunks.vision.blocks.1.norm_2.weight"]
    assert converted["head_proj.weight"] is sd["modality_heads.vision.2.weight"]
    enc = ImageBindVisionEncoder(cfg).eval()
    enc.load_state_dict(converted, strict=True)
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(enc(images), reference_vision(converted, cfg, images), rtol=1e-4, atol=1e-4)


def test_unknown_vision_keys_raise():
    sd = off.imagebind_vision_state_dict(tiny_teacher_cfg(), off.random_maker())
    sd["modality_trunks.vision.blocks.0.attn.bias_k"] = torch.zeros(1, 1, 24)  # an audio-style trunk
    with pytest.raises(conv.ConversionError, match="bias_k"):
        conv.convert_imagebind_vision(sd)
    sd = off.imagebind_vision_state_dict(tiny_teacher_cfg(), off.random_maker())
    sd["modality_preprocessors.rgbd.cls_token"] = torch.zeros(1, 1, 24)  # not a listed modality
    with pytest.raises(conv.ConversionError, match="rgbd"):
        conv.convert_imagebind_vision(sd)


def test_other_modalities_are_dropped_by_the_listed_prefixes_only():
    sd = off.imagebind_state_dict(VideoLlamaConfig.from_name("tiny").audio, off.random_maker(),
                                  vision=tiny_teacher_cfg())
    dropped = [k for k in sd if not k.startswith(("modality_preprocessors.vision.", "modality_trunks.vision.",
                                                  "modality_heads.vision."))]
    assert dropped and all(k.startswith(conv.IMAGEBIND_NOT_VISION) for k in dropped)
    assert len(conv.convert_imagebind_vision(sd)) == len(sd) - len(dropped)


# -- config ----------------------------------------------------------------------------
def test_config_teacher_is_optional_and_round_trips(tmp_path):
    assert all(VideoLlamaConfig.from_name(n).audio_visual_teacher is None for n in PRESETS)
    assert VideoLlamaConfig.from_dict({"audio_visual_teacher": None}).audio_visual_teacher is None
    full = VideoLlamaConfig.from_dict({"audio_visual_teacher": {}})
    assert full.audio_visual_teacher == ImageBindVisionConfig()
    assert (full.audio_visual_teacher.width, full.audio_visual_teacher.num_patches) == (1280, 256)
    tiny = VideoLlamaConfig.from_dict({**PRESETS["tiny"], "audio_visual_teacher": TINY_TEACHER})
    assert tiny.audio_visual_teacher == tiny_teacher_cfg()
    path = tmp_path / "config.json"
    tiny.to_json(path)
    assert json.loads(path.read_text())["audio_visual_teacher"]["width"] == 24
    assert VideoLlamaConfig.from_file(path) == tiny
    # a config.json written before the field existed still reads
    data = VideoLlamaConfig.from_name("tiny").to_dict()
    del data["audio_visual_teacher"]
    assert VideoLlamaConfig.from_dict(data).audio_visual_teacher is None


def test_config_teacher_errors():
    with pytest.raises(ValueError, match="audio_visual_teacher.out_dim=1024 but audio.out_dim=20"):
        VideoLlamaConfig.from_dict({**PRESETS["tiny"], "audio_visual_teacher": {}})
    with pytest.raises(ConfigError, match="unknown field audio_visual_teacher.widthh"):
        VideoLlamaConfig.from_dict({"audio_visual_teacher": {"widthh": 3}})


# -- AL training input path -----------------------------------------------------------------
def tiny_al_setup():
    model = tiny_model(with_llm=False, audio_visual_teacher=TINY_TEACHER)
    teacher = build_teacher(model.config, device="cpu")
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_(0, 0.3)
    return model, teacher


def test_frame_embeddings_are_per_frame_teacher_outputs():
    _, teacher = tiny_al_setup()
    frames = torch.randn(2, 3, 3, 28, 28)
    emb = frame_embeddings_for_audio_branch(teacher, frames)
    assert emb.shape == (2, 3, 20) and not emb.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(emb[1, 2], teacher(frames[1, 2:3])[0])
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2, 3))
    torch.testing.assert_close(frame_embeddings_for_audio_branch(teacher, frames, scale=20.0), emb * 20)
    # an image batch is a one-frame video
    assert frame_embeddings_for_audio_branch(teacher, frames[:, 0]).shape == (2, 1, 20)


def test_too_many_frames_is_a_clear_error():
    model, teacher = tiny_al_setup()
    rows = model.audio_position_embedding.num_embeddings
    with pytest.raises(ValueError, match=f"{rows + 1} frames given .* {rows} rows"):
        audio_tokens_from_frames(model, teacher, torch.randn(1, rows + 1, 3, 28, 28))
    with pytest.raises(ValueError, match="at most 2 frames"):
        frame_embeddings_for_audio_branch(teacher, torch.randn(1, 3, 3, 28, 28), max_frames=2)
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        frame_embeddings_for_audio_branch(teacher, torch.randn(3, 28, 28))


def test_gradients_reach_only_the_audio_adapter():
    model, teacher = tiny_al_setup()
    model.train()
    for p in teacher.parameters():
        p.requires_grad_(True)  # even a teacher left trainable by mistake must get no gradient
    tokens = audio_tokens_from_frames(model, teacher, torch.randn(2, 4, 3, 28, 28))
    assert tokens.shape == (2, model.config.audio_qformer.num_queries, model.config.llm.hidden_size)
    tokens.square().mean().backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got and all(n.startswith(ADAPTER) for n in got)
    for part in ADAPTER:
        assert any(n.startswith(part) for n in got), part
    assert "audio_proj.weight" in got and "audio_qformer.query_tokens" in got
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_width_must_match_the_adapter():
    model, _ = tiny_al_setup()
    wrong = ImageBindVisionEncoder(ImageBindVisionConfig(**{**TINY_TEACHER, "out_dim": 21}))
    with pytest.raises(ValueError, match="21-d but the audio adapter expects 20-d"):
        audio_tokens_from_frames(model, wrong, torch.randn(1, 2, 3, 28, 28))


def test_build_teacher_needs_the_config_field():
    with pytest.raises(ValueError, match="no audio_visual_teacher"):
        build_teacher(VideoLlamaConfig.from_name("tiny"))
    teacher = build_teacher(VideoLlamaConfig.from_dict({"audio_visual_teacher": {}}))  # meta: no memory
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_load_teacher_from_an_official_file(tmp_path):
    cfg = VideoLlamaConfig.from_dict({**PRESETS["tiny"], "audio_visual_teacher": TINY_TEACHER})
    sd = off.imagebind_state_dict(cfg.audio, off.random_maker(5), vision=cfg.audio_visual_teacher)
    path = tmp_path / "imagebind_huge.pth"
    torch.save(sd, path)
    teacher = load_teacher(path, cfg)
    assert not any(p.requires_grad for p in teacher.parameters())
    images = torch.randn(2, 3, 28, 28)
    want = reference_vision(conv.convert_imagebind_vision(sd), cfg.audio_visual_teacher, images)
    with torch.no_grad():
        torch.testing.assert_close(teacher(images), want, rtol=1e-4, atol=1e-4)
    small = VideoLlamaConfig.from_dict({**PRESETS["tiny"], "audio_visual_teacher": {**TINY_TEACHER, "depth": 1}})
    with pytest.raises(conv.ConversionError, match="unexpected keys"):
        load_teacher(path, small)
