"""ImageBind-Huge audio encoder (audio path only), written for this project.

Facts (shapes, order of operations, norms) were read from Meta's public ImageBind source,
``facebookresearch/ImageBind``: ``imagebind/models/imagebind_model.py`` (commit 274d2c04),
``imagebind/models/multimodal_preprocessors.py`` (commit 1125e1ec) and
``imagebind/models/transformer.py`` (commit d4782c34); and from Video-LLaMA's vendored copy
(``video_llama/models/ImageBind/models/imagebind_model.py`` @546fa3af, ``get_audio_feature``).
No code was copied. What the original computes for one fbank clip (1, 128, 204):

1. stem: Conv2d(1 -> 768, kernel 16, stride 10, no bias) -> (768, 12, 19); flattened as
   ``flatten(2).transpose(1, 2)`` (row-major over (mel, time)) -> 228 tokens; then the
   stem's LayerNorm (torch default eps 1e-5) -- *before* the CLS token is prepended;
2. prepend one learned CLS token, add a learned position embedding (1, 229, 768);
3. no pre-transformer LayerNorm for audio; 12 pre-norm blocks
   ``x + attn(norm_1(x))``, ``x + mlp(norm_2(x))`` with LayerNorm eps 1e-6,
   ``nn.MultiheadAttention(bias=True, add_bias_kv=True)`` and an MLP 768 -> 3072 -> 768
   with exact GELU. The original runs the trunk sequence-first (L, B, D); we use
   ``batch_first=True``, which has the same weights and the same math. Drop path 0.1 is
   only active in training, and this encoder is always frozen, so it is omitted;
4. head: LayerNorm(eps 1e-6), take the CLS token, Linear(768 -> 1024, no bias);
5. postprocessor: L2 normalise, multiply by the fixed logit scale 20.

Video-LLaMA's ``get_audio_feature`` also returns the step-4 CLS feature before the Linear
(``head[:-1]``): that is ``cls_feature`` here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import AudioConfig
from model.layers import PreNormBlock

STEM_NORM_EPS = 1e-5  # ImageBind builds the stem LayerNorm with torch's default eps
HEAD_NORM_EPS = 1e-6  # the head LayerNorm is built with an explicit 1e-6


class ImageBindAudioEncoder(nn.Module):
    """Fbank clips (N, 1, mel, frames) -> embeddings (N, out_dim), L2-normalised x logit_scale."""

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        W = cfg.width
        self.patch_embed = nn.Conv2d(1, W, kernel_size=cfg.kernel_size, stride=cfg.stride, bias=False)
        self.patch_norm = nn.LayerNorm(W, eps=STEM_NORM_EPS)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, W))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, W))
        # ImageBind's "openclip" init: normal scaled by width**-0.5.
        nn.init.normal_(self.cls_token, std=W**-0.5)
        nn.init.normal_(self.pos_embed, std=W**-0.5)
        self.blocks = nn.ModuleList(
            PreNormBlock(W, cfg.num_heads, cfg.mlp_dim, cfg.norm_eps, add_bias_kv=True) for _ in range(cfg.depth)
        )
        self.head_norm = nn.LayerNorm(W, eps=HEAD_NORM_EPS)
        self.head_proj = nn.Linear(W, cfg.out_dim, bias=False)

    def _check(self, fbank: torch.Tensor) -> None:
        want = (1, self.cfg.num_mel_bins, self.cfg.target_length)
        if fbank.ndim != 4 or tuple(fbank.shape[1:]) != want:
            raise ValueError(f"audio encoder expects fbank clips (N, {', '.join(map(str, want))}), "
                             f"got {tuple(fbank.shape)}; use the project's fbank loader")

    def cls_feature(self, fbank: torch.Tensor) -> torch.Tensor:
        """The CLS token after the head LayerNorm, before the projection: (N, width)."""
        self._check(fbank)
        x = self.patch_embed(fbank.to(self.patch_embed.weight.dtype))  # (N, W, mel', time')
        x = self.patch_norm(x.flatten(2).transpose(1, 2))  # (N, P, W)
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)  # (N, 1+P, W)
        for block in self.blocks:
            x = block(x)
        return self.head_norm(x[:, 0])

    def project(self, cls_feature: torch.Tensor) -> torch.Tensor:
        """Head projection and postprocessor: (N, width) -> (N, out_dim)."""
        return F.normalize(self.head_proj(cls_feature), dim=-1) * self.cfg.logit_scale

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.project(self.cls_feature(fbank))
