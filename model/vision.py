"""EVA ViT-g/14, the image encoder of BLIP-2 and Video-LLaMA.

A plain pre-norm ViT with three details that matter for loading the official
``eva_vit_g.pth`` faithfully:

- attention uses one fused ``qkv`` Linear without bias, and two bias parameters, ``q_bias``
  and ``v_bias``, as EVA stores them; the key bias is a constant zero, not a parameter, so the
  parameter count is the original's and nothing could learn a key bias if the ViT were
  unfrozen. (Model folders written before this stored one fused ``qkv.bias``;
  ``model/weights/convert.py: unfuse_qkv_bias`` reads them.)
- BLIP-2 builds only 39 of the checkpoint's 40 blocks and applies **no final norm** (the
  output is the raw last block, later normalised by ``ln_vision`` outside this module);
- no relative position bias, no layer scale, drop path 0 (BLIP-2's settings).

The position embedding is used as is: images must be ``cfg.image_size`` square.

``cfg.stem_channels`` adds a few 3x3 convolutions before the patch embedding. EVA has none
(the stem is then an empty ``nn.Sequential``: no weights, no keys). The small encoders trained
here from scratch need it: with a bare 14-pixel patch projection a 3-block ViT stayed near
chance at telling a circle from a star even when trained on the shape label itself, as
"Early convolutions help transformers see better" (Xiao et al., 2021) describes.

``cfg.patch_norm`` normalises the patch embeddings before the position embedding is added, each
patch on its own ("token") or all of an image's patches together ("image"); "none" (EVA) has no
keys. Trained from scratch with a stem, the bundled model's patch embeddings grew from norm 0.4 to
about 170 while its position codes stayed near 8: its frozen features then told a shape's x
position bin at 0.28 (chance 0.2), so no later stage could learn motion
(``python -m experiments.soft_token_probe``). The toy-world recipe now starts the position
embedding at 16x the codes instead (``train/recipes.py``: POSITION_CODE_SCALE; 0.91).

``VisionOutputNorm`` is ``ln_vision``, BLIP-2's LayerNorm after the ViT, with the same two keys.
With ``cfg.output_position`` it also adds fixed 2-D sine-cosine codes to the patch tokens after
normalising them, so the image Q-Former's keys say where each patch is however large the ViT's
own activations grew; EVA has none (the flag is off in every official preset).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import VisionConfig
from model.layers import MLP


def sincos_2d(grid: int, width: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes (grid*grid, width), row-major over the patch grid: the
    first half of the channels code x, the second half y; each code has norm sqrt(2 * (width // 4)),
    sqrt(width / 2) when width is a multiple of 4 (other widths get zero channels at the end)."""
    quarter = width // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter) / quarter))  # (W/4,)
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for coord in (xs.flatten(), ys.flatten()):
        angle = coord[:, None].float() * freqs[None]  # (P, W/4)
        parts += [angle.sin(), angle.cos()]
    codes = torch.cat(parts, dim=1)  # (P, 4 * (W // 4))
    return torch.nn.functional.pad(codes, (0, width - codes.shape[1]))  # (P, W)


class EvaAttention(nn.Module):
    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"vision width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, W = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])  # (3W,): key bias is 0
        qkv = F.linear(x, self.qkv.weight, bias).view(B, N, 3, self.num_heads, W // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, N, hd)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, W))  # (B, N, W)


class EvaBlock(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = EvaAttention(cfg.width, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = MLP(cfg.width, cfg.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def conv_stem(cfg: VisionConfig) -> nn.Sequential:
    """3x3 conv + GELU per entry of ``cfg.stem_channels``, the last with stride 2."""
    layers: list[nn.Module] = []
    chans = [3, *cfg.stem_channels]
    for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
        stride = 2 if i == len(chans) - 2 else 1
        layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1), nn.GELU()]
    return nn.Sequential(*layers)


class EvaViT(nn.Module):
    """EVA ViT-g/14 trunk: ``forward(images (N,3,H,W)) -> (N, 1+P, W)`` (CLS first)."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = conv_stem(cfg)
        step = cfg.patch_size // 2 if cfg.stem_channels else cfg.patch_size  # the stem halves the resolution
        in_ch = cfg.stem_channels[-1] if cfg.stem_channels else 3
        self.patch_embed = nn.Conv2d(in_ch, cfg.width, kernel_size=step, stride=step)
        self.patch_norm = {"none": nn.Identity(), "token": nn.LayerNorm(cfg.width, eps=cfg.norm_eps),
                           "image": nn.GroupNorm(1, cfg.width, eps=cfg.norm_eps)}[cfg.patch_norm]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, cfg.width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(EvaBlock(cfg) for _ in range(cfg.depth))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.cfg.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"EVA ViT expects images (N, 3, {size}, {size}), got {tuple(images.shape)}; "
                             "resize frames to the configured vision.image_size first")
        x = self.patch_embed(self.stem(images.to(self.patch_embed.weight.dtype)))  # (N, W, h, w)
        if self.cfg.patch_norm == "image":
            x = self.patch_norm(x)  # over (W, h, w) of each image
        x = x.flatten(2).transpose(1, 2)  # (N, P, W), row-major over the patch grid
        if self.cfg.patch_norm == "token":
            x = self.patch_norm(x)  # over W of each patch
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)  # (N, 1+P, W)
        for block in self.blocks:
            x = block(x)
        return x


class VisionOutputNorm(nn.LayerNorm):
    """``ln_vision``: (N, 1+P, W) -> (N, 1+P, W), LayerNorm and, with ``cfg.output_position``,
    sine-cosine codes on the P patch tokens (the CLS token gets none).

    The codes are computed in ``forward`` (a 65 x 128 table for the bundled model) rather than
    kept as a buffer: a model built on the meta device and then loaded would otherwise hold
    no values for them, and the state dict stays ``weight`` and ``bias``, as the original's.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__(cfg.width, eps=cfg.ln_vision_eps)
        self.grid = cfg.image_size // cfg.patch_size if cfg.output_position else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if not self.grid:
            return x
        codes = sincos_2d(self.grid, x.shape[-1]).to(device=x.device, dtype=x.dtype)  # (P, W)
        return torch.cat([x[:, :1], x[:, 1:] + codes], dim=1)  # (N, 1+P, W)
