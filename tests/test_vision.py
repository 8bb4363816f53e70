"""EVA ViT-g against the reference math written out by hand (separate q_bias / v_bias)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.config import VideoLlamaConfig, VisionConfig
from model.vision import EvaViT, VisionOutputNorm, sincos_2d


def reference_eva(state: dict, cfg: VisionConfig, images: torch.Tensor, q_bias, v_bias, k_bias=None) -> torch.Tensor:
    """EVA as in the original layout: qkv Linear without bias, plus q_bias and v_bias.

    ``k_bias``: a key bias per block, as model folders written before the split stored (fused)."""
    W, nh = cfg.width, cfg.num_heads
    hd = W // nh
    step = cfg.patch_size
    for j in range(len(cfg.stem_channels)):  # the stem: 3x3 conv + GELU each, the last with stride 2
        last = j == len(cfg.stem_channels) - 1
        images = F.gelu(F.conv2d(images, state[f"stem.{2 * j}.weight"], state[f"stem.{2 * j}.bias"],
                                 stride=2 if last else 1, padding=1))
        step = cfg.patch_size // 2
    x = F.conv2d(images, state["patch_embed.weight"], state["patch_embed.bias"], stride=step)
    N = x.shape[0]
    x = x.reshape(N, W, -1).permute(0, 2, 1)  # (N, P, W)
    x = torch.cat([state["cls_token"].expand(N, -1, -1), x], dim=1) + state["pos_embed"]
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (W,), state[p + "norm1.weight"], state[p + "norm1.bias"], eps=cfg.norm_eps)
        bias = torch.cat([q_bias[i], torch.zeros_like(v_bias[i]) if k_bias is None else k_bias[i], v_bias[i]])
        qkv = h @ state[p + "attn.qkv.weight"].T + bias
        q, k, v = qkv.split(W, dim=-1)
        outs = []
        for j in range(nh):
            sl = slice(j * hd, (j + 1) * hd)
            a = torch.softmax((q[..., sl] * hd**-0.5) @ k[..., sl].transpose(1, 2), dim=-1)
            outs.append(a @ v[..., sl])
        x = x + torch.cat(outs, -1) @ state[p + "attn.proj.weight"].T + state[p + "attn.proj.bias"]
        h = F.layer_norm(x, (W,), state[p + "norm2.weight"], state[p + "norm2.bias"], eps=cfg.norm_eps)
        h = F.gelu(h @ state[p + "mlp.fc1.weight"].T + state[p + "mlp.fc1.bias"])
        x = x + h @ state[p + "mlp.fc2.weight"].T + state[p + "mlp.fc2.bias"]
    return x  # no final norm


def test_matches_reference_with_separate_q_and_v_bias():
    cfg = VideoLlamaConfig.from_name("tiny").vision
    vit = EvaViT(cfg).eval()
    q_bias = [torch.randn(cfg.width) for _ in range(cfg.depth)]
    v_bias = [torch.randn(cfg.width) for _ in range(cfg.depth)]
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0, 0.3)
        for i, block in enumerate(vit.blocks):
            block.attn.q_bias.copy_(q_bias[i])
            block.attn.v_bias.copy_(v_bias[i])
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        got = vit(images)
        want = reference_eva(vit.state_dict(), cfg, images, q_bias, v_bias)
    assert got.shape == (2, 1 + cfg.num_patches, cfg.width)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_key_names_and_shapes_follow_architecture_md():
    cfg = VideoLlamaConfig.from_name("tiny").vision
    shapes = {k: tuple(v.shape) for k, v in EvaViT(cfg).state_dict().items()}
    W = cfg.width
    assert shapes["patch_embed.weight"] == (W, 3, cfg.patch_size, cfg.patch_size)
    assert shapes["patch_embed.bias"] == (W,)
    assert shapes["cls_token"] == (1, 1, W)
    assert shapes["pos_embed"] == (1, 1 + cfg.num_patches, W)
    assert shapes["blocks.1.attn.qkv.weight"] == (3 * W, W)
    assert shapes["blocks.1.attn.q_bias"] == shapes["blocks.1.attn.v_bias"] == (W,)
    assert "blocks.1.attn.qkv.bias" not in shapes  # the key bias is a constant 0, as EVA's
    assert shapes["blocks.1.mlp.fc1.weight"] == (cfg.mlp_dim, W)
    per_block = {k.split(".", 2)[2] for k in shapes if k.startswith("blocks.0.")}
    assert per_block == {f"{m}.{t}" for m in ("norm1", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
                         for t in ("weight", "bias")} | {"attn.qkv.weight", "attn.q_bias", "attn.v_bias"}
    assert not any(k.startswith(("norm.", "head", "fc_norm")) for k in shapes)  # no final norm


def test_full_size_parameter_count_on_meta_is_the_originals():
    cfg = VideoLlamaConfig.from_name("video-llama-2-7b").vision
    with torch.device("meta"):
        vit = EvaViT(cfg)
    # LAVIS eva_vit.py, 39 blocks of width 1408, MLP 6144: per block norm1, qkv weight (no bias),
    # q_bias, v_bias, proj, norm2, fc1, fc2; then patch embedding, cls token, 257 positions.
    W, L = 1408, 39
    block = 2 * W + 3 * W * W + 2 * W + (W * W + W) + 2 * W + (W * 6144 + 6144) + (6144 * W + W)
    stem = W * 3 * 14 * 14 + W + W + 257 * W
    assert stem + L * block == 985_894_528  # the reference's "about 986 M"
    assert sum(p.numel() for p in vit.parameters()) == 985_894_528
    assert len(vit.blocks) == 39


def test_wrong_image_size_is_a_clear_error():
    vit = EvaViT(VideoLlamaConfig.from_name("tiny").vision)
    with pytest.raises(ValueError, match=r"expects images \(N, 3, 28, 28\)"):
        vit(torch.randn(1, 3, 32, 32))


def stem_config(channels=(4, 6)) -> VisionConfig:
    return VisionConfig(image_size=28, patch_size=14, width=40, depth=2, num_heads=4, mlp_dim=37,
                        stem_channels=tuple(channels))


def test_conv_stem_matches_reference_and_keeps_the_patch_grid():
    cfg = stem_config()
    vit = EvaViT(cfg).eval()
    s = vit.state_dict()
    assert s["stem.0.weight"].shape == (4, 3, 3, 3) and s["stem.2.weight"].shape == (6, 4, 3, 3)
    step = cfg.patch_size // 2
    assert s["patch_embed.weight"].shape == (cfg.width, 6, step, step)
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    # reference: 3x3 conv at stride 1, then 3x3 conv at stride 2, then patch_size/2 patches
    h = F.gelu(F.conv2d(images, s["stem.0.weight"], s["stem.0.bias"], padding=1))
    h = F.gelu(F.conv2d(h, s["stem.2.weight"], s["stem.2.bias"], stride=2, padding=1))
    patches = F.conv2d(h, s["patch_embed.weight"], s["patch_embed.bias"], stride=step)  # (N, W, h, w)
    with torch.no_grad():
        got = vit(images)
        vit.blocks = torch.nn.ModuleList()  # trunk output before any block = embedded patches + positions
        tokens = vit(images)
    assert got.shape == (2, 1 + cfg.num_patches, cfg.width)
    want = patches.flatten(2).transpose(1, 2) + s["pos_embed"][:, 1:]
    torch.testing.assert_close(tokens[:, 1:], want, rtol=1e-5, atol=1e-5)


def test_no_stem_adds_no_keys_and_stem_survives_a_config_round_trip():
    plain = EvaViT(VideoLlamaConfig.from_name("tiny").vision).state_dict()
    assert not any(k.startswith("stem.") for k in plain)
    tiny = VideoLlamaConfig.from_name("tiny").to_dict()
    tiny["vision"].update(patch_size=14, stem_channels=[4, 6])
    again = VideoLlamaConfig.from_dict(json.loads(json.dumps(VideoLlamaConfig.from_dict(tiny).to_dict())))
    assert EvaViT(again.vision).state_dict()["patch_embed.weight"].shape[1] == 6


def test_stem_with_odd_patch_size_is_a_clear_error():
    with pytest.raises(ValueError, match="even vision.patch_size"):
        tiny = VideoLlamaConfig.from_name("tiny").to_dict()
        tiny["vision"]["stem_channels"] = [4]  # tiny's patch_size is 7
        VideoLlamaConfig.from_dict(tiny)


def test_a_folder_with_a_fused_qkv_bias_loads_to_the_same_outputs(tmp_path):
    """Folders written before the q_bias / v_bias split (the bundled one until issue 23) hold one
    fused ``qkv.bias`` whose key part was trained; it loads into q_bias / v_bias, and the key part
    it drops cannot change attention. The fused file is made here from the bundled folder."""
    from safetensors.torch import load_file, save_file

    from model.video_llama import build_vision_branch
    from model.weights.checkpoint import _load_component

    folder = Path(__file__).resolve().parents[1] / "checkpoints" / "toy-world"
    raw = {k: v.float() for k, v in load_file(folder / "vision_encoder.safetensors").items()}
    cfg = VideoLlamaConfig.from_file(folder / "config.json")
    torch.manual_seed(0)
    fused_file, key_biases = dict(raw), []
    for i in range(cfg.vision.depth):
        pre = f"vision_encoder.blocks.{i}.attn."
        key_biases.append(torch.randn(cfg.vision.width) * 0.5)  # a real, non-zero key bias
        q, v = fused_file.pop(pre + "q_bias"), fused_file.pop(pre + "v_bias")
        fused_file[pre + "qkv.bias"] = torch.cat([q, key_biases[-1], v])
    save_file(fused_file, tmp_path / "vision_encoder.safetensors")
    with torch.device("meta"):
        built = build_vision_branch(cfg)
    modules = {name: built[name] for name in ("vision_encoder", "ln_vision", "image_qformer")}
    _load_component(modules, tmp_path / "vision_encoder.safetensors", torch.device("cpu"), torch.float32)
    vit = modules["vision_encoder"].eval()
    assert vit.blocks[0].attn.q_bias.shape == (cfg.vision.width,)
    images = torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size)
    state = {k[len("vision_encoder."):]: v for k, v in raw.items() if k.startswith("vision_encoder.")}
    q = [raw[f"vision_encoder.blocks.{i}.attn.q_bias"] for i in range(cfg.vision.depth)]
    v = [raw[f"vision_encoder.blocks.{i}.attn.v_bias"] for i in range(cfg.vision.depth)]
    with torch.no_grad():
        torch.testing.assert_close(vit(images), reference_eva(state, cfg.vision, images, q, v, k_bias=key_biases),
                                   rtol=1e-4, atol=1e-4)


def test_patch_norm_normalises_patch_embeddings_before_positions_and_is_absent_by_default():
    assert not any(k.startswith("patch_norm") for k in EvaViT(stem_config()).state_dict())
    for kind in ("token", "image"):
        cfg = dataclasses.replace(stem_config(), patch_norm=kind)
        vit = EvaViT(cfg).eval()
        assert {k for k in vit.state_dict() if k.startswith("patch_norm")} == {"patch_norm.weight", "patch_norm.bias"}
        with torch.no_grad():
            vit.patch_embed.weight.mul_(500.0)  # patch embeddings that grew: the norm brings them to unit scale
            vit.blocks = torch.nn.ModuleList()  # the tokens as they enter the blocks
            tokens = vit(torch.randn(2, 3, cfg.image_size, cfg.image_size))[:, 1:] - vit.pos_embed[:, 1:]
        per_token = tokens.pow(2).mean(-1)  # (2, P)
        if kind == "token":  # every patch at unit scale
            torch.testing.assert_close(per_token, torch.ones_like(per_token), atol=1e-3, rtol=1e-3)
        else:  # the image's patches at unit scale together, each keeping its own
            torch.testing.assert_close(per_token.mean(-1), torch.ones(2), atol=0.3, rtol=0.3)
            assert per_token.std(-1).min() > 0.01
    with pytest.raises(ValueError, match="patch_norm"):
        dataclasses.replace(stem_config(), patch_norm="batch")


def test_sincos_codes_tell_every_patch_apart_at_one_scale():
    codes = sincos_2d(4, 40)  # 16 patches, width 40 (not a multiple of 8: the rest is zero-padded)
    assert codes.shape == (16, 40)
    torch.testing.assert_close(codes[:, :40 // 4 * 4].norm(dim=1), torch.full((16,), (40 // 4 * 2) ** 0.5))
    distances = torch.cdist(codes, codes) + torch.eye(16)
    assert distances.min() > 0.1
    # the first half codes x only: patches in one column (same x) share it
    torch.testing.assert_close(codes[0, :20], codes[4, :20])
    assert not torch.allclose(codes[0, 20:], codes[4, 20:])


def test_ln_vision_adds_output_position_codes_to_patch_tokens_only_when_configured():
    cfg = VisionConfig(image_size=28, patch_size=7, width=40, depth=1, num_heads=4, mlp_dim=37)
    x = torch.randn(2, 1 + cfg.num_patches, cfg.width) * 50
    plain = VisionOutputNorm(cfg)
    assert set(plain.state_dict()) == {"weight", "bias"}
    torch.testing.assert_close(plain(x), F.layer_norm(x, (cfg.width,), eps=cfg.ln_vision_eps))
    placed = VisionOutputNorm(dataclasses.replace(cfg, output_position=True))
    assert set(placed.state_dict()) == {"weight", "bias"}  # the codes are fixed: no keys, nothing to load
    out = placed(x)
    torch.testing.assert_close(out[:, 0], plain(x)[:, 0])  # the CLS token gets no code
    torch.testing.assert_close(out[:, 1:] - plain(x)[:, 1:], sincos_2d(4, 40).expand(2, -1, -1))


def test_ln_vision_with_output_position_loads_from_the_meta_device():
    cfg = dataclasses.replace(VisionConfig(image_size=28, patch_size=7, width=40, depth=1, num_heads=4, mlp_dim=37),
                              output_position=True)
    reference = VisionOutputNorm(cfg)
    with torch.device("meta"):
        loaded = VisionOutputNorm(cfg)
    loaded.load_state_dict(reference.state_dict(), assign=True)
    x = torch.randn(1, 1 + cfg.num_patches, cfg.width)
    torch.testing.assert_close(loaded(x), reference(x))
