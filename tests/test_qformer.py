"""Our Q-Former against transformers' Blip2QFormerModel, and its own contract.

Finding (transformers 5.23, ``Blip2QFormerLayer``): with ``use_qformer_text_input=True`` each
layer also owns a text FFN (``intermediate``/``output``), used only for positions after
``query_length``. For a query-only input (``query_embeds`` = our query tokens, no text),
those modules never run, so the pruned LAVIS layout and HF compute the same function.
``test_hf_text_ffn_is_unused_for_queries`` checks that; the default is
``use_qformer_text_input=False`` (modules absent).
"""

from __future__ import annotations

import re

import pytest
import torch
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from model.config import QFormerConfig
from model.qformer import QFormer

# ours (regex) -> HF Blip2QFormerModel key template
KEY_MAP = [
    (r"input_norm\.(.+)", r"layernorm.\1"),
    (r"layers\.(\d+)\.self_attn\.q_proj\.(.+)", r"encoder.layer.\1.attention.attention.query.\2"),
    (r"layers\.(\d+)\.self_attn\.k_proj\.(.+)", r"encoder.layer.\1.attention.attention.key.\2"),
    (r"layers\.(\d+)\.self_attn\.v_proj\.(.+)", r"encoder.layer.\1.attention.attention.value.\2"),
    (r"layers\.(\d+)\.self_attn\.out_proj\.(.+)", r"encoder.layer.\1.attention.output.dense.\2"),
    (r"layers\.(\d+)\.self_attn_norm\.(.+)", r"encoder.layer.\1.attention.output.LayerNorm.\2"),
    (r"layers\.(\d+)\.cross_attn\.q_proj\.(.+)", r"encoder.layer.\1.crossattention.attention.query.\2"),
    (r"layers\.(\d+)\.cross_attn\.k_proj\.(.+)", r"encoder.layer.\1.crossattention.attention.key.\2"),
    (r"layers\.(\d+)\.cross_attn\.v_proj\.(.+)", r"encoder.layer.\1.crossattention.attention.value.\2"),
    (r"layers\.(\d+)\.cross_attn\.out_proj\.(.+)", r"encoder.layer.\1.crossattention.output.dense.\2"),
    (r"layers\.(\d+)\.cross_attn_norm\.(.+)", r"encoder.layer.\1.crossattention.output.LayerNorm.\2"),
    (r"layers\.(\d+)\.mlp\.fc1\.(.+)", r"encoder.layer.\1.intermediate_query.dense.\2"),
    (r"layers\.(\d+)\.mlp\.fc2\.(.+)", r"encoder.layer.\1.output_query.dense.\2"),
    (r"layers\.(\d+)\.mlp_norm\.(.+)", r"encoder.layer.\1.output_query.LayerNorm.\2"),
]


def hf_key(ours: str) -> str:
    for pattern, template in KEY_MAP:
        if re.fullmatch(pattern, ours):
            return re.sub(pattern, template, ours)
    raise KeyError(ours)


def tiny_qformer_cfg(freq: int) -> QFormerConfig:
    return QFormerConfig(num_queries=5, num_layers=3, hidden_size=32, num_heads=4,
                         intermediate_size=37, encoder_width=24, cross_attention_freq=freq)


def hf_twin(cfg: QFormerConfig, text_input: bool = False) -> Blip2QFormerModel:
    hf_cfg = Blip2QFormerConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                                num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                                encoder_hidden_size=cfg.encoder_width,
                                cross_attention_frequency=cfg.cross_attention_freq,
                                layer_norm_eps=cfg.norm_eps, use_qformer_text_input=text_input)
    hf = Blip2QFormerModel(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # random everything, LayerNorms included
            p.normal_(0, 0.5)
    return hf


def copy_from_hf(ours: QFormer, hf: Blip2QFormerModel) -> set[str]:
    """Load HF weights into ours; return the HF keys that were not used."""
    hf_state = hf.state_dict()
    mapped = {k: hf_state[hf_key(k)] for k in ours.state_dict() if k != "query_tokens"}
    missing, unexpected = ours.load_state_dict(mapped, strict=False)
    assert missing == ["query_tokens"] and unexpected == []
    return set(hf_state) - {hf_key(k) for k in mapped}


@pytest.mark.parametrize("freq", [1, 2])
def test_same_function_as_transformers_blip2_qformer(freq):
    cfg = tiny_qformer_cfg(freq)
    hf = hf_twin(cfg)
    ours = QFormer(cfg).eval()
    assert copy_from_hf(ours, hf) == set()  # every HF tensor has a place in ours
    enc = torch.randn(2, 7, cfg.encoder_width)
    queries = ours.query_tokens.expand(2, -1, -1)
    with torch.no_grad():
        want = hf(query_embeds=queries, encoder_hidden_states=enc).last_hidden_state
        got = ours(enc)
    assert got.shape == (2, cfg.num_queries, cfg.hidden_size)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_cross_attention_layers_follow_the_frequency():
    cfg = tiny_qformer_cfg(2)
    q = QFormer(cfg)
    assert [layer.cross_attn is not None for layer in q.layers] == [True, False, True]
    keys = q.state_dict().keys()
    assert "layers.1.cross_attn.q_proj.weight" not in keys
    assert q.state_dict()["layers.0.cross_attn.k_proj.weight"].shape == (32, 24)


def test_hf_text_ffn_is_unused_for_queries():
    cfg = tiny_qformer_cfg(1)
    hf = hf_twin(cfg, text_input=True)
    ours = QFormer(cfg).eval()
    unused = copy_from_hf(ours, hf)
    assert unused and all(re.search(r"\.(intermediate|output)\.dense\.|\.output\.LayerNorm\.", k)
                          and "query" not in k for k in unused)
    enc = torch.randn(1, 4, cfg.encoder_width)
    queries = ours.query_tokens.detach().clone()
    with torch.no_grad():
        before = hf(query_embeds=queries, encoder_hidden_states=enc).last_hidden_state
        for name, p in hf.named_parameters():
            if name in unused:
                p.add_(3.0)
        after = hf(query_embeds=queries, encoder_hidden_states=enc).last_hidden_state
        torch.testing.assert_close(after, before)
        torch.testing.assert_close(ours(enc), before, rtol=1e-5, atol=1e-5)


def test_reference_math_written_out():
    """One layer with cross-attention computed with plain tensor ops."""
    cfg = QFormerConfig(num_queries=3, num_layers=1, hidden_size=8, num_heads=2,
                        intermediate_size=5, encoder_width=6, cross_attention_freq=1)
    q = QFormer(cfg).eval()
    with torch.no_grad():
        for p in q.parameters():
            p.normal_(0, 0.5)
    enc = torch.randn(1, 4, 6)
    s = {k: v for k, v in q.state_dict().items()}

    def ln(x, p):
        return torch.nn.functional.layer_norm(x, (8,), s[p + ".weight"], s[p + ".bias"], eps=cfg.norm_eps)

    def lin(x, p):
        return x @ s[p + ".weight"].T + s[p + ".bias"]

    def attn(x, ctx, p):
        heads = []
        for h in range(2):
            sl = slice(4 * h, 4 * h + 4)
            qh = lin(x, p + ".q_proj")[..., sl]
            kh, vh = lin(ctx, p + ".k_proj")[..., sl], lin(ctx, p + ".v_proj")[..., sl]
            heads.append(torch.softmax(qh @ kh.transpose(-1, -2) / 2.0, dim=-1) @ vh)
        return lin(torch.cat(heads, dim=-1), p + ".out_proj")

    x = ln(s["query_tokens"], "input_norm")
    x = ln(x + attn(x, x, "layers.0.self_attn"), "layers.0.self_attn_norm")
    x = ln(x + attn(x, enc, "layers.0.cross_attn"), "layers.0.cross_attn_norm")
    h = lin(x, "layers.0.mlp.fc1")
    h = 0.5 * h * (1 + torch.erf(h / 2**0.5))  # exact GELU
    x = ln(x + lin(h, "layers.0.mlp.fc2"), "layers.0.mlp_norm")
    with torch.no_grad():
        torch.testing.assert_close(q(enc), x, rtol=1e-5, atol=1e-5)


def test_bad_encoder_width_is_a_clear_error():
    q = QFormer(tiny_qformer_cfg(1))
    with pytest.raises(ValueError, match=r"encoder states \(B, N, 24\)"):
        q(torch.randn(1, 4, 25))


def test_dropout_only_in_training():
    q = QFormer(tiny_qformer_cfg(1), dropout=0.5)
    enc = torch.randn(1, 4, 24)
    q.eval()
    torch.testing.assert_close(q(enc), q(enc))
    q.train()
    assert not torch.allclose(q(enc), q(enc))
