"""`launch.py serve --replicas 2`: two Ray Serve replicas on the CPU, answering through Ray's
HTTP proxy, with the official ``openai`` client. Slow: Ray starts, then each replica loads
the model (about a minute on 2 shared cores)."""

from __future__ import annotations

import concurrent.futures

import openai
import pytest

from bench.serve_bench import Server
from model.chat.engine import ChatEngine
from model.chat.generate import GenerationSettings
from model.weights.checkpoint import load_model, save_model_folder
from tests.app_helpers import IMAGE
from tests.serve_helpers import media_part
from tests.tiny import tiny_llm_folder, tiny_model


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

    server = Server(["--model", str(folder), "--replicas", "2", "--replica-cpus", "0.5"], tmp_path / "serve.log")
    try:
        try:
            server.wait_ready(timeout=400)  # Ray and two replicas start slowly on a busy 2-core machine
        except RuntimeError:
            pytest.fail((tmp_path / "serve.log").read_text()[-3000:])
        base = server.url
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list()] == ["tiny-folder"]
        messages = [{"role": "user", "content": [media_part("image", IMAGE), {"type": "text", "text": "What?"}]}]

        def ask(_: int, session: str | None = None) -> tuple[str, str]:
            headers = {"X-Session-Id": session} if session else None
            raw = client.chat.completions.with_raw_response.create(model="tiny-folder", messages=messages,
                                                                   max_tokens=12, temperature=0,
                                                                   extra_headers=headers)
            return raw.headers["x-served-by"], raw.parse().choices[0].message.content

        # Ray's router picks the less busy of two random replicas: over 24 requests both get some.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, range(24)))
        assert {text for _, text in answers} == {expected}
        assert len({replica for replica, _ in answers}) == 2  # both replicas answered
        # A conversation named in X-Session-Id stays on one replica (its caches) while no replica
        # holds more than its share of the requests in flight: 12 conversations of 3 turns, one
        # request at a time, each on one replica, and both replicas used (all on one: odds 2 in
        # 4,096). A request the router lost count of would pile up as load and move sessions.
        sessions = [f"conversation-{i}" for i in range(12)]
        turns = [[ask(0, s) for _ in range(3)] for s in sessions]
        assert all(len({replica for replica, _ in conv}) == 1 for conv in turns)
        assert len({conv[0][0] for conv in turns}) == 2
        assert {text for conv in turns for _, text in conv} == {expected}
        stream = client.chat.completions.create(model="tiny-folder", messages=messages, max_tokens=12,
                                                temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected
    finally:
        server.stop()
