"""Reference math written out in plain tensor ops, shared by tests of several encoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def imagebind_block(s: dict, p: str, x: torch.Tensor, num_heads: int, bias_kv: bool) -> torch.Tensor:
    """One ImageBind pre-norm block (keys ``p + ...`` of ``s``) on x (N, L, W), head by head."""
    N, _, W = x.shape
    hd = W // num_heads
    h = F.layer_norm(x, (W,), s[p + "norm1.weight"], s[p + "norm1.bias"], eps=1e-6)
    wq, wk, wv = s[p + "attn.in_proj_weight"].split(W)
    bq, bk, bv = s[p + "attn.in_proj_bias"].split(W)
    q, k, v = h @ wq.T + bq, h @ wk.T + bk, h @ wv.T + bv
    if bias_kv:  # one extra learned key/value appended to the sequence (ImageBind audio)
        k = torch.cat([k, s[p + "attn.bias_k"].reshape(1, 1, W).expand(N, 1, W)], dim=1)
        v = torch.cat([v, s[p + "attn.bias_v"].reshape(1, 1, W).expand(N, 1, W)], dim=1)
    heads = []
    for j in range(num_heads):
        sl = slice(j * hd, (j + 1) * hd)
        a = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / hd**0.5, dim=-1)
        heads.append(a @ v[..., sl])
    x = x + torch.cat(heads, -1) @ s[p + "attn.out_proj.weight"].T + s[p + "attn.out_proj.bias"]
    h = F.layer_norm(x, (W,), s[p + "norm2.weight"], s[p + "norm2.bias"], eps=1e-6)
    h = F.gelu(h @ s[p + "mlp.fc1.weight"].T + s[p + "mlp.fc1.bias"])
    return x + h @ s[p + "mlp.fc2.weight"].T + s[p + "mlp.fc2.bias"]
