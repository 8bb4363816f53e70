"""Safe loading of checkpoint files and the model folder round trip."""

from __future__ import annotations

import io
import os
import pickle
import shutil

import pytest
import torch

from model.weights import checkpoint as ck
from tests import tiny


class _RunsCode:
    """A pickle payload that would create a marker file if it were ever executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _good_pth(tmp_path):
    path = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3}, path)
    return path


def test_load_pth_reads_tensors_memory_mapped(tmp_path):
    obj = ck.load_pth(_good_pth(tmp_path))
    assert torch.equal(obj["model"]["w"], torch.arange(6.0).view(2, 3))
    assert obj["epoch"] == 3


@pytest.mark.parametrize("writer", ["torch_save", "raw_pickle"])
def test_code_running_pickle_is_refused_and_not_run(tmp_path, writer):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    if writer == "torch_save":
        torch.save({"model": {"w": torch.zeros(2)}, "x": _RunsCode(marker)}, path)
    else:  # a plain pickle, as a hand-made malicious ".pth" would be
        with path.open("wb") as f:
            pickle.dump({"model": {}, "x": _RunsCode(marker)}, f, protocol=2)
    with pytest.raises(ck.UnsafeCheckpointError, match="would import or run code.*(system|posix)"):
        ck.load_pth(path)
    assert not marker.exists()


def test_truncated_zero_byte_foreign_and_missing_files(tmp_path):
    data = _good_pth(tmp_path).read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.pth").write_bytes(b"")
    (tmp_path / "notes.pth").write_text("these are my notes, not weights\n")
    with pytest.raises(ck.CorruptCheckpointError, match="truncated"):
        ck.load_pth(tmp_path / "trunc.pth")
    with pytest.raises(ck.CorruptCheckpointError, match="empty"):
        ck.load_pth(tmp_path / "zero.pth")
    with pytest.raises(ck.CorruptCheckpointError, match="not a PyTorch checkpoint"):
        ck.load_pth(tmp_path / "notes.pth")
    with pytest.raises(ck.MissingWeightsError, match="launch.py convert"):
        ck.load_pth(tmp_path / "absent.pth")


def test_legacy_pickle_format_still_loads(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(ck.load_pth(path)["w"], torch.ones(3))


def test_model_dict_requires_model_key(tmp_path):
    with pytest.raises(ck.CheckpointError, match="no 'model' state dict"):
        ck.model_dict({"w": torch.zeros(1)}, "x.pth")


def _folder(tmp_path, tiny_llm_dir, seed=0, **overrides):
    model = tiny.tiny_model(with_llm=False, seed=seed, llm={"hf_path": str(tiny_llm_dir)}, **overrides)
    return model, ck.save_model_folder(model, tmp_path / f"folder{seed}")


def test_model_folder_round_trip_gives_same_outputs(tmp_path, tiny_llm_dir):
    model, folder = _folder(tmp_path, tiny_llm_dir)
    assert sorted(p.name for p in folder.iterdir()) == [
        "audio_adapter.safetensors", "audio_encoder.safetensors", "config.json", "generation_config.json",
        "video_adapter.safetensors", "vision_encoder.safetensors"]
    loaded = ck.load_model(folder, precision="fp32", device="cpu")
    cfg = loaded.config
    frames, fbank = tiny.tiny_frames(cfg, frames=2), tiny.tiny_fbank(cfg, clips=3)
    torch.testing.assert_close(loaded.encode_video(frames), model.encode_video(frames))
    torch.testing.assert_close(loaded.encode_audio(fbank), model.encode_audio(fbank))
    assert loaded.tokenizer is not None and loaded.llm is not None
    assert set(loaded.fingerprints) == {"vision", "audio"}
    assert not any(p.requires_grad for p in loaded.vision_encoder.parameters())
    assert all(p.requires_grad for p in loaded.video_qformer.parameters())


def test_same_frozen_weights_are_shared_and_fingerprinted(tmp_path, tiny_llm_dir):
    _, folder_a = _folder(tmp_path, tiny_llm_dir, seed=0)
    folder_b = tmp_path / "folder_b"
    shutil.copytree(folder_a, folder_b)
    # folder_b: same frozen encoders, different (retrained) video adapter.
    other, _ = _folder(tmp_path, tiny_llm_dir, seed=1)
    adapter = ck.split_components(other.state_dict())["video_adapter"]
    ck.save_state_folder(adapter, other.config, tmp_path / "adapter_only")
    shutil.copy(tmp_path / "adapter_only" / "video_adapter.safetensors", folder_b)
    _, folder_c = _folder(tmp_path, tiny_llm_dir, seed=2)  # different encoders

    a = ck.load_model(folder_a, precision="fp32", device="cpu")
    b = ck.load_model(folder_b, precision="fp32", device="cpu")
    c = ck.load_model(folder_c, precision="fp32", device="cpu")
    assert a.fingerprints == b.fingerprints and a.fingerprints["vision"] != c.fingerprints["vision"]
    assert a.vision_encoder is b.vision_encoder and a.audio_encoder is b.audio_encoder
    assert a.vision_encoder is not c.vision_encoder
    assert a.llm is b.llm is c.llm  # same LLM folder and precision
    assert a.video_qformer is not b.video_qformer
    assert not torch.equal(a.video_proj.weight, b.video_proj.weight)


def test_shared_encoders_are_frozen_and_a_changed_one_is_not_shared_again(tmp_path, tiny_llm_dir):
    _, folder = _folder(tmp_path, tiny_llm_dir, seed=3)
    a = ck.load_model(folder, precision="fp32", device="cpu")
    a.train()  # training mode for the adapters; shared encoders stay frozen and in eval mode
    b = ck.load_model(folder, precision="fp32", device="cpu")
    assert a.vision_encoder is b.vision_encoder and a.audio_encoder is b.audio_encoder
    for module in (b.vision_encoder, b.ln_vision, b.image_qformer, b.audio_encoder):
        assert not module.training and not any(p.requires_grad for p in module.parameters())
    original = b.vision_encoder.pos_embed.detach().clone()

    with torch.no_grad():  # a user writes into one loaded model's encoder (as an optimizer step would)
        b.vision_encoder.pos_embed.add_(1.0)
    b.audio_encoder.requires_grad_(True)  # and unfreezes another
    c = ck.load_model(folder, precision="fp32", device="cpu")
    assert c.vision_encoder is not b.vision_encoder and c.audio_encoder is not b.audio_encoder
    assert torch.equal(c.vision_encoder.pos_embed, original)  # the file's weights, not b's change
    assert ck.load_model(folder, precision="fp32", device="cpu").vision_encoder is c.vision_encoder


def test_a_load_for_training_gets_its_own_encoders_and_llm(tmp_path, tiny_llm_dir):
    _, folder = _folder(tmp_path, tiny_llm_dir, seed=4)
    served = ck.load_model(folder, precision="fp32", device="cpu")
    trained = ck.load_model(folder, precision="fp32", device="cpu", for_training=True)
    for name in ("vision_encoder", "ln_vision", "image_qformer", "audio_encoder", "llm"):
        assert getattr(trained, name) is not getattr(served, name), name
    torch.testing.assert_close(trained.vision_encoder.pos_embed, served.vision_encoder.pos_embed)
    with torch.no_grad():
        trained.vision_encoder.pos_embed.mul_(0)
    again = ck.load_model(folder, precision="fp32", device="cpu")
    assert again.vision_encoder is served.vision_encoder and again.llm is served.llm
    assert not torch.equal(again.vision_encoder.pos_embed, trained.vision_encoder.pos_embed)


def test_branches_subset_and_missing_files(tmp_path, tiny_llm_dir):
    _, folder = _folder(tmp_path, tiny_llm_dir)
    vision_only = ck.load_model(folder, precision="fp32", device="cpu", branches=["vision"])
    assert vision_only.audio_encoder is None and vision_only.vision_encoder is not None
    (folder / "audio_adapter.safetensors").unlink()
    with pytest.raises(ck.MissingWeightsError, match="audio_adapter.safetensors.*launch.py convert"):
        ck.load_model(folder, precision="fp32", device="cpu")
    with pytest.raises(ck.MissingWeightsError, match="no config.json"):
        ck.load_model(tmp_path / "nowhere", device="cpu")


def test_folder_with_wrong_keys_or_shapes_is_a_clear_error(tmp_path, tiny_llm_dir):
    from safetensors.torch import load_file, save_file
    _, folder = _folder(tmp_path, tiny_llm_dir)
    path = folder / "video_adapter.safetensors"
    state = load_file(path)
    state["video_proj.weight"] = torch.zeros(3, 3)
    save_file(state, path)
    with pytest.raises(ck.CheckpointError, match=r"video_proj.weight: expected \(48, 32\), found \(3, 3\)"):
        ck.load_model(folder, precision="fp32", device="cpu")
    del state["video_proj.weight"]
    state["video_proj.extra"] = torch.zeros(1)
    save_file(state, path)
    with pytest.raises(ck.CheckpointError, match="missing keys.*video_proj.weight.*unexpected keys.*video_proj.extra"):
        ck.load_model(folder, precision="fp32", device="cpu")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ck.CorruptCheckpointError, match="truncated"):
        ck.load_model(folder, precision="fp32", device="cpu")


class _Response(io.BytesIO):
    """What ``urllib.request.urlopen`` returns, for a whole file (tests/test_download.py serves real HTTP)."""

    status = 200

    def __init__(self, body: bytes):
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


def test_download_fetches_release_files_with_network_faked(tmp_path, monkeypatch, capsys):
    import urllib.request

    import huggingface_hub

    import launch

    calls = []

    def fake_snapshot_download(repo_id, allow_patterns, local_dir):
        calls.append((repo_id, sorted(allow_patterns)))
        return str(local_dir)

    def fake_urlopen(request, timeout=None):
        calls.append(request.full_url)
        return _Response(b"weights of " + request.full_url.encode())

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert launch.main(["download", "video-llama-2-7b", "--dir", str(tmp_path)]) == 0
    repo = ("DAMO-NLP-SG/Video-LLaMA-2-7B-Finetuned",
            sorted(["VL_LLaMA_2_7B_Finetuned.pth", "AL_LLaMA_2_7B_Finetuned.pth", "imagebind_huge.pth",
                    "llama-2-7b-chat-hf/*"]))
    assert calls[0] == repo
    assert calls[1:] == [
        "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth",
        "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/blip2_pretrained_flant5xxl.pth"]
    assert (tmp_path / "eva_vit_g.pth").read_bytes().startswith(b"weights of https://")
    assert not list(tmp_path.glob("*.part"))
    out = capsys.readouterr().out
    assert "launch.py convert --preset video-llama-2-7b" in out and "--llm " + str(tmp_path) in out

    calls.clear()  # already-present files are not fetched again; --no-audio skips the audio files
    assert launch.main(["download", "video-llama-2-7b", "--dir", str(tmp_path), "--no-audio"]) == 0
    assert calls == [("DAMO-NLP-SG/Video-LLaMA-2-7B-Finetuned",
                      sorted(["VL_LLaMA_2_7B_Finetuned.pth", "llama-2-7b-chat-hf/*"]))]


def test_download_of_pretrained_weights_prints_the_convert_line_of_its_architecture(tmp_path, monkeypatch, capsys):
    import urllib.request

    import huggingface_hub

    import launch

    repos = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, allow_patterns, local_dir: repos.append(repo_id) or str(local_dir))
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout=None: _Response(b"w"))
    assert launch.main(["download", "video-llama-2-13b-pretrained", "--dir", str(tmp_path)]) == 0
    assert repos == ["DAMO-NLP-SG/Video-LLaMA-2-13B-Pretrained"]
    out = capsys.readouterr().out
    assert "--preset video-llama-2-13b " in out and "AL_LLaMA_2_13B_Pretrained.pth" in out
