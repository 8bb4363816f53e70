"""The app over a running API server (`launch.py --api-url URL`): the page holds no model.

An API server on tiny random models runs in a thread; the app is built over
``RemoteEngine(url)`` and driven with gradio_client (Chat, Compare) and through its own
render function (Under the hood)."""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file

from app import handlers, inspect_view
from app.remote import RemoteEngine
from app.ui import build_demo, serve
from model.chat.conversation import Turn
from model.chat.engine import GenerationSettings
from serve.media import MediaPolicy
from tests.app_helpers import CLIP, free_port, tiny_engine
from tests.serve_helpers import start_server

GREEDY = {"do_sample": False, "max_new_tokens": 16}


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    engine = tiny_engine()
    api = start_server(engine, MediaPolicy(store_dir=tmp_path_factory.mktemp("media")))
    remote_engine = RemoteEngine(api.url)
    votes = tmp_path_factory.mktemp("votes") / "votes.jsonl"
    demo = build_demo(remote_engine, votes_path=votes, max_frames=remote_engine.max_frames, concurrency=2)
    _, url, _ = serve(demo, host="127.0.0.1", port=free_port(), concurrency=2, votes_path=votes, block=False,
                      quiet=True)
    yield engine, remote_engine, url
    demo.close()
    remote_engine.close()
    api.stop()
    engine.close()


def direct(engine, question: str, model: str = "tiny-left", history: list[tuple[str, str]] = ()) -> str:
    """The API server's engine answering in-process, every cache cleared."""
    engine.prefixes.clear()
    conv = engine.new_conversation(model)
    engine.attach_media(conv, CLIP)
    conv.turns += [Turn(q, a) for q, a in history]
    answer = "".join(engine.ask(conv, question, GenerationSettings(**GREEDY)))
    engine.clear(conv)
    engine.prefixes.clear()
    return answer.strip()


def test_chat_answers_through_the_server(remote):
    engine, _, url = remote
    client = Client(url, verbose=False)
    first = client.predict(handle_file(str(CLIP)), "What colour is the shape?", GREEDY, api_name="/chat")
    assert first.strip() == direct(engine, "What colour is the shape?")
    follow = client.predict(None, "And then?", GREEDY, api_name="/chat")
    assert follow.strip() == direct(engine, "And then?", history=[("What colour is the shape?", first.strip())])


def test_compare_answers_each_model_through_the_server(remote):
    engine, _, url = remote
    client = Client(url, verbose=False)
    before = engine.cancelled_requests, dict(engine.encoder_calls)
    left, right, notice = client.predict(["tiny-left", "tiny-right"], handle_file(str(CLIP)), "Which shape?",
                                         "Vision only", 0.1, 0.9, 16, 1, 3, api_name="/compare")
    assert "Done" in notice
    assert left.strip() and right.strip() and left != right  # different adapters on the server
    # The server's engine did the work: 3 frames of this clip were not encoded there before.
    assert engine.encoder_calls["vision"] == before[1].get("vision", 0) + 1
    assert engine.cancelled_requests == before[0]


def test_under_the_hood_shows_the_servers_trace(remote):
    _, remote_engine, _ = remote
    session, status = handlers.load_media(remote_engine, None, str(CLIP), handlers.MODE_AV, 4)
    assert status.note.startswith("Loaded a video")
    for _ in handlers.ask(remote_engine, session, "What moves?", GenerationSettings(**GREEDY)):
        pass
    frames, wave, spec, diagram, prompt, timings, notes = inspect_view.render(session, remote_engine)
    assert len(frames) == 4 and wave is not None and diagram is not None
    assert "What moves?" in prompt
    assert {row[0] for row in timings} >= {"prefill", "generate"}
    assert remote_engine.trace(session.conv).tokens.new == 16


def test_remote_engine_starts_from_each_models_folder_defaults(remote):
    """The server publishes each model's generation_config.json on its card; the app over the
    API starts from it and ``ask`` without settings sends it, as the in-process engine does."""
    engine, remote_engine, _ = remote
    model = engine.models["tiny-left"]
    saved = getattr(model, "generation_defaults", None)
    folder_defaults = GenerationSettings(do_sample=False, max_new_tokens=3, top_p=0.5)
    model.generation_defaults = folder_defaults
    fresh = RemoteEngine(remote_engine.base_url)
    try:
        assert fresh.generation_defaults("tiny-left") == folder_defaults
        assert fresh.generation_defaults("tiny-right") == engine.generation_defaults("tiny-right")
        assert fresh.generation_defaults("tiny-right") != folder_defaults
        conv = fresh.new_conversation("tiny-left")
        fresh.attach_media(conv, CLIP)
        "".join(fresh.ask(conv, "Describe the video."))
        assert conv.last_trace.tokens.limit == 3  # the folder's max_new_tokens reached the server
        assert conv.last_trace.tokens.new <= 3
    finally:
        model.generation_defaults = saved
        fresh.close()
