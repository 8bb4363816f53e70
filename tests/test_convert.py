"""The converter: official key names and layouts -> our model, checked three ways.

1. Tiny random files written with the original keys load (through ``launch.py convert`` and
   ``load_model``) into our model, which then computes the same as the reference math
   written here directly on the original tensors (EVA's q/v bias, BERT names, ImageBind).
2. Full-size meta tensors keyed like every preset's released files convert to exactly our
   meta model's keys and shapes, and the parameter counts match the reference document.
3. Wrong files, keys and shapes fail with errors naming them.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import launch
from model.commands.convert import convert_files, expected_shapes
from model.config import PRESETS, VideoLlamaConfig
from model.video_llama import build_audio_branch, build_vision_branch
from model.weights import convert as conv
from model.weights.checkpoint import CorruptCheckpointError, UnsafeCheckpointError, load_model
from tests import official_format as off
from tests import tiny


# -- reference math on original-keyed tensors ------------------------------------------------
def _ln(x, sd, key, eps):
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], eps)


def _lin(x, sd, key):
    return F.linear(x, sd[key + ".weight"], sd.get(key + ".bias"))


def _attend(q, k, v, heads):
    B, Nq, D = q.shape
    q, k, v = (t.reshape(B, t.shape[1], heads, D // heads).transpose(1, 2) for t in (q, k, v))
    att = (q @ k.transpose(-1, -2) / math.sqrt(D // heads)).softmax(-1)
    return (att @ v).transpose(1, 2).reshape(B, Nq, D)


def ref_eva(sd, images, cfg):
    """LAVIS EVA ViT forward (39 of 40 blocks) followed by BLIP-2's ln_vision."""
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=cfg.patch_size)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(len(x), -1, -1), x], 1) + sd["pos_embed"]
    W = cfg.width
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        h = _ln(x, sd, b + "norm1", cfg.norm_eps)
        bias = torch.cat([sd[b + "attn.q_bias"], torch.zeros(W), sd[b + "attn.v_bias"]])
        q, k, v = F.linear(h, sd[b + "attn.qkv.weight"], bias).split(W, dim=-1)
        x = x + _lin(_attend(q, k, v, cfg.num_heads), sd, b + "attn.proj")
        h = _ln(x, sd, b + "norm2", cfg.norm_eps)
        x = x + _lin(F.gelu(_lin(h, sd, b + "mlp.fc1")), sd, b + "mlp.fc2")
    return x


def ref_qformer(sd, bert, queries, enc, cfg):
    """LAVIS BertModel query path with pruned text parts (post-LN)."""
    eps, heads = cfg.norm_eps, cfg.num_heads
    x = _ln(sd[queries].expand(len(enc), -1, -1), sd, f"{bert}.bert.embeddings.LayerNorm", eps)
    for i in range(cfg.num_layers):
        p = f"{bert}.bert.encoder.layer.{i}."
        for kind, ctx in (("attention", x), ("crossattention", enc)):
            if p + kind + ".self.query.weight" not in sd:
                continue
            a = _attend(_lin(x, sd, p + kind + ".self.query"), _lin(ctx, sd, p + kind + ".self.key"),
                        _lin(ctx, sd, p + kind + ".self.value"), heads)
            x = _ln(x + _lin(a, sd, p + kind + ".output.dense"), sd, p + kind + ".output.LayerNorm", eps)
        h = _lin(F.gelu(_lin(x, sd, p + "intermediate_query.dense")), sd, p + "output_query.dense")
        x = _ln(x + h, sd, p + "output_query.LayerNorm", eps)
    return x


def ref_video(files, frames, cfg):
    eva, blip2, vl = files["eva"], files["blip2"]["model"], files["vl"]["model"]
    B, T = frames.shape[:2]
    x = ref_eva(eva, frames.flatten(0, 1), cfg.vision)
    x = _ln(x, blip2, "ln_vision", cfg.vision.ln_vision_eps)
    q = ref_qformer(blip2, "Qformer", "query_tokens", x, cfg.image_qformer)  # (B*T, Q, H)
    q = q.view(B, T, *q.shape[1:]) + vl["video_frame_position_embedding.weight"][:T][None, :, None]
    v = ref_qformer(vl, "video_Qformer", "video_query_tokens", q.flatten(1, 2), cfg.video_qformer)
    return _lin(v, vl, "llama_proj")


def ref_audio(files, fbank, cfg):
    """ImageBind audio modality (sequence-first MultiheadAttention, as the original) + AL adapter."""
    ib, al, a = files["imagebind"], files["al"]["model"], cfg.audio
    B, S = fbank.shape[:2]
    p = "modality_preprocessors.audio."
    x = F.conv2d(fbank.flatten(0, 1), ib[p + "rgbt_stem.proj.weight"], stride=a.stride).flatten(2).transpose(1, 2)
    x = _ln(x, ib, p + "rgbt_stem.norm_layer", 1e-5)
    x = torch.cat([ib[p + "cls_token"].expand(len(x), -1, -1), x], 1) + ib[p + "pos_embedding_helper.pos_embed"]
    x = x.transpose(0, 1)  # (L, N, W): ImageBind's trunk layout
    for i in range(a.depth):
        b = f"modality_trunks.audio.blocks.{i}."
        h = _ln(x, ib, b + "norm_1", a.norm_eps)
        out, _ = F.multi_head_attention_forward(
            h, h, h, a.width, a.num_heads, ib[b + "attn.in_proj_weight"], ib[b + "attn.in_proj_bias"],
            ib[b + "attn.bias_k"], ib[b + "attn.bias_v"], False, 0.0, ib[b + "attn.out_proj.weight"],
            ib[b + "attn.out_proj.bias"], training=False, need_weights=False)
        x = x + out
        x = x + _lin(F.gelu(_lin(_ln(x, ib, b + "norm_2", a.norm_eps), ib, b + "mlp.fc1")), ib, b + "mlp.fc2")
    cls = _ln(x.transpose(0, 1), ib, "modality_heads.audio.0", 1e-6)[:, 0]
    emb = F.normalize(F.linear(cls, ib["modality_heads.audio.2.weight"]), dim=-1)
    emb = emb * ib["modality_postprocessors.audio.1.log_logit_scale"].exp()
    emb = emb.view(B, S, -1) + al["audio_position_embedding.weight"][:S]
    return _lin(ref_qformer(al, "audio_Qformer", "audio_query_tokens", emb, cfg.audio_qformer), al, "audio_llama_proj")


# -- 1. tiny files through the command and the loader -------------------------------------------
@pytest.fixture
def official_tiny(tmp_path):
    cfg = tiny.tiny_config()
    paths = off.write_official_files(cfg, tmp_path / "official")
    return cfg, paths


def test_converted_tiny_model_matches_reference_math(tmp_path, official_tiny, tiny_llm_dir, monkeypatch):
    cfg, paths = official_tiny
    monkeypatch.setitem(PRESETS, "tiny-test", PRESETS["tiny"])
    out = tmp_path / "folder"
    code = launch.main(["convert", "--preset", "tiny-test", "--vl", str(paths["vl"]), "--al", str(paths["al"]),
                        "--eva", str(paths["eva"]), "--blip2", str(paths["blip2"]),
                        "--imagebind", str(paths["imagebind"]), "--llm", str(tiny_llm_dir), "--out", str(out)])
    assert code == 0
    model = load_model(out, precision="fp32", device="cpu")
    files = {name: torch.load(path, weights_only=True) for name, path in paths.items()}
    frames, fbank = tiny.tiny_frames(cfg, batch=2, frames=3), tiny.tiny_fbank(cfg, batch=2, clips=3)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(frames), ref_video(files, frames, cfg), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.encode_audio(fbank), ref_audio(files, fbank, cfg), rtol=1e-4, atol=1e-4)
    # The 40th EVA block (here: block ``depth``) is in the file but not in the model.
    assert f"blocks.{cfg.vision.depth}.attn.qkv.weight" in files["eva"]
    assert len(model.vision_encoder.blocks) == cfg.vision.depth


def test_eva_accepts_exactly_the_documented_leftover_block():
    cfg = VideoLlamaConfig.from_name("tiny").vision
    meta = off.meta_maker()
    depth = cfg.depth
    for extra in (0, 1):  # without it, or with the released file's one unused block
        state = conv.convert_eva(off.eva_state_dict(cfg, meta, extra_blocks=extra), depth)
        assert f"vision_encoder.blocks.{depth - 1}.attn.q_bias" in state
        assert not any(k.startswith(f"vision_encoder.blocks.{depth}.") for k in state)
    first_beyond = rf"unexpected key 'blocks\.{depth + 1}\.[a-z_.0-9]+'.*up to {depth + 2}"
    with pytest.raises(conv.ConversionError, match=first_beyond):
        conv.convert_eva(off.eva_state_dict(cfg, meta, extra_blocks=3), depth)
    one_stray = off.eva_state_dict(cfg, meta) | {f"blocks.{depth + 5}.mlp.fc1.bias": meta((cfg.mlp_dim,))}
    with pytest.raises(conv.ConversionError, match=f"'blocks.{depth + 5}.mlp.fc1.bias'"):
        conv.convert_eva(one_stray, depth)


def test_old_fused_qkv_bias_is_split_without_changing_the_output():
    cfg = VideoLlamaConfig.from_name("tiny").vision
    W = cfg.width
    fused = torch.cat([torch.arange(W) + 1.0, torch.full((W,), 7.0), -torch.arange(W) - 1.0])
    other = torch.ones(3)
    out = conv.unfuse_qkv_bias({"vision_encoder.blocks.2.attn.qkv.bias": fused, "video_proj.bias": other})
    assert set(out) == {"vision_encoder.blocks.2.attn.q_bias", "vision_encoder.blocks.2.attn.v_bias", "video_proj.bias"}
    assert out["vision_encoder.blocks.2.attn.q_bias"].tolist() == (torch.arange(W) + 1.0).tolist()
    assert out["vision_encoder.blocks.2.attn.v_bias"].tolist() == (-torch.arange(W) - 1.0).tolist()
    with pytest.raises(conv.ConversionError, match="qkv.bias has shape"):
        conv.unfuse_qkv_bias({"vision_encoder.blocks.0.attn.qkv.bias": torch.ones(W)})


def test_copy_llm_rewrites_bin_shards_as_safetensors(tmp_path, tiny_llm_dir):
    from model.commands.convert import copy_llm
    from model.llm import load_llm
    src = tmp_path / "bin_llm"
    src.mkdir()
    for path in tiny_llm_dir.iterdir():
        if path.suffix != ".safetensors":
            (src / path.name).write_bytes(path.read_bytes())
    state = tiny.tiny_llm().state_dict()
    torch.save({k: v for k, v in state.items()}, src / "pytorch_model.bin")
    copy_llm(src, tmp_path / "copied")
    assert (tmp_path / "copied" / "model.safetensors").is_file()
    assert not list((tmp_path / "copied").glob("*.bin"))
    cfg = tiny.tiny_config().llm
    cfg.hf_path = str(tmp_path / "copied")
    llm, _ = load_llm(cfg, precision="fp32", device="cpu")
    torch.testing.assert_close(llm.lm_head.weight, state["lm_head.weight"])


# -- 2. full-size keys and shapes on the meta device ------------------------------------------
# Parameter counts from shared/reference/videollama.md section 3.3/3.4 (trainable keys x 12 B = file size).
REFERENCE_COUNTS = {"video-llama-2-7b": (22_104_064, 22_855_680), "video-llama-2-13b": (22_891_520, 23_643_136)}


@pytest.mark.parametrize("preset", [p for p in PRESETS if p not in ("tiny", "toy-world")])  # released ones
def test_full_size_official_keys_convert_to_our_meta_model(preset):
    cfg = VideoLlamaConfig.from_name(preset)
    meta = off.meta_maker()
    parts = [("eva", conv.convert_eva(off.eva_state_dict(cfg.vision, meta), cfg.vision.depth)),
             ("blip2", conv.convert_blip2(off.blip2_state_dict(cfg, meta))),
             ("vl", conv.convert_videollama(off.vl_state_dict(cfg, meta)))]
    if cfg.use_audio:
        parts += [("imagebind", conv.convert_imagebind_audio(off.imagebind_state_dict(cfg.audio, meta), 20.0)),
                  ("al", conv.convert_videollama(off.al_state_dict(cfg, meta)))]
    state = conv.merge(*parts)
    conv.check_against(state, expected_shapes(cfg), what=preset)  # raises on any difference

    D = cfg.llm.hidden_size
    assert state["video_proj.weight"].shape == (D, 768)
    assert state["video_qformer.query_tokens"].shape == (1, 32, 768)
    assert state["frame_position_embedding.weight"].shape == (32, 768)
    assert state["vision_encoder.pos_embed"].shape == (1, 257, 1408)
    assert state["vision_encoder.blocks.38.attn.q_bias"].shape == (1408,)
    assert "vision_encoder.blocks.38.attn.qkv.bias" not in state
    assert "vision_encoder.blocks.39.norm1.weight" not in state
    assert state["image_qformer.layers.10.cross_attn.k_proj.weight"].shape == (768, 1408)
    assert "image_qformer.layers.11.cross_attn.k_proj.weight" not in state

    def count(prefixes):
        return sum(t.numel() for k, t in state.items() if k.startswith(prefixes))

    assert count("video_qformer.layers.") + count("video_qformer.input_norm") == 18_905_088
    if cfg.use_audio:
        assert state["audio_position_embedding.weight"].shape == (8, 1024)
        assert state["audio_qformer.layers.0.cross_attn.v_proj.weight"].shape == (768, 1024)
        assert count("audio_qformer.layers.") + count("audio_qformer.input_norm") == 19_691_520
        assert state["audio_encoder.pos_embed"].shape == (1, 229, 768)
    if preset in REFERENCE_COUNTS:
        vl_count, al_count = REFERENCE_COUNTS[preset]
        assert count(("frame_position_embedding", "video_qformer", "video_proj")) == vl_count
        assert count(("audio_position_embedding", "audio_qformer", "audio_proj")) == al_count
    # Every component's parameters, counted on our meta model, equal the original's tensors
    # (the converted dict holds exactly those, renamed): no parameter the original lacks.
    with torch.device("meta"):
        built = build_vision_branch(cfg) | (build_audio_branch(cfg) if cfg.use_audio else {})
    for name, module in built.items():
        buffers = {f"{name}.{k}" for k, _ in module.named_buffers()}
        theirs = count(f"{name}.") - sum(state[k].numel() for k in buffers if k in state)
        assert sum(p.numel() for p in module.parameters()) == theirs, name
    assert sum(p.numel() for p in built["vision_encoder"].parameters()) == 985_894_528


# -- 3. bad inputs ------------------------------------------------------------------------------
def test_wrong_size_checkpoint_names_key_and_shapes():
    cfg7, cfg13 = VideoLlamaConfig.from_name("video-llama-2-7b"), VideoLlamaConfig.from_name("video-llama-2-13b")
    state = conv.convert_videollama(off.vl_state_dict(cfg13, off.meta_maker()))
    expected = {k: v for k, v in expected_shapes(cfg7).items()
                if k.split(".")[0] in ("video_qformer", "video_proj", "frame_position_embedding")}
    with pytest.raises(conv.ConversionError, match=r"video_proj.weight: expected \(4096, 768\), found \(5120, 768\)"):
        conv.check_against(state, expected)


def test_unknown_and_foreign_keys_are_named():
    cfg = tiny.tiny_config()
    sd = off.vl_state_dict(cfg, off.random_maker())
    sd["video_Qformer.bert.encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(1)
    with pytest.raises(conv.ConversionError, match="attention.self.rotary.weight"):
        conv.convert_videollama(sd)
    with pytest.raises(conv.ConversionError, match="unknown checkpoint key 'foo.bar'"):
        conv.get_mapped_key("foo.bar", conv.EVA_TO_OURS)
    eva = off.eva_state_dict(cfg.vision, off.random_maker())
    with pytest.raises(conv.ConversionError, match="BLIP-2 checkpoint.*unexpected keys.*blocks.0"):
        conv.convert_blip2(eva)  # an EVA file where the BLIP-2 file belongs


def test_imagebind_logit_scale_is_checked_not_dropped():
    cfg = tiny.tiny_config()
    sd = off.imagebind_state_dict(cfg.audio, off.random_maker())
    sd["modality_postprocessors.audio.1.log_logit_scale"] = torch.tensor(math.log(10.0))
    with pytest.raises(conv.ConversionError, match="log_logit_scale.*log\\(20.0\\)"):
        conv.convert_imagebind_audio(sd, logit_scale=20.0)


def test_branch_given_twice_is_an_error(official_tiny):
    cfg, paths = official_tiny
    with pytest.raises(conv.ConversionError, match="in both"):
        convert_files(cfg, paths["eva"], paths["blip2"], paths["vl"], al=paths["vl"], imagebind=paths["imagebind"])


def test_bad_files_through_convert_files(official_tiny, tmp_path):
    cfg, paths = official_tiny
    truncated = tmp_path / "VL_truncated.pth"
    truncated.write_bytes(paths["vl"].read_bytes()[:1000])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        convert_files(cfg, paths["eva"], paths["blip2"], truncated, paths["al"], paths["imagebind"])
    import os
    marker = tmp_path / "RAN"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "eva_evil.pth"
    torch.save({"cls_token": torch.zeros(1), "x": Payload()}, evil)
    with pytest.raises(UnsafeCheckpointError):
        convert_files(cfg, evil, paths["blip2"], paths["vl"], paths["al"], paths["imagebind"])
    assert not marker.exists()
    with pytest.raises(ValueError, match="needs both --al and --imagebind"):
        convert_files(cfg, paths["eva"], paths["blip2"], paths["vl"], paths["al"], None)


def test_convert_command_vision_only_and_audio_args_for_a_silent_preset(tmp_path, official_tiny, tiny_llm_dir,
                                                                         monkeypatch, capsys):
    cfg, paths = official_tiny
    monkeypatch.setitem(PRESETS, "tiny-silent", {**PRESETS["tiny"], "use_audio": False})
    base = ["convert", "--vl", str(paths["vl"]), "--eva", str(paths["eva"]), "--blip2", str(paths["blip2"]),
            "--llm", str(tiny_llm_dir)]
    assert launch.main(base + ["--preset", "tiny-silent", "--al", str(paths["al"]), "--out", str(tmp_path / "x")]) == 2
    assert "no audio branch" in capsys.readouterr().err  # the message only, no traceback
    with pytest.raises(ValueError, match="no audio branch"):  # --debug lets the error through
        launch.main(base + ["--preset", "tiny-silent", "--al", str(paths["al"]), "--out", str(tmp_path / "x"),
                            "--debug"])
    monkeypatch.setitem(PRESETS, "tiny-test", PRESETS["tiny"])
    assert launch.main(base + ["--preset", "tiny-test", "--out", str(tmp_path / "vision")]) == 0
    assert "vision branch only" in capsys.readouterr().out
    model = load_model(tmp_path / "vision", precision="fp32", device="cpu")
    assert model.audio_encoder is None and model.vision_encoder is not None
    assert model.config.llm.hf_path == str(tiny_llm_dir.resolve())
