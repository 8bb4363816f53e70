"""The paper's VL runs on a tiny model and a few hand-written lines of each original data format."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from model.weights.checkpoint import save_model_folder  # noqa: E402
from tests.tiny import tiny_llm_folder, tiny_model  # noqa: E402
from train import paper_pipeline  # noqa: E402
from train.recipes import get_recipe  # noqa: E402
from train.trainer import LOG_FILE  # noqa: E402
from train.world.render import render_clip  # noqa: E402
from train.world.scene import sample_scene, scene_rng  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for i in range(2):  # two videos, used by WebVid and VideoChat
        scene = sample_scene(scene_rng(3, "train", i))
        render_clip(scene, root / "webvid" / "videos" / "000" / f"v{i}.mp4")
        render_clip(scene, root / "videochat_instruct" / "videos" / f"v{i}.mp4")
    with open(root / "webvid" / "results_2M_train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        w.writerow(["v0", "http://x/v0.mp4", "PT00H00M04S", "000", "A red shape moves left."])
        w.writerow(["v1", "http://x/v1.mp4", "PT00H00M04S", "000", "Shapes (two) bounce!"])
    images = {"llava_cc3m/images": "GCC_1.jpg", "cc_sbu_align/image": "7.jpg", "coco/train2014": "COCO_train2014_1.jpg"}
    for folder, name in images.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(root / folder / name)
    (root / "llava_cc3m" / "chat.json").write_text(json.dumps([{"id": "1", "image": "GCC_1.jpg", "conversations": [
        {"from": "human", "value": "Describe the image.\n<image>"}, {"from": "gpt", "value": "a grey square"}]}]))
    (root / "cc_sbu_align" / "filter_cap.json").write_text(json.dumps(
        {"annotations": [{"image_id": "7", "caption": "A plain grey picture."}]}))
    (root / "llava_instruct").mkdir()
    (root / "llava_instruct" / "llava_instruct_150k.json").write_text(json.dumps([{"id": "1", "image": "1.jpg",
        "conversations": [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Grey."},
                          {"from": "human", "value": "Anything else?"}, {"from": "gpt", "value": "No."}]}]))
    (root / "videochat_instruct" / "videochat_instruct_11k.json").write_text(json.dumps([{"video": "v1.mp4",
        "QA": [{"i": "Watch closely.", "q": "What moves?", "a": "Two shapes."}]}]))
    return root


@pytest.fixture
def init_folder(tmp_path):
    model = tiny_model(with_llm=False, llm={"hf_path": "llm"})
    folder = tmp_path / "init"
    save_model_folder(model, folder)
    tiny_llm_folder(folder)
    return folder


def _tiny_run(name):
    recipe = get_recipe(name)
    spec = recipe.stages[0]
    spec.train = dataclasses.replace(spec.train, max_steps=3, batch_size=2, warmup_steps=1, save_every=3,
                                     log_every=1)
    return recipe


@pytest.mark.parametrize("name", ["vl-stage1", "vl-stage2"])
def test_vl_stage_trains_on_original_formats(name, data_root, init_folder, tmp_path):
    torch.manual_seed(0)
    final = paper_pipeline.run_paper_stage(_tiny_run(name), tmp_path / "out", init_folder, data_root)
    rows = [json.loads(x) for x in (tmp_path / "out" / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    assert (final / "video_adapter.safetensors").is_file() and (final / "config.json").is_file()


def test_blip_caption_cleaning():
    assert paper_pipeline.blip_caption('A "Big" dog (runs)!  Fast; ok~') == "a big dog runs fast ok"
    assert len(paper_pipeline.blip_caption("w " * 80).split()) == 50


def test_caption_and_conversation_examples_supervise_only_the_text(data_root, init_folder):
    model = tiny_model(with_llm=False)
    tok = model.tokenizer
    sources = paper_pipeline.load_sources(get_recipe("vl-stage2").stages[0], data_root)
    by_name = {s.name: s.records[0] for s in sources}
    spec1, spec2 = get_recipe("vl-stage1").stages[0], get_recipe("vl-stage2").stages[0]
    cap = paper_pipeline.record_example(paper_pipeline.load_sources(spec1, data_root)[0].records[0], spec1, tok,
                                        "llama2", None, "video")
    assert cap.pieces[1] == "video" and cap.supervised == [False, False, True]
    assert tok.decode(cap.pieces[2]).startswith("a red shape moves left")
    conv = paper_pipeline.record_example(by_name["llava_instruct"], spec2, tok, "llama2", None, "video")
    answers = [tok.decode(p) for p, s in zip(conv.pieces, conv.supervised, strict=True) if s]
    assert [a.strip() for a in answers] == ["Grey. </s>", "No. </s>"]
    al = paper_pipeline.record_example(by_name["llava_instruct"], spec2, tok, "llama2", None, "audio")
    assert "audio" in al.pieces and "video" not in al.pieces


def test_paper_stage_with_lora_switched_on_saves_a_trained_adapter(data_root, init_folder, tmp_path):
    """``--set lora.rank=4`` on a paper recipe: the adapter trains beside the Q-Former and the final
    folder carries it (peft format), loadable as any folder."""
    from model import lora
    from model.weights.checkpoint import load_model
    from train.overrides import apply_overrides

    torch.manual_seed(0)
    recipe = _tiny_run("vl-stage2")
    apply_overrides(recipe, ["lora.rank=4", "lora.target_modules=q_proj,v_proj"])
    final = paper_pipeline.run_paper_stage(recipe, tmp_path / "out", init_folder, data_root)
    assert json.loads((final / "config.json").read_text())["llm_adapter"] == "llm_adapter"
    (final / "llm").symlink_to(init_folder / "llm")  # the init folder's LLM, by the same relative path
    loaded = load_model(final, precision="fp32", device="cpu")
    state = lora.adapter_state(loaded.llm, loaded.llm_adapter)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in state.items())  # B left zero: it trained
