"""Shared by the app tests: a real chat engine on tiny random models, and the app served
on 127.0.0.1 at a free port from a background thread."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from torch import nn

from model.chat.engine import ChatEngine
from model.media.common import LoadOptions
from tests.tiny import tiny_model

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CLIP = ASSETS / "red_square_low_tone.mp4"
SILENT_CLIP = ASSETS / "green_square_silent.mp4"
IMAGE = ASSETS / "yellow_square.png"
SOUND = ASSETS / "rising_tone.wav"


def tiny_models() -> dict:
    """Two tiny models sharing frozen encoders (same weights and fingerprints), with
    different adapters, so they answer differently but encode each file once."""
    left = _without_early_end(tiny_model(seed=0))  # the loader makes the tiny preset's fbank size
    right = _without_early_end(tiny_model(seed=0))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for module in (right.video_proj, right.audio_proj):
            for param in module.parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return {"tiny-left": left, "tiny-right": right}


def _without_early_end(model):
    """A bias against the end token: random weights may pick it after one character, and the
    tests need answers long enough to be seen streaming (they stop at ``max_new_tokens``)."""
    head = model.llm.lm_head
    biased = nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[model.tokenizer.eos_token_id] = -1e4
    model.llm.lm_head = biased
    return model


def tiny_engine(concurrency: int = 2) -> ChatEngine:
    models = tiny_models()
    image_size = next(iter(models.values())).config.vision.image_size
    return ChatEngine(models, concurrency=concurrency, queue_size=16,
                      media_options=LoadOptions(image_size=image_size))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(engine: ChatEngine, votes_path: Path, concurrency: int = 2):
    """Build and serve the app without blocking; returns (demo, url). Call demo.close()."""
    from app.ui import build_demo, serve

    max_frames = min(m.config.max_frame_pos for m in engine.models.values())
    demo = build_demo(engine, votes_path=votes_path, max_frames=max_frames, concurrency=concurrency)
    _, url, _ = serve(demo, host="127.0.0.1", port=free_port(), concurrency=concurrency,
                      votes_path=votes_path, block=False, quiet=True)
    return demo, url
