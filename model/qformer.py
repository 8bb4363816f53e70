"""The Q-Former: a small BERT whose only inputs are learned query tokens.

BLIP-2 and Video-LLaMA build their Q-Formers from ``bert-base-uncased`` and then prune
every text-only part (word/position embeddings, the text FFN of each layer, the LM head).
What remains, and what this module computes, is the query path of a post-LN BERT:

    x = LayerNorm(query_tokens)                           # input_norm
    for each layer i:
        x = LayerNorm(x + SelfAttn(x))                    # self_attn, self_attn_norm
        if i % cross_attention_freq == 0:
            x = LayerNorm(x + CrossAttn(x, encoder))      # cross_attn, cross_attn_norm
        x = LayerNorm(x + fc2(GELU(fc1(x))))              # mlp, mlp_norm

The attention masks of the original are all ones, so no mask is taken. GELU is the exact
(erf) form, as BERT's ``"gelu"``. ``tests/test_qformer.py`` checks that this computes the
same function as transformers' ``Blip2QFormerModel``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import QFormerConfig
from model.layers import MLP

# bert-base-uncased's hidden and attention dropout: the original trains its Q-Formers with it.
BERT_DROPOUT = 0.1


class QFormerAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections (BERT layout)."""

    def __init__(self, hidden: int, num_heads: int, kv_width: int, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden % num_heads:
            raise ValueError(f"Q-Former hidden_size {hidden} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(kv_width, hidden)
        self.v_proj = nn.Linear(kv_width, hidden)
        self.out_proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, Q, H = x.shape
        N = context.shape[1]
        hd = H // self.num_heads
        q = self.q_proj(x).view(B, Q, self.num_heads, hd).transpose(1, 2)  # (B, nh, Q, hd)
        k = self.k_proj(context).view(B, N, self.num_heads, hd).transpose(1, 2)  # (B, nh, N, hd)
        v = self.v_proj(context).view(B, N, self.num_heads, hd).transpose(1, 2)  # (B, nh, N, hd)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        out = out.transpose(1, 2).reshape(B, Q, H)  # (B, Q, H)
        return self.out_proj(out)


class QFormerLayer(nn.Module):
    """One post-LN layer; ``cross_attn`` exists only when ``has_cross``."""

    def __init__(self, cfg: QFormerConfig, has_cross: bool, dropout: float = 0.0) -> None:
        super().__init__()
        H = cfg.hidden_size
        self.self_attn = QFormerAttention(H, cfg.num_heads, H, dropout)
        self.self_attn_norm = nn.LayerNorm(H, eps=cfg.norm_eps)
        self.cross_attn = QFormerAttention(H, cfg.num_heads, cfg.encoder_width, dropout) if has_cross else None
        self.cross_attn_norm = nn.LayerNorm(H, eps=cfg.norm_eps) if has_cross else None
        self.mlp = MLP(H, cfg.intermediate_size)
        self.mlp_norm = nn.LayerNorm(H, eps=cfg.norm_eps)
        # BERT's hidden dropout sits on each sub-layer output, before the residual add.
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, encoder_states: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_norm(x + self.drop(self.self_attn(x, x)))
        if self.cross_attn is not None:
            x = self.cross_attn_norm(x + self.drop(self.cross_attn(x, encoder_states)))
        return self.mlp_norm(x + self.drop(self.mlp(x)))


class QFormer(nn.Module):
    """Learned queries that read a sequence of encoder states.

    Args:
        cfg: sizes; ``cfg.encoder_width`` is the width of the states cross-attended to.
        dropout: BERT-style dropout (attention probabilities and sub-layer outputs), active
            only in training mode. bert-base uses 0.1 when training; inference ignores it.
    """

    def __init__(self, cfg: QFormerConfig, dropout: float = 0.0) -> None:
        super().__init__()
        if cfg.cross_attention_freq < 1:
            raise ValueError(f"cross_attention_freq must be >= 1, got {cfg.cross_attention_freq}")
        self.cfg = cfg
        self.query_tokens = nn.Parameter(torch.zeros(1, cfg.num_queries, cfg.hidden_size))
        nn.init.normal_(self.query_tokens, std=0.02)  # as the original initialises new queries
        self.input_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.input_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            QFormerLayer(cfg, has_cross=(i % cfg.cross_attention_freq == 0), dropout=dropout)
            for i in range(cfg.num_layers)
        )

    def forward(self, encoder_states: torch.Tensor) -> torch.Tensor:
        """Run the queries over ``encoder_states`` (B, N, E); returns (B, Q, H)."""
        if encoder_states.ndim != 3 or encoder_states.shape[-1] != self.cfg.encoder_width:
            raise ValueError(f"Q-Former expects encoder states (B, N, {self.cfg.encoder_width}), "
                             f"got {tuple(encoder_states.shape)}")
        B = encoder_states.shape[0]
        # The states may come from an fp16 encoder; the Q-Former's own weights decide the dtype
        # (under autocast the matmuls still run in fp16).
        encoder_states = encoder_states.to(self.query_tokens.dtype)
        x = self.input_drop(self.input_norm(self.query_tokens.expand(B, -1, -1)))  # (B, Q, H)
        for layer in self.layers:
            x = layer(x, encoder_states)
        return x
