"""The page config Gradio serves at /config must not drag the engine (and its weights) along:
Gradio deep-copies the config on every request, and a copied partial copied every model weight."""

from __future__ import annotations

import torch
from gradio import utils

from app.ui import build_demo
from model.chat.engine import ChatEngine
from tests import tiny


def test_config_copy_touches_no_model_weight(tmp_path, monkeypatch):
    engine = ChatEngine({"tiny": tiny.tiny_model()})
    try:
        demo = build_demo(engine, votes_path=tmp_path / "votes.jsonl")

        copies = []
        original = torch.nn.Parameter.__deepcopy__

        def counting(self, memo):
            copies.append(self.shape)
            return original(self, memo)

        monkeypatch.setattr(torch.nn.Parameter, "__deepcopy__", counting)
        copied = utils.safe_deepcopy(demo.config)  # what the /config route does per request
        assert copied["components"] and copies == []
        utils.safe_deepcopy({"engine": engine.models["tiny"].video_proj})
        assert copies  # the counter does see a weight that is copied
    finally:
        engine.close()
