"""A real browser on the real app: headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright loads the page, uploads a clip, asks, watches the answer stream in, and saves a
screenshot that must not be blank.

Needs: `apt-get install -y chromium` and `pip install playwright` (no browser download:
Playwright drives the system Chromium through `executable_path`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app_helpers import CLIP, start_app, tiny_engine

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(os.environ.get("APP_SCREENSHOTS", "runs/screenshots"))

# Collects every distinct length the last answer bubble takes while it streams.
WATCH_ANSWER = """() => {
  window.__lengths = [];
  const box = document.querySelector('#chatbot');
  new MutationObserver(() => {
    const bots = box.querySelectorAll('.message.bot, [data-testid="bot"]');
    if (!bots.length) return;
    const n = bots[bots.length - 1].innerText.trim().length;
    if (n && window.__lengths[window.__lengths.length - 1] !== n) window.__lengths.push(n);
  }).observe(box, {subtree: true, childList: true, characterData: true});
}"""


class PacedEngine:
    """The real engine, with each text delta held back 30 ms: the tiny model answers in a
    blink, and a person (or this test) should be able to watch the answer grow."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def ask(self, conv, question, settings=None):
        for delta in self._engine.ask(conv, question, settings):
            time.sleep(0.03)
            yield delta


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    demo, url = start_app(PacedEngine(tiny_engine()), tmp_path_factory.mktemp("votes") / "votes.jsonl")
    yield url
    demo.close()


@pytest.fixture
def page(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as play:
        browser = play.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 1000})
        yield browser.new_page()
        browser.close()


def _not_blank(path: Path) -> float:
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    return float(pixels.std())


@pytest.mark.slow
def test_upload_ask_and_watch_the_answer_stream(app_url, page):
    page.goto(app_url)
    page.wait_for_selector("#question textarea", timeout=60_000)
    page.click("#send")  # asking before any upload: a readable message, not a crash
    page.wait_for_function("document.querySelector('#notice').innerText.includes('Upload')", timeout=30_000)

    page.set_input_files("#media-file input[type=file]", str(CLIP))
    page.wait_for_function("document.querySelector('#media-note').innerText.includes('Loaded a video')",
                           timeout=60_000)
    page.evaluate(WATCH_ANSWER)
    page.fill("#question textarea", "What colour is the shape?")
    page.click("#send")
    page.wait_for_function("window.__lengths.length >= 3", timeout=60_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "chat_streaming.png"
    page.screenshot(path=str(shot), full_page=True)
    # Wait for the end of the answer: the question box is cleared and lengths stop growing.
    deadline = time.time() + 60
    last = None
    while time.time() < deadline:
        lengths = page.evaluate("window.__lengths")
        if lengths == last:
            break
        last = lengths
        time.sleep(1.0)
    # The bubble first holds a placeholder, then the answer grows piece by piece. (Not strictly:
    # the random tiny model writes stray markdown, which can render a character shorter.)
    growth = last[last.index(min(last)):]
    assert len(growth) >= 3 and growth[-1] > growth[0], last
    user = page.locator("#chatbot .message.user, #chatbot [data-testid=user]").last.inner_text()
    assert "What colour is the shape?" in user
    assert _not_blank(shot) > 5.0

    page.get_by_role("tab", name="Under the hood").click()
    page.wait_for_function("document.querySelector('#inspect-prompt') && "
                           "document.querySelector('#inspect-prompt').innerText.includes('What colour')",
                           timeout=30_000)
    inspect = SCREENSHOTS / "under_the_hood.png"
    page.screenshot(path=str(inspect), full_page=True)
    assert _not_blank(inspect) > 5.0
