"""The OpenAI-compatible server, driven by the official ``openai`` client over loopback.

The server runs in a background thread over a real chat engine on two tiny random models;
answers are greedy, so each is compared with what the same engine answers in-process for
the same conversation (the server must pass media, system prompt, turns and settings
through unchanged)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time

import httpx
import openai
import pytest

from model.chat.conversation import Turn
from model.chat.engine import ChatEngine
from model.chat.generate import GenerationSettings
from model.media import MediaError, load_media
from model.media.common import LoadOptions
from serve.app import build_app
from serve.media import MediaPolicy
from tests.app_helpers import ASSETS, CLIP, IMAGE, SOUND, tiny_engine, tiny_models
from tests.serve_helpers import media_part, start_server, wait_for

FILES = {"video": CLIP, "image": IMAGE, "audio": SOUND}
MODEL = "tiny-left"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    engine = tiny_engine(concurrency=2)
    policy = MediaPolicy(allowed_dirs=(ASSETS,), store_dir=tmp_path_factory.mktemp("media"))
    running = start_server(engine, policy)
    yield running
    running.stop()
    engine.close()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def reference(engine, kind: str | None, question: str, max_tokens: int, *, system: str | None = None,
              history: list[tuple[str, str]] = (), model: str = MODEL) -> str:
    """The in-process engine's greedy answer to the same conversation, computed from scratch."""
    engine.prefixes.clear()
    conv = engine.new_conversation(model, system=system)
    if kind is not None:
        engine.attach_media(conv, FILES[kind], kind=kind)
    conv.turns += [Turn(q, a) for q, a in history]  # answered turns, as a client resends them
    answer = "".join(engine.ask(conv, question, GenerationSettings(max_new_tokens=max_tokens, temperature=0)))
    engine.clear(conv)
    engine.prefixes.clear()
    return answer


def user(kind: str | None, text: str) -> dict:
    content = [{"type": "text", "text": text}]
    if kind is not None:
        content.insert(0, media_part(kind, FILES[kind]))
    return {"role": "user", "content": content}


# -- answers -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["video", "image", "audio"])
def test_streaming_and_plain_answers_match_the_engine(server, client, kind):
    expected = reference(server.backend.engine, kind, "What happens?", 12)
    messages = [user(kind, "What happens?")]
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    assert plain.object == "chat.completion"
    assert plain.choices[0].message.content == expected
    assert plain.choices[0].finish_reason == "length"  # the tiny models never end early
    assert plain.usage.completion_tokens == 12 and plain.usage.prompt_tokens > 12

    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # streamed, not one blob
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12


def test_an_answer_cut_short_by_the_context_finishes_with_length(server, client):
    # max_tokens beyond what the 512-token context leaves: the answer ends at the context, and the
    # reason says so, though fewer tokens came than asked for.
    reply = client.chat.completions.create(model=MODEL, messages=[user(None, "Go on.")], max_tokens=600,
                                           temperature=0)
    used = reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.completion_tokens < 600 and used == 512
    assert reply.choices[0].finish_reason == "length"


def test_system_message_sets_the_system_prompt(server, client):
    engine = server.backend.engine
    system = "You answer like a pirate."
    expected = reference(engine, "image", "Colour?", 10, system=system)
    assert expected != reference(engine, "image", "Colour?", 10)  # the system prompt changes the answer
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": system}, user("image", "Colour?")],
        max_tokens=10, temperature=0, extra_body={"videollama_trace": True})
    assert reply.choices[0].message.content == expected
    assert system in reply.model_extra["videollama_trace"]["prompt"]


def test_follow_up_resend_reuses_the_prompt_prefix(server, client):
    engine = server.backend.engine
    engine.prefixes.clear()
    first = [user("video", "What is it?")]
    answer = client.chat.completions.create(model=MODEL, messages=first, max_tokens=8, temperature=0)
    follow_up = [*first, {"role": "assistant", "content": answer.choices[0].message.content},
                 {"role": "user", "content": "And then?"}]
    reply = client.chat.completions.create(model=MODEL, messages=follow_up, max_tokens=8, temperature=0,
                                           extra_body={"videollama_trace": True})
    tokens = reply.model_extra["videollama_trace"]["tokens"]
    assert tokens["reused"] > tokens["prefilled"] > 0  # only the new turn ran through the LLM
    expected = reference(engine, "video", "And then?", 8, history=[("What is it?", answer.choices[0].message.content)])
    assert reply.choices[0].message.content == expected  # same answer as with every cache cleared


def test_two_conversations_at_once_do_not_mix(server, client):
    engine = server.backend.engine
    jobs = {"left-video": ("tiny-left", "video", "Describe it."), "right-image": ("tiny-right", "image", "Why?")}
    expected = {name: reference(engine, kind, q, 16, model=model) for name, (model, kind, q) in jobs.items()}
    assert len(set(expected.values())) == 2
    got: dict[str, str] = {}

    def run(name: str) -> None:
        model, kind, question = jobs[name]
        stream = client.chat.completions.create(model=model, messages=[user(kind, question)], max_tokens=16,
                                                temperature=0, stream=True)
        got[name] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert got == expected


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list()] == ["tiny-left", "tiny-right"]
    health = httpx.get(server.url.removesuffix("/v1") + "/health").json()
    assert health == {"status": "ok", "models_loaded": True, "models": ["tiny-left", "tiny-right"]}


# -- errors --------------------------------------------------------------------------------
def test_unsupported_media_is_400_with_the_loaders_message(server, client, tmp_path):
    data = b"this is not a video at all" * 10
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(data)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            media_part("video", bad), {"type": "text", "text": "What?"}]}])
    assert err.value.body["code"] == "invalid_media"
    # The server wrote the bytes under their hash; the loader says the same about that file.
    stored = server.backend.policy.store_dir / f"{hashlib.sha256(data).hexdigest()}.mp4"
    with pytest.raises(MediaError) as loader:
        load_media(stored)
    assert err.value.body["message"] == str(loader.value)


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found" and "tiny-left" in err.value.body["message"]


def test_body_and_media_over_the_limits_are_413(server, client):
    policy, backend = server.backend.policy, server.backend
    old_media, old_body = policy.max_bytes, backend.max_body_bytes
    try:
        policy.max_bytes = IMAGE.stat().st_size - 1  # one byte short of the image asked about
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=MODEL, messages=[user("image", "What?")])
        assert err.value.status_code == 413 and err.value.body["code"] == "media_too_large"
        policy.max_bytes, backend.max_body_bytes = old_media, 2000
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 5000}])
        assert err.value.status_code == 413 and err.value.body["code"] == "request_too_large"
    finally:
        policy.max_bytes, backend.max_body_bytes = old_media, old_body


@pytest.mark.parametrize("body, needle", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),  # missing field
    ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, "role"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "bogus": 1}, "Unrecognized request argument"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 9}, "temperature"),
    ({"model": MODEL, "messages": [{"role": "assistant", "content": "hi"}]}, "user"),
])
def test_bad_schema_is_400_naming_the_problem(server, body, needle):
    response = httpx.post(f"{server.url}/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and needle in error["message"]


@pytest.mark.parametrize("url, code", [
    ("http://127.0.0.1:9/clip.mp4", "remote_media_not_allowed"),
    ("file:///etc/hostname", "media_path_not_allowed"),
    ("ftp://example.org/clip.mp4", "unsupported_media_url"),
])
def test_media_urls_outside_the_policy_are_refused(client, url, code):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "What?"}]}])
    assert err.value.body["code"] == code


def test_allowed_local_path_is_answered(server, client):
    expected = reference(server.backend.engine, "image", "What?", 6)
    content = [{"type": "image_url", "image_url": {"url": f"file://{IMAGE}"}}, {"type": "text", "text": "What?"}]
    reply = client.chat.completions.create(model=MODEL, max_tokens=6, temperature=0,
                                           messages=[{"role": "user", "content": content}])
    assert reply.choices[0].message.content == expected


# -- a slow engine: queue limits and cancellation -------------------------------------------
@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """One worker, one queue place, and an LLM slowed to ~20 ms a step, so that a long answer
    is still running when the test acts on it."""
    models = tiny_models()
    size = models[MODEL].config.vision.image_size
    engine = ChatEngine(models, concurrency=1, queue_size=1, media_options=LoadOptions(image_size=size))
    for model in engine.models.values():
        model.llm.register_forward_pre_hook(lambda *_: time.sleep(0.02))
    running = start_server(engine, MediaPolicy(store_dir=tmp_path_factory.mktemp("media")))
    yield running
    running.stop()
    engine.close()


def _open_stream(url: str, max_tokens: int = 150):
    slow = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    stream = slow.chat.completions.create(model=MODEL, messages=[user("image", "Tell me everything.")],
                                          max_tokens=max_tokens, temperature=0, stream=True)
    first = next(iter(stream))  # the role chunk: the request is queued or running
    return stream, first


def test_client_disconnect_cancels_generation(slow_server):
    engine = slow_server.backend.engine
    before = engine.cancelled_requests
    stream, _ = _open_stream(slow_server.url)
    pieces = [next(stream) for _ in range(3)]
    assert all(p.choices[0].delta.content for p in pieces)
    stream.close()  # the client goes away mid-answer
    assert wait_for(lambda: engine.cancelled_requests == before + 1)
    # The worker is free again: a short request is answered.
    short = openai.OpenAI(base_url=slow_server.url, api_key="unused", max_retries=0, timeout=120)
    reply = short.chat.completions.create(model=MODEL, messages=[user("image", "Hi")], max_tokens=3, temperature=0)
    assert reply.usage.completion_tokens == 3


def test_client_disconnect_cancels_a_non_streaming_answer_too(slow_server):
    engine = slow_server.backend.engine
    before = engine.cancelled_requests
    body = {"model": MODEL, "messages": [user("image", "Tell me everything.")], "max_tokens": 150, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up while the answer is being generated
        httpx.post(f"{slow_server.url}/chat/completions", json=body, timeout=httpx.Timeout(1.0, connect=10.0))
    assert wait_for(lambda: engine.cancelled_requests == before + 1)
    short = openai.OpenAI(base_url=slow_server.url, api_key="unused", max_retries=0, timeout=120)
    reply = short.chat.completions.create(model=MODEL, messages=[user("image", "Hi")], max_tokens=3, temperature=0)
    assert reply.usage.completion_tokens == 3


def test_full_queue_is_429_with_retry_after(slow_server):
    engine = slow_server.backend.engine
    before = engine.cancelled_requests
    running, _ = _open_stream(slow_server.url)
    next(running)  # a content chunk: the worker is busy with it
    waiting, _ = _open_stream(slow_server.url)  # takes the one queue place
    try:
        client = openai.OpenAI(base_url=slow_server.url, api_key="unused", max_retries=0, timeout=120)
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model=MODEL, messages=[user("image", "And me?")], max_tokens=3)
        assert err.value.status_code == 429
        assert int(err.value.response.headers["retry-after"]) > 0
        assert err.value.body["code"] == "queue_full"
    finally:
        running.close()
        waiting.close()
    assert wait_for(lambda: engine.cancelled_requests == before + 2)  # both streams were stopped


# -- Ray Serve options ------------------------------------------------------------------------
def test_ray_deployment_options_follow_the_command_line():
    import argparse

    from serve.main import add_arguments
    from serve.ray_app import deployment_options

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    fixed = deployment_options(parser.parse_args(["--replicas", "3", "--queue-size", "5"]), gpus=0)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0}
    assert fixed["max_ongoing_requests"] == 1 + 5  # Ray holds no more than the engine accepts
    scaled = deployment_options(parser.parse_args(["--min-replicas", "0", "--max-replicas", "4",
                                                   "--target-queue", "3"]), gpus=2)
    assert scaled["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "initial_replicas": 1,
                                            "target_ongoing_requests": 3.0}
    assert scaled["ray_actor_options"]["num_gpus"] == 1 and "num_replicas" not in scaled
    with pytest.raises(ValueError, match="min-replicas"):
        deployment_options(parser.parse_args(["--min-replicas", "5", "--max-replicas", "2"]), gpus=0)
    from serve.ray_router import SessionAffinityRouter

    router = fixed["request_router_config"].request_router_class  # pydantic keeps its import path
    assert router == f"{SessionAffinityRouter.__module__}.{SessionAffinityRouter.__qualname__}"


def test_stop_strings_end_the_answer(server, client):
    expected = reference(server.backend.engine, "image", "What?", 20)
    stop = expected[5:7]  # text the answer reaches after a few tokens
    reply = client.chat.completions.create(model=MODEL, messages=[user("image", "What?")], max_tokens=20,
                                           temperature=0, stop=[stop])
    assert reply.choices[0].message.content == expected[:expected.index(stop)].strip()
    assert reply.choices[0].finish_reason == "stop"


def test_remote_media_only_when_allowed_and_within_the_limits(server, client):
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ASSETS))
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{files.server_address[1]}/{IMAGE.name}"
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "What?"}]}]
    policy = server.backend.policy
    try:
        with pytest.raises(openai.BadRequestError, match="remote media URLs are off"):
            client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
        policy.allow_remote = True
        reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0)
        assert reply.choices[0].message.content == reference(server.backend.engine, "image", "What?", 6)
        policy.max_bytes = IMAGE.stat().st_size - 1
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
        assert err.value.status_code == 413
    finally:
        policy.allow_remote, policy.max_bytes = False, MediaPolicy().max_bytes
        files.shutdown()


def test_health_says_loading_until_the_engine_is_there(tmp_path):
    loading = start_server(None, MediaPolicy(store_dir=tmp_path))
    try:
        base = loading.url.removesuffix("/v1")
        health = httpx.get(f"{base}/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        answer = httpx.post(f"{loading.url}/chat/completions", json={"model": MODEL, "messages": []})
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_loading"
        assert int(answer.headers["retry-after"]) > 0
    finally:
        loading.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_each_request_gives_free_memory_back(server, client, monkeypatch, stream):
    from serve import app as served

    trims = []
    monkeypatch.setattr(served.heap, "release_free_memory", lambda: trims.append(1) or True)
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    if stream:
        for _ in client.chat.completions.create(**ask, stream=True):
            pass
    else:
        client.chat.completions.create(**ask)
    assert wait_for(lambda: len(trims) == 1)


# -- Ray Serve session affinity (serve/ray_router.py) ----------------------------------------
def _replicas(*names):
    from types import SimpleNamespace

    return [SimpleNamespace(replica_id=SimpleNamespace(unique_id=n)) for n in names]


def test_a_session_ranks_the_replicas_the_same_whatever_their_order():
    from serve.ray_router import rank_replicas

    replicas = _replicas("r1", "r2", "r3", "r4")
    ranks = rank_replicas(replicas, "conversation-7")
    assert all(len(rank) == 1 for rank in ranks) and sorted(map(id, (r[0] for r in ranks))) == sorted(map(id, replicas))
    for shuffled in (replicas[::-1], replicas[1:] + replicas[:1]):
        assert rank_replicas(shuffled, "conversation-7") == ranks
    # Sessions spread: over 40 sessions every replica comes first for some.
    firsts = {rank_replicas(replicas, f"s{i}")[0][0].replica_id.unique_id for i in range(40)}
    assert firsts == {"r1", "r2", "r3", "r4"}


def test_a_replica_leaving_moves_only_the_sessions_it_held():
    from serve.ray_router import rank_replicas

    replicas = _replicas("r1", "r2", "r3")
    first = {s: rank_replicas(replicas, s)[0][0].replica_id.unique_id for s in (f"s{i}" for i in range(60))}
    left = [r for r in replicas if r.replica_id.unique_id != "r2"]
    for session, replica in first.items():
        now = rank_replicas(left, session)[0][0].replica_id.unique_id
        if replica != "r2":
            assert now == replica  # kept its replica and its caches
        else:
            # its next choice, the one it spills to when r2 is busy
            assert now == rank_replicas(replicas, session)[1][0].replica_id.unique_id


def test_requests_without_a_session_go_to_the_less_busy_of_two():
    from serve.ray_router import rank_replicas

    replicas = _replicas("r1", "r2", "r3")
    ranks = rank_replicas(replicas, "")
    assert len(ranks) == 1 and len(ranks[0]) == 2 and len({id(r) for r in ranks[0]}) == 2
    assert rank_replicas(_replicas("only"), "")[0][0].replica_id.unique_id == "only"
    assert rank_replicas([], "s") == []


def test_a_session_moves_on_when_its_replica_holds_more_than_its_share():
    from serve.ray_router import rank_replicas

    replicas = _replicas("r1", "r2")
    sessions = [f"s{i}" for i in range(20)]
    home = {s: rank_replicas(replicas, s)[0][0].replica_id.unique_id for s in sessions}
    for s in sessions:
        other = "r2" if home[s] == "r1" else "r1"
        # balanced load: the session stays home
        assert rank_replicas(replicas, s, {"r1": 3, "r2": 3})[0][0].replica_id.unique_id == home[s]
        # home holds 6 of 8 in flight, at the bound 1.25 x (8 + 1) / 2 rounded up (6): the other replica first
        ranks = rank_replicas(replicas, s, {home[s]: 6, other: 2})
        assert [r[0].replica_id.unique_id for r in ranks] == [other, home[s]]
        # a looser bound keeps it home
        assert rank_replicas(replicas, s, {home[s]: 6, other: 2}, spill_at=2.0)[0][0].replica_id.unique_id == home[s]


def test_a_cancelled_non_streaming_call_cancels_its_answer(slow_server):
    """Ray Serve's proxy, when a client hangs up, cancels the replica's ASGI call instead of
    sending it ``http.disconnect``; the answer must stop then as well."""
    engine = slow_server.backend.engine
    app = build_app(slow_server.backend)
    body = json.dumps({"model": MODEL, "messages": [user("image", "Tell me everything.")],
                       "max_tokens": 150, "temperature": 0}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    generating = threading.Event()
    llm = engine.models[MODEL].llm
    hook = llm.register_forward_pre_hook(lambda *_: generating.set())
    before = engine.cancelled_requests

    async def call() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # no disconnect message ever comes, as under Ray Serve
            raise AssertionError("unreachable")

        async def send(message: dict) -> None:
            pass

        task = asyncio.ensure_future(app(scope, receive, send))
        while not generating.is_set():
            await asyncio.sleep(0.02)
        task.cancel()  # what Ray Serve does when the client goes away
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(asyncio.wait_for(call(), timeout=60))
    finally:
        hook.remove()
    assert wait_for(lambda: engine.cancelled_requests == before + 1)
