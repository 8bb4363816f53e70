"""The app served on 127.0.0.1 and driven with gradio_client, on the real engine and tiny models."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from model.chat.engine import GenerationSettings
from tests.app_helpers import CLIP, SILENT_CLIP, start_app, tiny_engine

GREEDY = {"do_sample": False, "max_new_tokens": 24}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    engine = tiny_engine()
    votes = tmp_path_factory.mktemp("votes") / "votes.jsonl"
    demo, url = start_app(engine, votes)
    yield engine, url, votes
    demo.close()


@pytest.fixture
def client(served):
    return Client(served[1], verbose=False)


def test_chat_api_streams_the_answer_the_engine_gives(served, client):
    engine = served[0]
    job = client.submit(handle_file(str(CLIP)), "What colour is the shape?", GREEDY, api_name="/chat")
    updates = [u for u in job]
    final = job.outputs()[-1]
    assert final.strip()
    assert len(updates) > 2  # streamed in pieces, not one final message
    assert all(final.startswith(u) for u in updates)  # each update is a prefix of the answer
    conv = engine.new_conversation("tiny-left")
    engine.attach_media(conv, CLIP)
    direct = "".join(engine.ask(conv, "What colour is the shape?", GenerationSettings(**GREEDY)))
    assert final.strip() == direct.strip()


def test_follow_up_keeps_the_clients_conversation_and_tabs_are_isolated(served, client):
    client.predict(handle_file(str(CLIP)), "What colour?", GREEDY, api_name="/chat")
    follow = client.predict(None, "And which way does it move?", GREEDY, api_name="/chat")
    assert follow.strip()
    stranger = Client(served[1], verbose=False)  # another tab: has no file yet
    with pytest.raises(AppError, match="send a media file"):
        stranger.predict(None, "And which way does it move?", GREEDY, api_name="/chat")


def test_concurrent_tabs_each_get_their_own_answer(served):
    # Sampled with a seed per tab, so each tab's answer is its own (a tiny random model answers
    # greedily the same whatever the question): an answer sent to the wrong tab fails below.
    settings = [{"do_sample": True, "temperature": 2.0, "seed": i, "max_new_tokens": 16} for i in range(3)]
    expected = [Client(served[1], verbose=False).predict(handle_file(str(CLIP)), "Describe it.", s, api_name="/chat")
                for s in settings]
    assert len(set(expected)) == len(expected), expected
    tabs = [Client(served[1], verbose=False) for _ in settings]
    jobs = [tab.submit(handle_file(str(CLIP)), "Describe it.", s, api_name="/chat")
            for tab, s in zip(tabs, settings, strict=True)]
    assert [job.result(timeout=120) for job in jobs] == expected


def test_settings_choose_model_and_frames(served, client):
    engine = served[0]
    before = engine.encoder_calls["vision"]
    out = client.predict(handle_file(str(SILENT_CLIP)), "What moves?",
                         {**GREEDY, "model": "tiny-right", "num_frames": 3, "mode": "Vision only"}, api_name="/chat")
    assert out.strip()
    conv = engine.new_conversation("tiny-right")
    engine.attach_media(conv, SILENT_CLIP, use_audio=False, num_frames=3)
    direct = "".join(engine.ask(conv, "What moves?", GenerationSettings(**GREEDY)))
    assert out.strip() == direct.strip()
    assert engine.encoder_calls["vision"] == before + 1  # the direct call reused the cached frames


@pytest.mark.parametrize("settings, message", [
    ({"bogus": 1}, "unknown settings"),
    ({"model": "nope"}, "unknown model"),
    ({"mode": "Smell only"}, "unknown mode"),
    ("{not json", "not valid JSON"),
])
def test_bad_settings_are_readable_errors(client, settings, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(CLIP)), "Hi?", settings, api_name="/chat")


def test_bad_files_and_questions_are_readable_errors(client, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(fake)), "What is this?", {}, api_name="/chat")
    assert "text" in str(err.value).lower() or "not a" in str(err.value).lower()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(AppError, match="(?i)empty|zero|no data"):
        client.predict(handle_file(str(empty)), "What is this?", {}, api_name="/chat")
    with pytest.raises(AppError, match="(?i)question"):
        client.predict(handle_file(str(CLIP)), "   ", {}, api_name="/chat")
    # The app keeps going after errors.
    assert client.predict(handle_file(str(CLIP)), "Still there?", GREEDY, api_name="/chat").strip()


def _compare(client, question="What colour is the shape?", models=("tiny-left", "tiny-right"), frames=4):
    return client.predict(list(models), handle_file(str(CLIP)), question, "Audio + vision",
                          1.0, 0.9, 16, 2, frames, api_name="/compare")


def test_compare_answers_each_model_and_encodes_once(served, client):
    engine = served[0]
    before = dict(engine.encoder_calls)
    left, right, notice = _compare(client, question="Compare: which shape?", frames=5)  # 5: not cached yet
    assert left.strip() and right.strip()
    assert left != right  # different adapters, different answers
    assert "Done" in notice
    # Both models share frozen encoders: the clip goes through the vision encoder once.
    assert engine.encoder_calls["vision"] - before.get("vision", 0) == 1
    assert engine.encoder_calls["audio"] - before.get("audio", 0) <= 1


def test_compare_needs_two_models(client):
    *_, notice = _compare(client, models=("tiny-left",))
    assert "at least two models" in notice


def test_votes_are_appended_with_inputs_and_downloadable(served, client):
    votes = served[2]
    note, *_ = client.predict(api_name="/vote_tie")
    assert "Run a comparison" in note  # nothing to vote on yet in this tab
    left, right, _ = _compare(client, question="Vote on this?")
    note, tally, download = client.predict(api_name="/vote_left")
    assert "Recorded" in note
    record = json.loads(votes.read_text().splitlines()[-1])
    assert record["vote"] == "left" and record["models"] == ["tiny-left", "tiny-right"]
    assert record["question"] == "Vote on this?" and record["answers"] == [left, right]
    assert record["media"] == CLIP.name and len(record["media_sha256"]) == 64
    rows = {row[0]: row for row in tally["data"]}
    assert rows["tiny-left"][1] >= 1 and rows["tiny-right"][2] >= 1  # a win and a loss
    path = download["value"] if isinstance(download, dict) else download
    with open(path, encoding="utf-8") as handle:
        assert json.loads(handle.readlines()[-1]) == record
    again, *_ = client.predict(api_name="/vote_right")
    assert "already voted" in again


@pytest.mark.slow
def test_launch_py_serves_a_model_folder(tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    from model.weights.checkpoint import save_model_folder
    from tests.app_helpers import free_port
    from tests.tiny import tiny_llm_folder, tiny_model

    folder = tmp_path / "tiny-folder"
    save_model_folder(tiny_model(llm={"hf_path": "llm"}), folder)
    tiny_llm_folder(folder)
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen([sys.executable, str(root / "launch.py"), "--model", str(folder), "--port", str(port),
                               "--votes", str(tmp_path / "votes.jsonl")], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, client = time.time() + 120, None
        while client is None and time.time() < deadline and server.poll() is None:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(1)
        assert client is not None, server.stdout.read() if server.poll() is not None else "no answer"
        answer = client.predict(handle_file(str(CLIP)), "What?", {"max_new_tokens": 8}, api_name="/chat")
        assert answer.strip()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_finished_comparison_keeps_its_answers_and_frees_its_conversations():
    from app.compare import run_compare
    from app.handlers import MODE_AV
    from model.chat.generate import GenerationSettings
    from tests.app_helpers import CLIP, tiny_engine

    engine = tiny_engine()
    try:
        steps = list(run_compare(engine, None, ["tiny-left", "tiny-right"], str(CLIP), "Which shape?",
                                 GenerationSettings(do_sample=False, max_new_tokens=4), MODE_AV, 4))
        session, answers, notice = steps[-1]
        assert notice.startswith("Done") and len(answers) == 2 and all(a.strip() for a in answers)
        assert session.finished and set(session.convs) == {"tiny-left", "tiny-right"}
        assert all(conv.media is None and not conv.turns for conv in session.convs.values())
    finally:
        engine.close()
