"""Shared by the app tests: a real chat engine on tiny random models, and the app served
on 127.0.0.1 at a free port from a background thread."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

from model.engine import ChatEngine
from model.media_common import LoadOptions
from tests.tiny import tiny_model

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CLIP = ASSETS / "red_square_low_tone.mp4"
SILENT_CLIP = ASSETS / "green_square_silent.mp4"
IMAGE = ASSETS / "yellow_square.png"
SOUND = ASSETS / "rising_tone.wav"
# The loader's fbank is the full-size 128 x 204; the tiny audio encoder is resized to take it.
TINY_AUDIO = {"num_mel_bins": 128, "target_length": 204}


def tiny_models() -> dict:
    """Two tiny models sharing frozen encoders (same weights and fingerprints), with
    different adapters, so they answer differently but encode each file once."""
    left = tiny_model(seed=0, audio=TINY_AUDIO)
    right = tiny_model(seed=0, audio=TINY_AUDIO)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for module in (right.video_proj, right.audio_proj):
            for param in module.parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return {"tiny-left": left, "tiny-right": right}


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
