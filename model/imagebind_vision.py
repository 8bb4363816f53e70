"""ImageBind-Huge vision encoder (image path only), written for this project.

Used only in training: Video-LLaMA's audio-branch stages feed video frames through this
encoder and train the audio adapter on the resulting embeddings (section 8.1 of
``shared/reference/videollama.md``); at inference the same adapter reads ImageBind *audio*
embeddings (model/audio.py).

Facts (shapes, order of operations, norms) were read from Meta's public ImageBind source,
``facebookresearch/ImageBind``: ``imagebind/models/imagebind_model.py`` (commit 95d27c7f:
``_create_modality_preprocessors``, ``_create_modality_trunks``, ``_create_modality_heads``,
``_create_modality_postprocessors``, ``imagebind_huge``), ``multimodal_preprocessors.py``
(commit 3a2db6d3: ``PadIm2Video``, ``PatchEmbedGeneric``, ``RGBDTPreprocessor``),
``transformer.py`` (commit ef9b462c: ``BlockWithMasking``, ``SimpleTransformer``) and
``helpers.py`` (commit 95d27c7f: ``Normalize``, ``SelectElement``); plus Video-LLaMA's
``get_audio_feature`` (``video_llama/models/ImageBind/models/imagebind_model.py`` @546fa3af),
which receives frames (B, T, 3, H, W) and folds them to B*T single images. No code was
copied. What the original computes for one image (3, 224, 224):

1. ``PadIm2Video(pad_type="repeat", ntimes=2)``: the image becomes a clip (3, 1, H, W) and is
   repeated along time to (3, 2, H, W);
2. stem: ``Conv3d(3 -> 1280, kernel (2, 14, 14), stride (2, 14, 14), bias=False)`` ->
   (1280, 1, 16, 16), flattened ``flatten(2).transpose(1, 2)`` -> 256 tokens (time, row,
   column order); the vision stem has *no* LayerNorm (unlike audio's);
3. prepend one learned CLS token, add a learned position embedding (1, 257, 1280);
4. pre-transformer ``LayerNorm(1280, eps=1e-6)`` (vision only; audio has none); then 32
   pre-norm blocks ``x + attn(norm_1(x))``, ``x + mlp(norm_2(x))``, LayerNorm eps 1e-6,
   ``nn.MultiheadAttention(1280, 16, bias=True, add_bias_kv=False)`` (audio uses
   ``add_bias_kv=True``; vision does not), MLP 1280 -> 5120 -> 1280 with exact GELU, no drop
   path. The original runs sequence-first; ``batch_first=True`` is the same math;
5. head: ``LayerNorm(eps=1e-6)``, CLS token, ``Linear(1280 -> 1024, bias=False)``;
6. postprocessor: L2 normalise only (``Normalize(dim=-1)``; no logit scale for vision).

Because both time steps of the padded clip are the same image, the Conv3d equals a Conv2d
whose kernel is the Conv3d kernel summed over its time axis; ``forward`` uses that (half the
stem's work) and the tests check it against the literal repeat + Conv3d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ImageBindVisionConfig
from model.layers import PreNormBlock


class ImageBindVisionEncoder(nn.Module):
    """Images (N, 3, H, W), CLIP-normalised -> embeddings (N, out_dim), L2-normalised."""

    def __init__(self, cfg: ImageBindVisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        W, p = cfg.width, cfg.patch_size
        kernel = (cfg.num_frames, p, p)
        self.patch_embed = nn.Conv3d(3, W, kernel_size=kernel, stride=kernel, bias=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, W))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, W))
        # ImageBind's "openclip" init: normal scaled by width**-0.5.
        nn.init.normal_(self.cls_token, std=W**-0.5)
        nn.init.normal_(self.pos_embed, std=W**-0.5)
        self.pre_norm = nn.LayerNorm(W, eps=cfg.norm_eps)
        self.blocks = nn.ModuleList(
            PreNormBlock(W, cfg.num_heads, cfg.mlp_dim, cfg.norm_eps, add_bias_kv=False) for _ in range(cfg.depth)
        )
        self.head_norm = nn.LayerNorm(W, eps=cfg.norm_eps)
        self.head_proj = nn.Linear(W, cfg.out_dim, bias=False)

    def _check(self, images: torch.Tensor) -> None:
        size = self.cfg.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"ImageBind vision encoder expects images (N, 3, {size}, {size}), got "
                             f"{tuple(images.shape)}; fold frames (B, T, 3, H, W) to (B*T, 3, H, W) and "
                             f"resize to {size}")

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Stem of a still image: (N, 3, H, W) -> patch tokens (N, P, width)."""
        self._check(images)
        weight = self.patch_embed.weight  # (W, 3, frames, p, p)
        # The clip repeats the image `frames` times, so the time axis of the kernel sums out.
        x = F.conv2d(images.to(weight.dtype), weight.sum(dim=2), stride=self.cfg.patch_size)  # (N, W, h, w)
        return x.flatten(2).transpose(1, 2)  # (N, h*w, W), row-major

    def cls_feature(self, images: torch.Tensor) -> torch.Tensor:
        """The CLS token after the head LayerNorm, before the projection: (N, width)."""
        x = self.patch_tokens(images)
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)  # (N, 1+P, W)
        x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x)
        return self.head_norm(x[:, 0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head_proj(self.cls_feature(images)), dim=-1)
