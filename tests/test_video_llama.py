"""The composed model: data flow, position embeddings, limits, trainable set, full-size counts."""

from __future__ import annotations

import pytest
import torch

from model.config import VideoLlamaConfig
from model.device import pick_device, pick_dtype
from model.video_llama import FROZEN, TRAINABLE, build_model, trainable_parameters
from tests.tiny import tiny_fbank, tiny_frames, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_shapes_on_the_tiny_preset(model):
    cfg = model.config
    Qi, Qv, Qa = cfg.image_qformer.num_queries, cfg.video_qformer.num_queries, cfg.audio_qformer.num_queries
    H, D = cfg.image_qformer.hidden_size, cfg.llm.hidden_size
    frames = tiny_frames(cfg, batch=2, frames=3)
    assert model.encode_frames(frames).shape == (2, 3, Qi, H)
    assert model.encode_video(frames).shape == (2, Qv, D)
    assert model.encode_image(frames[:, 0]).shape == (2, Qv, D)
    fbank = tiny_fbank(cfg, batch=2, clips=4)
    assert model.encode_clips(fbank).shape == (2, 4, cfg.audio.out_dim)
    assert model.encode_audio(fbank).shape == (2, Qa, D)


def test_encode_video_is_the_reference_composition(model):
    cfg = model.config
    frames = tiny_frames(cfg, batch=2, frames=3)
    with torch.no_grad():
        per_frame = []
        for t in range(3):
            x = model.image_qformer(model.ln_vision(model.vision_encoder(frames[:, t])))  # (B, Qi, H)
            per_frame.append(x + model.frame_position_embedding.weight[t])  # same vector for all queries
        seq = torch.cat(per_frame, dim=1)  # (B, T*Qi, H), frame-major
        want = model.video_proj(model.video_qformer(seq))
        torch.testing.assert_close(model.encode_video(frames), want, rtol=1e-5, atol=1e-5)


def test_encode_audio_is_the_reference_composition(model):
    cfg = model.config
    fbank = tiny_fbank(cfg, batch=2, clips=3)
    with torch.no_grad():
        embs = torch.stack([model.audio_encoder(fbank[:, s]) for s in range(3)], dim=1)  # (B, S, E)
        want = model.audio_proj(model.audio_qformer(embs + model.audio_position_embedding.weight[:3]))
        torch.testing.assert_close(model.encode_audio(fbank), want, rtol=1e-5, atol=1e-5)


def test_image_is_a_one_frame_video(model):
    image = tiny_frames(model.config, batch=1, frames=1)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(image[:, 0]), model.encode_video(image))


def test_frozen_parts_give_no_grad_trainable_parts_do(model):
    frames = tiny_frames(model.config, batch=1, frames=2)
    feats = model.encode_frames(frames)
    assert not feats.requires_grad
    assert model.video_tokens(feats).requires_grad
    clips = model.encode_clips(tiny_fbank(model.config, clips=2))
    assert not clips.requires_grad and model.audio_tokens(clips).requires_grad


def test_too_many_frames_or_clips_are_clear_errors(model):
    cfg = model.config
    H = cfg.image_qformer.hidden_size
    with pytest.raises(ValueError, match=r"9 frames given .* 8 rows"):
        model.video_tokens(torch.zeros(1, cfg.max_frame_pos + 1, cfg.image_qformer.num_queries, H))
    with pytest.raises(ValueError, match=r"9 audio clips given .* 8 rows"):
        model.audio_tokens(torch.zeros(1, cfg.audio.num_clips + 1, cfg.audio.out_dim))
    with pytest.raises(ValueError, match=r"frames must be \(B, T, 3, H, W\)"):
        model.encode_frames(torch.zeros(3, 28, 28))


def test_missing_branch_is_a_clear_error():
    m = tiny_model(use_audio=False, with_llm=False)
    assert m.audio_encoder is None and m.audio_qformer is None
    with pytest.raises(RuntimeError, match="no audio_encoder"):
        m.encode_audio(tiny_fbank(m.config))
    with pytest.raises(RuntimeError, match="no llm"):
        m.embed_interleaved([torch.tensor([[1]])])


def test_embed_interleaved_places_pieces_in_order(model):
    D = model.config.llm.hidden_size
    ids_a, ids_b = torch.tensor([[1, 40, 41]]), torch.tensor([[42]])
    media = torch.randn(1, 5, D, dtype=torch.float64)
    out = model.embed_interleaved([ids_a, media, ids_b])
    table = model.llm.get_input_embeddings().weight
    assert out.shape == (1, 9, D) and out.dtype == table.dtype
    torch.testing.assert_close(out[0, :3], table[[1, 40, 41]])
    torch.testing.assert_close(out[0, 3:8], media[0].float())
    torch.testing.assert_close(out[0, 8], table[42])
    with pytest.raises(ValueError, match=rf"piece 1: media embeddings must be \(1, n, {D}\)"):
        model.embed_interleaved([ids_a, torch.randn(1, 5, D + 1)])


def test_trainable_set_is_exactly_the_originals(model):
    names = trainable_parameters(model)
    assert {n.split(".")[0] for n in names} == set(TRAINABLE)
    assert "video_qformer.query_tokens" in names and "audio_qformer.query_tokens" in names
    for name, p in model.named_parameters():
        assert p.requires_grad == (name.split(".")[0] in TRAINABLE), name
    model.train()
    try:
        for name in FROZEN:
            assert all(not m.training for m in getattr(model, name).modules()), name
        assert model.video_qformer.training and model.audio_qformer.training
    finally:
        model.eval()


def _count(module, skip_query_tokens=False):
    return sum(p.numel() for n, p in module.named_parameters() if not (skip_query_tokens and n == "query_tokens"))


@pytest.mark.parametrize("name,vl,al", [("video-llama-2-7b", 22_104_064, 22_855_680),
                                        ("video-llama-2-13b", 22_891_520, 23_643_136),
                                        ("video-llama-vicuna-7b", 22_104_064, 22_855_680)])
def test_full_size_counts_on_meta_match_the_released_checkpoints(name, vl, al):
    m = build_model(VideoLlamaConfig.from_name(name), device="meta", with_llm=False)
    assert _count(m.video_qformer, skip_query_tokens=True) == 18_905_088
    assert _count(m.audio_qformer, skip_query_tokens=True) == 19_691_520
    params = trainable_parameters(m)
    assert sum(p.numel() for n, p in params.items() if n.split(".")[0] in TRAINABLE[:3]) == vl
    assert sum(p.numel() for n, p in params.items() if n.split(".")[0] in TRAINABLE[3:]) == al
    assert all(p.device.type == "meta" for p in m.parameters())


def test_full_size_shapes_on_meta():
    m = build_model(VideoLlamaConfig.from_name("video-llama-2-7b"), device="meta", with_llm=True)
    s = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert s["vision_encoder.pos_embed"] == (1, 257, 1408)
    assert s["image_qformer.layers.0.cross_attn.k_proj.weight"] == (768, 1408)
    assert "image_qformer.layers.1.cross_attn.k_proj.weight" not in s
    assert s["frame_position_embedding.weight"] == (32, 768)
    assert s["video_qformer.query_tokens"] == (1, 32, 768)
    assert s["video_proj.weight"] == (4096, 768)
    assert s["audio_encoder.pos_embed"] == (1, 229, 768)
    assert s["audio_encoder.head_proj.weight"] == (1024, 768)
    assert s["audio_position_embedding.weight"] == (8, 1024)
    assert s["audio_qformer.layers.1.cross_attn.v_proj.weight"] == (768, 1024)
    assert s["audio_qformer.query_tokens"] == (1, 8, 768)
    assert s["llm.model.embed_tokens.weight"] == (32000, 4096)


def test_vicuna_13b_has_no_audio_branch():
    m = build_model(VideoLlamaConfig.from_name("video-llama-vicuna-13b"), device="meta", with_llm=False)
    assert m.audio_encoder is None and m.video_proj.out_features == 5120


def test_device_and_dtype_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device() == (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available()
                             else torch.device("cpu"))
    assert pick_dtype("cpu", "encoder") == pick_dtype("cpu", "llm") == torch.float32
    assert pick_dtype("cuda", "encoder") == torch.float16 and pick_dtype("cuda", "adapter") == torch.float32
    with pytest.raises(ValueError, match="unknown component 'vision'"):
        pick_dtype("cpu", "vision")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")
