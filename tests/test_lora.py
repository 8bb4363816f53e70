"""LoRA on the LLM, active only for prompts with media; its place in the model folder."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from model import lora
from model.chat.engine import ChatEngine, GenerationSettings
from model.llm import load_llm
from model.weights import checkpoint as ck
from tests import tiny

GREEDY = GenerationSettings(max_new_tokens=16, do_sample=False)
SETTINGS = lora.LoraSettings(rank=4, alpha=8.0, target_modules=("q_proj", "v_proj"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "av.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=2",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-shortest", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)], check=True, timeout=60)
    return path


def _folders(tmp_path):
    """The same tiny model saved twice: without and with a LoRA adapter of non-zero weights."""
    llm_dir = tiny.tiny_llm_folder(tmp_path, seed=5)
    model = tiny.tiny_model(with_llm=False, seed=1, llm={"hf_path": str(llm_dir)})
    plain = ck.save_model_folder(model, tmp_path / "plain")
    model.llm, _ = load_llm(model.config.llm, precision="fp32", device="cpu")
    params = lora.add_adapter(model.llm, SETTINGS, "trained")
    with torch.no_grad():
        for _, p in params:
            p.normal_(0, 0.5)  # B starts at zero; a trained adapter's is not
    model.llm_adapter = "trained"
    with_adapter = ck.save_model_folder(model, tmp_path / "lora")
    return plain, with_adapter, model


def _answer(engine, name, question, media=None):
    conv = engine.new_conversation(name)
    if media is not None:
        engine.attach_media(conv, media)
    answer = "".join(engine.ask(conv, question, GREEDY))
    return answer, conv


def test_folder_holds_the_adapter_in_peft_format_and_round_trips(tmp_path):
    plain, folder, model = _folders(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["llm_adapter"] == "llm_adapter"
    assert sorted(p.name for p in (folder / "llm_adapter").iterdir()) == ["adapter_config.json",
                                                                         "adapter_model.safetensors"]
    peft_config = json.loads((folder / "llm_adapter" / "adapter_config.json").read_text())
    assert peft_config["r"] == 4 and peft_config["peft_type"] == "LORA"
    assert sorted(peft_config["target_modules"]) == ["q_proj", "v_proj"]
    loaded = ck.load_model(folder, precision="fp32", device="cpu")
    assert loaded.llm_adapter is not None
    saved = lora.adapter_state(model.llm, "trained")
    again = lora.adapter_state(loaded.llm, loaded.llm_adapter)
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)
    # a layer count worth of matrices: 2 layers x 2 targets x (A, B)
    assert lora.parameter_count(folder / "llm_adapter") == sum(v.numel() for v in saved.values())

    # peft itself reads the folder: PeftModel over a fresh LLM computes what our scope does
    from peft import PeftModel

    fresh, _ = load_llm(loaded.config.llm, precision="fp32", device="cpu")
    peft_model = PeftModel.from_pretrained(fresh, str(folder / "llm_adapter")).eval()
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad(), loaded.llm_scope(media=True):
        ours = loaded.llm(ids).logits
    with torch.no_grad():
        theirs = peft_model(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs)


def test_folder_without_adapter_loads_as_before(tmp_path):
    plain, _, _ = _folders(tmp_path)
    assert json.loads((plain / "config.json").read_text())["llm_adapter"] is None
    assert not (plain / "llm_adapter").exists()
    loaded = ck.load_model(plain, precision="fp32", device="cpu")
    assert loaded.llm_adapter is None
    assert lora.lora_layers(loaded.llm) == []  # nothing injected: the LLM is exactly the loaded one


def test_text_only_is_the_plain_llm_and_media_turns_use_the_adapter(tmp_path, clip):
    plain_dir, lora_dir, _ = _folders(tmp_path)
    plain = ck.load_model(plain_dir, precision="fp32", device="cpu")
    before = ChatEngine({"plain": plain})
    try:
        reference, _ = _answer(before, "plain", "Hello, who are you?")  # the LLM before any adapter exists
        plain_media, _ = _answer(before, "plain", "What is shown?", clip)
    finally:
        before.close()
    assert reference
    with_adapter = ck.load_model(lora_dir, precision="fp32", device="cpu")
    assert with_adapter.llm is plain.llm  # one shared LLM: the Compare tab's case
    engine = ChatEngine({"plain": plain, "lora": with_adapter})
    try:
        text, text_conv = _answer(engine, "lora", "Hello, who are you?")
        media, media_conv = _answer(engine, "lora", "What is shown?", clip)
        plain_text, _ = _answer(engine, "plain", "Hello, who are you?")
        plain_media_again, _ = _answer(engine, "plain", "What is shown?", clip)
        # a follow-up continues the media conversation's cache, under the same adapter
        follow = "".join(engine.ask(media_conv, "And then?", GREEDY))
    finally:
        engine.close()
    assert text == reference == plain_text  # text-only: token for token the plain LLM
    assert plain_media_again == plain_media  # a model without adapter is untouched by another's
    assert media != plain_media  # the same Q-Formers: only the adapter differs
    assert text_conv.kv.adapter is None and media_conv.kv.adapter == with_adapter.llm_adapter
    assert follow and media_conv.last_trace is not None


def test_kv_cache_of_another_adapter_setting_is_not_continued(tmp_path, clip):
    _, lora_dir, _ = _folders(tmp_path)
    model = ck.load_model(lora_dir, precision="fp32", device="cpu")
    engine = ChatEngine({"lora": model})
    try:
        first, conv = _answer(engine, "lora", "What is shown?", clip)
        cached = conv.kv
        conv.kv.adapter = None  # as if the cache had been filled without the adapter
        engine.regenerate(conv, GREEDY)
        again = "".join(engine.regenerate(conv, GREEDY))
    finally:
        engine.close()
    assert conv.kv is not cached and conv.kv.adapter == model.llm_adapter
    assert again == first  # recomputed from scratch with the adapter: the same answer


def test_scope_disables_adapters_after_use_and_keeps_them_frozen(tmp_path):
    _, lora_dir, _ = _folders(tmp_path)
    model = ck.load_model(lora_dir, precision="fp32", device="cpu")
    ids = torch.tensor([[1, 50, 51, 52]])
    with torch.no_grad():
        base = model.llm(ids).logits
        with model.llm_scope(media=True):
            adapted = model.llm(ids).logits
        after = model.llm(ids).logits
    assert not torch.allclose(base, adapted)
    assert torch.equal(base, after)
    assert not any(p.requires_grad for p in model.llm.parameters())


def test_bad_adapter_folders_are_clear_errors(tmp_path):
    _, lora_dir, _ = _folders(tmp_path)
    config = lora_dir / "llm_adapter" / "adapter_config.json"
    data = json.loads(config.read_text())
    data["r"] = 2  # the weights are rank 4
    config.write_text(json.dumps(data))
    with pytest.raises(lora.AdapterError, match="does not fit|size mismatch|rank"):
        ck.load_model(lora_dir, precision="fp32", device="cpu")
    config.unlink()
    with pytest.raises(lora.AdapterError, match="no adapter_config.json"):
        ck.load_model(lora_dir, precision="fp32", device="cpu")


def test_inspect_lists_the_adapter_with_its_parameter_count(tmp_path, capsys):
    from launch import main as launch

    plain, folder, model = _folders(tmp_path)
    assert launch(["inspect", "--model", str(folder), "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    adapter = report["components"]["llm_adapter"]
    saved = sum(v.numel() for v in lora.adapter_state(model.llm, "trained").values())
    assert adapter["params"] == saved == lora.parameter_count(folder / "llm_adapter")
    assert adapter["trainable"] is True
    assert launch(["inspect", "--model", str(plain), "--device", "cpu", "--json"]) == 0
    assert "llm_adapter" not in json.loads(capsys.readouterr().out)["components"]
    assert launch(["inspect", "--model", str(folder), "--device", "cpu"]) == 0
    assert "llm_adapter" in capsys.readouterr().out
