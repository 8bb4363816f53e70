"""The chat engine on tiny random models and small media files drawn with ffmpeg."""

from __future__ import annotations

import subprocess
import threading

import pytest
import torch
from torch import nn

from model.chat.engine import BadRequest, ChatEngine, EngineBusy, GenerationSettings
from model.chat.prompts import AUDIO_MESSAGE, AUDIO_VIDEO_MESSAGE, IMAGE_SYSTEM
from model.media import MediaError
from tests.tiny import tiny_model

GREEDY = GenerationSettings(max_new_tokens=24, do_sample=False)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    src = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=3"]
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=3"]
    _ffmpeg(*src, *tone, "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(d / "av.mp4"))
    _ffmpeg(*src, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "silent.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=40x30", "-frames:v", "1", str(d / "pic.png"))
    _ffmpeg(*tone, str(d / "tone.wav"))
    (d / "notes.mp4").write_text("this is not a video\n")
    return d


def _model(seed: int = 0, eos: bool = False, favour: str | None = None, **overrides):
    """A tiny model whose LM head has a bias: no eos (long answers) or one favoured character."""
    model = tiny_model(seed=seed, **overrides)
    head = model.llm.lm_head
    biased = nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        if not eos:
            biased.bias[model.tokenizer.eos_token_id] = -1e4
        if favour is not None:
            biased.bias[model.tokenizer.convert_tokens_to_ids(favour)] = 1e4
    model.llm.lm_head = biased
    return model


@pytest.fixture(scope="module")
def model():
    return _model()


def _chat(engine, conv, question, settings=GREEDY) -> tuple[list[str], str]:
    deltas = list(engine.ask(conv, question, settings))
    return deltas, conv.turns[-1].answer


def test_streams_deltas_and_traces_the_turn(model, media):
    engine = ChatEngine({"m": model})
    conv = engine.new_conversation()
    got = engine.attach_media(conv, media / "av.mp4")
    assert got.has_audio and got.frames.shape[0] == 8
    deltas, answer = _chat(engine, conv, "What is moving?")
    assert len(deltas) > 5 and "".join(deltas).strip() == answer and answer
    trace = engine.trace(conv)
    assert AUDIO_VIDEO_MESSAGE + " What is moving? [/INST]" in trace.prompt
    for stage in ("decode", "vision_encode", "audio_encode", "adapters", "prefill", "first_token", "total"):
        assert getattr(trace.timings, stage) is not None
    assert trace.shapes.video_tokens == [1, 5, 48] and trace.shapes.audio_tokens == [1, 3, 48]
    assert trace.tokens.media == 8 and trace.tokens.new == 24


def test_kv_reuse_matches_full_recompute(model, media):
    engine = ChatEngine({"m": model})
    reuse, fresh = engine.new_conversation(), engine.new_conversation()
    for conv in (reuse, fresh):
        engine.attach_media(conv, media / "av.mp4")
        _chat(engine, conv, "What is moving?")
    assert reuse.turns[0].answer == fresh.turns[0].answer
    _chat(engine, reuse, "Is it day?")
    engine.undo(reuse)  # the cache now runs past what the next prompt shares: it must be cut
    engine.drop_kv_cache(fresh)
    _, follow_up = _chat(engine, reuse, "And the colours?")
    reused = engine.trace(reuse).tokens
    _, recomputed = _chat(engine, fresh, "And the colours?")
    full = engine.trace(fresh).tokens
    assert follow_up == recomputed  # character-level tokenizer: same text means same tokens
    assert full.reused == 0 and full.prefilled == full.prompt
    assert reused.reused > 0.8 * reused.prompt and reused.prefilled < 0.2 * reused.prompt


def test_media_cache_shared_by_checkpoints_with_the_same_frozen_encoders(model, media):
    sibling = _model()  # same frozen weights (and fingerprints), new adapters
    with torch.no_grad():
        sibling.video_proj.weight.normal_()
    other = _model(seed=5)  # different frozen encoders
    engine = ChatEngine({"a": model, "b": sibling, "c": other})
    first = engine.new_conversation("a")
    engine.attach_media(first, media / "av.mp4")
    _chat(engine, first, "Hi?")
    assert engine.encoder_calls == {"vision": 1, "audio": 1}
    _chat(engine, first, "More?")
    second = engine.new_conversation("b")
    engine.attach_media(second, media / "av.mp4")
    _chat(engine, second, "Hi?")
    assert engine.encoder_calls == {"vision": 1, "audio": 1}  # cache hit across checkpoints
    tokens_a, tokens_b = (c.media_tokens[(c.model, c.media.id)]["video"] for c in (first, second))
    assert not torch.allclose(tokens_a, tokens_b)  # but each ran its own adapters
    third = engine.new_conversation("c")
    engine.attach_media(third, media / "av.mp4")
    _chat(engine, third, "Hi?")
    assert engine.encoder_calls == {"vision": 2, "audio": 2}  # other encoders: a miss
    fourth = engine.new_conversation("a")
    engine.attach_media(fourth, media / "av.mp4", num_frames=4)
    _chat(engine, fourth, "Hi?")
    assert engine.encoder_calls["vision"] == 3  # other frames: a miss


def test_silent_video_image_and_audio_only(model, media):
    engine = ChatEngine({"m": model})
    conv = engine.new_conversation()
    engine.attach_media(conv, media / "silent.mp4")
    _chat(engine, conv, "Q?")
    trace = engine.trace(conv)
    assert "this video has no sound" in trace.notes
    assert "<Video><ImageHere></Video> The video contains 8 frames sampled at 0.0, " in trace.prompt
    assert trace.shapes.audio_tokens is None
    image = engine.new_conversation()
    engine.attach_media(image, media / "pic.png")
    _chat(engine, image, "Q?")
    assert engine.trace(image).prompt.startswith(f"[INST] <<SYS>>\n{IMAGE_SYSTEM}\n<</SYS>>\n\n<Image><ImageHere>")
    sound = engine.new_conversation()
    engine.attach_media(sound, media / "tone.wav")
    _chat(engine, sound, "Q?")
    assert AUDIO_MESSAGE + " Q? [/INST]" in engine.trace(sound).prompt
    assert engine.trace(sound).shapes.video_tokens is None
    no_audio = engine.new_conversation()
    engine.attach_media(no_audio, media / "av.mp4", use_audio=False)
    _chat(engine, no_audio, "Q?")
    assert "<Video><ImageHere></Video> The video" in engine.trace(no_audio).prompt


def test_vicuna_stop_text_ends_the_answer(media):
    hashes = _model(favour="#", llm={"template": "vicuna"})  # says only '#'
    engine = ChatEngine({"v": hashes})
    conv = engine.new_conversation()
    deltas, answer = _chat(engine, conv, "Q?")
    assert deltas == [] and answer == ""
    assert engine.trace(conv).tokens.new == 3  # '###' stopped it
    assert engine.trace(conv).prompt == "###Human: Q?###Assistant:"
    llama = ChatEngine({"l": _model(favour="#")})  # '###' is no stop text for LLaMA-2
    conv = llama.new_conversation()
    assert _chat(llama, conv, "Q?")[1] == "#" * 24


def test_eos_token_ends_the_answer():
    engine = ChatEngine({"m": _model(eos=True, favour="</s>")})
    conv = engine.new_conversation()
    assert _chat(engine, conv, "Q?") == ([], "")
    assert engine.trace(conv).tokens.new == 0


def test_cancel_ends_the_stream_and_frees_the_worker(model, media):
    engine = ChatEngine({"m": model}, concurrency=1)
    settings = GenerationSettings(max_new_tokens=400, do_sample=False)
    full_conv = engine.new_conversation()
    engine.attach_media(full_conv, media / "av.mp4")
    full = "".join(engine.ask(full_conv, "Talk.", settings))
    conv = engine.new_conversation()
    engine.attach_media(conv, media / "av.mp4")
    stream = engine.ask(conv, "Talk.", settings)
    first = next(stream)
    engine.cancel(conv)
    rest = list(stream)
    # Deltas already queued still arrive (how many depends on thread scheduling), but the
    # generation stopped: the answer is a strict prefix of the uncancelled one.
    cut = first + "".join(rest)
    assert first and full.startswith(cut) and len(cut) < len(full)
    assert conv.turns[-1].answer == (first + "".join(rest)).strip()
    assert "stopped before the end" in engine.trace(conv).notes
    _, answer = _chat(engine, conv, "Again?")  # the worker is free
    assert len(conv.turns) == 2 and answer


def test_closing_the_iterator_cancels(model):
    engine = ChatEngine({"m": model})
    conv = engine.new_conversation()
    stream = engine.ask(conv, "Talk.", GenerationSettings(max_new_tokens=400, do_sample=False))
    next(stream)
    stream.close()
    _chat(engine, conv, "Next?")
    assert len(engine.trace(conv).prompt) > 0 and len(conv.turns) == 2


def test_concurrent_conversations_match_sequential_answers(model, media):
    questions = ["What is moving?", "Colours?", "How many?", "Is it loud?"]
    # Sampled with a seed per conversation, so every conversation's answer is its own (a tiny
    # random model answers greedily the same whatever the question): an answer delivered to
    # the wrong conversation fails the comparison below.
    settings = [GenerationSettings(max_new_tokens=24, do_sample=True, temperature=2.0, seed=i) for i in range(4)]
    expected = []
    solo = ChatEngine({"m": model})
    for q, s in zip(questions, settings, strict=True):
        conv = solo.new_conversation()
        solo.attach_media(conv, media / "av.mp4")
        expected.append(_chat(solo, conv, q, s)[1])
    assert len(set(expected)) == len(expected), expected
    engine = ChatEngine({"m": model}, concurrency=3)
    convs = [engine.new_conversation() for _ in questions]
    results: dict[int, str] = {}

    def run(i):
        engine.attach_media(convs[i], media / "av.mp4")
        results[i] = "".join(engine.ask(convs[i], questions[i], settings[i]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [results[i].strip() for i in range(len(questions))] == expected
    assert [c.turns[0].answer for c in convs] == expected


def test_a_failing_request_does_not_break_others(model):
    broken = _model()

    def explode(*args, **kwargs):
        raise RuntimeError("simulated failure")

    broken.llm.forward = explode
    engine = ChatEngine({"ok": model, "broken": broken}, concurrency=2)
    bad, good = engine.new_conversation("broken"), engine.new_conversation("ok")
    with pytest.raises(RuntimeError, match="simulated"):
        list(engine.ask(bad, "Q?", GREEDY))
    assert bad.turns == []  # the failed question was rolled back
    assert _chat(engine, good, "Q?")[1]
    with pytest.raises(RuntimeError, match="simulated"):
        list(engine.ask(bad, "Q?", GREEDY))


def test_queue_full_raises_engine_busy(model):
    engine = ChatEngine({"m": model}, concurrency=1, queue_size=1)
    long = GenerationSettings(max_new_tokens=400, do_sample=False)
    a, b, c = (engine.new_conversation() for _ in range(3))
    running = engine.ask(a, "Talk.", long)
    next(running)  # the worker holds it
    waiting = engine.ask(b, "Talk.", long)
    with pytest.raises(EngineBusy, match="try again"):
        engine.ask(c, "Talk.", long)
    engine.cancel(a)
    engine.cancel(b)
    list(running), list(waiting)
    assert _chat(engine, c, "Now?")[1]


def test_bad_input_gets_clear_errors(model, media):
    engine = ChatEngine({"m": model})
    conv = engine.new_conversation()
    for question, words in (("", "empty"), ("   ", "empty"), ("a <ImageHere> b", "ImageHere"),
                            ("x" * 600, "context")):
        with pytest.raises(BadRequest, match=words):
            engine.ask(conv, question)
    with pytest.raises(BadRequest, match="not found"):
        engine.attach_media(conv, media / "nope.mp4")
    with pytest.raises(MediaError):
        engine.attach_media(conv, media / "notes.mp4")
    with pytest.raises(BadRequest, match="not 'image'"):
        engine.attach_media(conv, media / "av.mp4", kind="image")
    with pytest.raises(BadRequest, match="unknown model"):
        engine.new_conversation("gpt")
    with pytest.raises(BadRequest, match="top_p"):
        engine.ask(conv, "Q?", GenerationSettings(top_p=2.0))
    with pytest.raises(BadRequest, match="nothing to regenerate"):
        engine.regenerate(conv)
    _chat(engine, conv, "Q?")
    with pytest.raises(BadRequest, match="already has questions"):
        engine.attach_media(conv, media / "av.mp4")
    assert len(conv.turns) == 1 and conv.media is None


def test_old_turns_are_dropped_but_never_the_media(media):
    small = _model(llm={"max_context": 400})
    engine = ChatEngine({"m": small})
    conv = engine.new_conversation()
    engine.attach_media(conv, media / "silent.mp4")  # about 120 prompt tokens
    settings = GenerationSettings(max_new_tokens=40, do_sample=False)
    for i in range(6):
        _chat(engine, conv, f"Question number {i}, about the video?", settings)
    trace = engine.trace(conv)
    assert any(n.startswith("dropped") for n in trace.notes) and conv.first_turn > 0
    assert "<Video><ImageHere></Video>" in trace.prompt and "Question number 5" in trace.prompt
    assert "Question number 0" not in trace.prompt
    assert trace.tokens.prompt + 40 <= 400 and trace.tokens.media == 5
    assert len(conv.history()) == 6  # the user still sees every turn


def test_regenerate_undo_clear(model, media):
    engine = ChatEngine({"m": model})
    conv = engine.new_conversation()
    engine.attach_media(conv, media / "av.mp4")
    sampled = GenerationSettings(max_new_tokens=24, seed=1)
    _chat(engine, conv, "Q1?", sampled)
    first = conv.turns[-1].answer
    again = "".join(engine.regenerate(conv, GenerationSettings(max_new_tokens=24, seed=1)))
    assert again.strip() == first and len(conv.turns) == 1  # same seed, same answer
    "".join(engine.regenerate(conv, GenerationSettings(max_new_tokens=24, seed=2)))
    assert conv.turns[-1].answer != first and len(conv.turns) == 1
    _chat(engine, conv, "Q2?")
    engine.undo(conv)
    assert [q for q, _ in conv.history()] == ["Q1?"]
    _chat(engine, conv, "Q3?")
    assert "Q2?" not in engine.trace(conv).prompt and "Q3?" in engine.trace(conv).prompt
    engine.clear(conv)
    assert conv.turns == [] and conv.media is None and engine.trace(conv) is None


def test_beam_search_through_the_engine(model):
    engine = ChatEngine({"m": model})
    conv = engine.new_conversation()
    deltas, answer = _chat(engine, conv, "Q?", GenerationSettings(max_new_tokens=10, num_beams=3, do_sample=False))
    assert answer and len(deltas) >= 1 and conv.kv is None


def test_load_options_follow_the_model_config(media):
    few_clips = _model(audio={"num_clips": 4}, vision={"image_size": 35})
    engine = ChatEngine({"m": few_clips})
    conv = engine.new_conversation()
    got = engine.attach_media(conv, media / "av.mp4", num_frames=3)
    assert tuple(got.frames.shape) == (3, 3, 35, 35)
    assert tuple(got.audio.shape) == (4, 1, 32, 44)  # the tiny preset's mel bins x frames, not 128 x 204
    _chat(engine, conv, "Q?")
    assert engine.trace(conv).shapes.fbank == [1, 4, 1, 32, 44]


def test_only_the_most_recent_conversations_keep_a_kv_cache(model):
    from model.chat.engine import KV_CONVERSATIONS

    engine = ChatEngine({"m": model})
    convs = [engine.new_conversation() for _ in range(KV_CONVERSATIONS + 1)]
    for conv in convs:
        _chat(engine, conv, "Q?", GenerationSettings(max_new_tokens=2, do_sample=False))
    assert convs[0].kv is None and all(c.kv is not None for c in convs[1:])
    _chat(engine, convs[0], "Again?", GenerationSettings(max_new_tokens=2, do_sample=False))
    assert engine.trace(convs[0]).tokens.reused == 0 and convs[1].kv is None


def test_engine_media_options_set_the_default_frame_count(media):
    from model.media import LoadOptions

    wide = _model(max_frame_pos=16)
    engine = ChatEngine({"m": wide}, media_options=LoadOptions(num_frames=16))
    conv = engine.new_conversation()
    assert engine.attach_media(conv, media / "av.mp4").frames.shape[0] == 16  # not LoadOptions' own 8
    _chat(engine, conv, "Q?", GenerationSettings(max_new_tokens=2, do_sample=False))
    assert engine.trace(conv).shapes.frames[1] == 16
    other = engine.new_conversation()
    assert engine.attach_media(other, media / "av.mp4", num_frames=5).frames.shape[0] == 5  # a caller's wins
    plain = ChatEngine({"m": wide})
    assert plain.attach_media(plain.new_conversation(), media / "av.mp4").frames.shape[0] == LoadOptions.num_frames


def test_frame_count_is_limited_by_the_models_frame_positions(model, media):
    engine = ChatEngine({"m": model})  # the tiny preset has 8 frame positions
    for bad in (9, 0, "4", 2.5):
        with pytest.raises(BadRequest, match="num_frames must be between 1 and 8"):
            engine.attach_media(engine.new_conversation(), media / "av.mp4", num_frames=bad)


def test_decoded_media_cache_is_bounded_by_bytes_not_only_by_count(model, media, monkeypatch):
    import model.chat.engine as engine_module

    engine = ChatEngine({"m": model}, media_cache_items=32)
    try:
        engine.attach_media(engine.new_conversation(), media / "av.mp4")
        one_file = engine.loaded.bytes
        assert 0 < one_file <= engine_module.MEDIA_CACHE_BYTES  # the default budget keeps a clip
    finally:
        engine.close()
    monkeypatch.setattr(engine_module, "MEDIA_CACHE_BYTES", one_file - 1)
    small = ChatEngine({"m": model}, media_cache_items=32)
    try:
        small.attach_media(small.new_conversation(), media / "av.mp4")
        assert len(small.loaded) == 0 and small.loaded.bytes == 0  # over the byte budget: not kept
    finally:
        small.close()
