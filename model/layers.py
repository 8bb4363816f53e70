"""Building blocks shared by several encoders.

Key names inside these modules (``fc1``/``fc2``, ``norm1``/``attn``/``norm2``/``mlp``) are part
of our checkpoint format (ARCHITECTURE.md): change them only together with model/convert.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Linear -> GELU (exact erf form, as BERT, EVA and ImageBind use) -> Linear."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class PreNormBlock(nn.Module):
    """ImageBind's transformer block: pre-norm ``nn.MultiheadAttention`` then pre-norm MLP.

    ImageBind runs its trunks sequence-first; ``batch_first=True`` holds the same weights and
    computes the same function. ``add_bias_kv`` appends one learned key and value to every
    sequence (ImageBind's audio trunk has it, its vision trunk does not). Drop path is a
    training-time regulariser of the original and is inactive at inference, so it is absent.
    """

    def __init__(self, width: int, num_heads: int, mlp_dim: int, eps: float, add_bias_kv: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = nn.MultiheadAttention(width, num_heads, bias=True, add_bias_kv=add_bias_kv, batch_first=True)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))
