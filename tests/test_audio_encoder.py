"""ImageBind audio encoder against the reference math written with plain tensor ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.audio import ImageBindAudioEncoder
from model.config import AudioConfig, VideoLlamaConfig
from tests.reference_math import imagebind_block


def reference_audio(s: dict, cfg: AudioConfig, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    W, nh = cfg.width, cfg.num_heads
    x = F.conv2d(fbank, s["patch_embed.weight"], stride=cfg.stride)  # (N, W, mel', time')
    N = x.shape[0]
    x = x.reshape(N, W, -1).permute(0, 2, 1)  # patches row-major over (mel, time)
    x = F.layer_norm(x, (W,), s["patch_norm.weight"], s["patch_norm.bias"], eps=1e-5)  # stem norm before CLS
    x = torch.cat([s["cls_token"].expand(N, -1, -1), x], dim=1) + s["pos_embed"]
    for i in range(cfg.depth):
        x = imagebind_block(s, f"blocks.{i}.", x, nh, bias_kv=True)
    cls = F.layer_norm(x, (W,), s["head_norm.weight"], s["head_norm.bias"], eps=1e-6)[:, 0]
    out = cls @ s["head_proj.weight"].T
    return cls, 20.0 * out / out.norm(dim=-1, keepdim=True)


@pytest.fixture
def encoder_and_cfg():
    cfg = VideoLlamaConfig.from_name("tiny").audio
    enc = ImageBindAudioEncoder(cfg).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.3)
    return enc, cfg


def test_matches_reference_math(encoder_and_cfg):
    enc, cfg = encoder_and_cfg
    fbank = torch.randn(3, 1, cfg.num_mel_bins, cfg.target_length)
    with torch.no_grad():
        want_cls, want = reference_audio(enc.state_dict(), cfg, fbank)
        got = enc(fbank)
        got_cls = enc.cls_feature(fbank)
    assert got.shape == (3, cfg.out_dim) and got_cls.shape == (3, cfg.width)
    torch.testing.assert_close(got_cls, want_cls, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.norm(dim=-1), torch.full((3,), 20.0))


def test_patch_tokens_are_row_major_over_mel_then_time(encoder_and_cfg):
    """Token m*time + t of the stem is conv output cell (m, t), as flatten(2).transpose(1, 2)."""
    enc, cfg = encoder_and_cfg
    mel, time = cfg.grid
    assert cfg.grid == (2, 3) and enc.pos_embed.shape == (1, 1 + mel * time, cfg.width)
    seen = {}
    enc.patch_norm.register_forward_hook(lambda mod, args, out: seen.update(tokens=args[0]))
    fbank = torch.randn(1, 1, cfg.num_mel_bins, cfg.target_length)
    with torch.no_grad():
        enc(fbank)
        grid = F.conv2d(fbank, enc.patch_embed.weight, stride=cfg.stride)[0]  # (W, mel, time)
    for m in range(mel):
        for t in range(time):
            torch.testing.assert_close(seen["tokens"][0, m * time + t], grid[:, m, t])


def test_key_names_follow_architecture_md():
    cfg = VideoLlamaConfig.from_name("tiny").audio
    keys = set(ImageBindAudioEncoder(cfg).state_dict())
    expected = {"patch_embed.weight", "patch_norm.weight", "patch_norm.bias", "cls_token", "pos_embed",
                "head_norm.weight", "head_norm.bias", "head_proj.weight"}
    for i in range(cfg.depth):
        expected |= {f"blocks.{i}.{k}" for k in (
            "norm1.weight", "norm1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.bias_k",
            "attn.bias_v", "attn.out_proj.weight", "attn.out_proj.bias", "norm2.weight", "norm2.bias",
            "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")}
    assert keys == expected


def test_full_size_parameter_count_on_meta():
    cfg = VideoLlamaConfig.from_name("video-llama-2-7b").audio
    with torch.device("meta"):
        enc = ImageBindAudioEncoder(cfg)
    W = 768
    block = 4 * W + (3 * W * W + 3 * W) + 2 * W + (W * W + W) + (W * 3072 + 3072) + (3072 * W + W)
    stem = W * 16 * 16 + 2 * W + W + 229 * W
    head = 2 * W + W * 1024
    assert sum(p.numel() for p in enc.parameters()) == stem + 12 * block + head


def test_wrong_fbank_shape_is_a_clear_error(encoder_and_cfg):
    enc, cfg = encoder_and_cfg
    with pytest.raises(ValueError, match="fbank clips"):
        enc(torch.randn(1, 1, cfg.num_mel_bins, cfg.target_length + 1))
