import json

import pytest

from model.config import PRESETS, ConfigError, VideoLlamaConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name, tmp_path):
    cfg = VideoLlamaConfig.from_name(name)
    assert cfg.name == name
    path = tmp_path / "config.json"
    cfg.to_json(path)
    assert VideoLlamaConfig.from_file(path) == cfg


def test_full_size_numbers_match_the_original():
    cfg = VideoLlamaConfig.from_name("video-llama-2-7b")
    assert (cfg.vision.width, cfg.vision.depth, cfg.vision.num_patches) == (1408, 39, 256)
    assert cfg.image_qformer.num_layers == 12 and cfg.image_qformer.cross_attention_freq == 2
    assert (cfg.video_qformer.num_queries, cfg.video_qformer.num_layers) == (32, 2)
    assert (cfg.audio_qformer.num_queries, cfg.audio_qformer.encoder_width) == (8, 1024)
    assert cfg.audio.grid == (12, 19) and cfg.audio.num_patches == 228
    assert cfg.llm.hidden_size == 4096
    assert VideoLlamaConfig.from_name("video-llama-2-13b").llm.hidden_size == 5120
    assert VideoLlamaConfig.from_name("video-llama-vicuna-7b").llm.template == "vicuna"


def test_unknown_preset_and_fields_are_errors(tmp_path):
    with pytest.raises(KeyError, match="known presets"):
        VideoLlamaConfig.from_name("video-llama-3")
    with pytest.raises(ConfigError, match="unknown field vision.depthh"):
        VideoLlamaConfig.from_dict({"vision": {"depthh": 3}})
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        VideoLlamaConfig.from_file(bad)


def test_mismatched_widths_are_rejected():
    data = VideoLlamaConfig.from_name("tiny").to_dict()
    data["audio"]["out_dim"] = 21
    with pytest.raises(ValueError, match="audio_qformer.encoder_width"):
        VideoLlamaConfig.from_dict(json.loads(json.dumps(data)))
