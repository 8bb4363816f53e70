"""`launch.py serve --replicas 2`: two Ray Serve replicas on the CPU, answering through Ray's
HTTP proxy, with the official ``openai`` client. Slow: Ray starts, then each replica loads
the model (about a minute on 2 shared cores)."""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from model.chat.engine import ChatEngine
from model.chat.generate import GenerationSettings
from model.weights.checkpoint import load_model, save_model_folder
from tests.app_helpers import IMAGE, free_port
from tests.serve_helpers import media_part
from tests.tiny import tiny_llm_folder, tiny_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_ray_serve_replicas_answer_through_the_proxy(tmp_path):
    folder = tmp_path / "tiny-folder"
    save_model_folder(tiny_model(llm={"hf_path": "llm"}), folder)
    tiny_llm_folder(folder)
    engine = ChatEngine({"tiny-folder": load_model(folder)})
    conv = engine.new_conversation()
    engine.attach_media(conv, IMAGE)
    expected = "".join(engine.ask(conv, "What?", GenerationSettings(max_new_tokens=12, temperature=0)))
    engine.close()

    port = free_port()
    log = (tmp_path / "serve.log").open("w")  # a file, not a pipe: Ray logs a lot and nobody reads a pipe
    server = subprocess.Popen([sys.executable, "launch.py", "serve", "--model", str(folder), "--replicas", "2",
                               "--replica-cpus", "0.5", "--port", str(port)], cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{base}/health", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list()] == ["tiny-folder"]
        messages = [{"role": "user", "content": [media_part("image", IMAGE), {"type": "text", "text": "What?"}]}]

        def ask(_: int) -> tuple[str, str]:
            raw = client.chat.completions.with_raw_response.create(model="tiny-folder", messages=messages,
                                                                   max_tokens=12, temperature=0)
            return raw.headers["x-served-by"], raw.parse().choices[0].message.content

        # Ray's router picks the less busy of two random replicas: over 24 requests both get some.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, range(24)))
        assert {text for _, text in answers} == {expected}
        assert len({replica for replica, _ in answers}) == 2  # both replicas answered
        stream = client.chat.completions.create(model="tiny-folder", messages=messages, max_tokens=12,
                                                temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected
    finally:
        server.send_signal(signal.SIGINT)  # the command takes Serve and its local Ray instance down
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
