"""Shared test setup: offline hub, deterministic seeds, tiny objects as fixtures."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

from tests import tiny  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg():
    return tiny.tiny_config()


@pytest.fixture(scope="session")
def tiny_tok():
    return tiny.tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    """A saved random tiny LLaMA folder, shared by the session (treat as read-only)."""
    return tiny.tiny_llm_folder(tmp_path_factory.mktemp("tiny_llm"))
