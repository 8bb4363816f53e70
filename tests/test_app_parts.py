"""Under-the-hood pictures, the votes log and the app's command line, without a server."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from app import handlers, inspect_view
from app.main import add_arguments, main, missing_message, model_folders, precision_of, unique_names
from app.votes import VoteLog
from tests.app_helpers import CLIP, SILENT_CLIP, tiny_engine


@pytest.fixture(scope="module")
def asked():
    engine = tiny_engine()
    session, _ = handlers.load_media(engine, None, str(CLIP), handlers.MODE_AV, 5)
    list(handlers.ask(engine, session, "What colour?", handlers.make_settings(1.0, 0.9, 8, 1, do_sample=False)))
    return engine, session


def test_frames_are_captioned_with_their_timestamps(asked):
    _, session = asked
    gallery = inspect_view.frame_gallery(session.media)
    assert len(gallery) == 5
    for (picture, caption), stamp, frame in zip(gallery, session.media.timestamps, session.media.frames_uint8,
                                                strict=True):
        assert caption == f"{stamp:.2f} s"
        assert np.array_equal(np.asarray(picture), frame)


def test_spectrogram_peaks_at_the_tone():
    rate, freq = 16000, 1000.0
    wave = np.sin(2 * np.pi * freq * np.arange(rate) / rate)
    spec = inspect_view.log_spectrogram(wave)  # (201 bins of 40 Hz, frames)
    assert spec.shape[0] == 201
    assert int(np.argmax(spec.mean(axis=1))) == round(freq / (rate / 400))


def test_audio_pictures_have_a_row_per_clip_and_none_without_sound(asked):
    engine, session = asked
    clips = len(session.media.clip_starts)
    wave = inspect_view.waveform_image(session.media, row_height=50)
    spec = inspect_view.spectrogram_image(session.media, row_height=60)
    assert wave.height == 50 * clips and spec.height == 60 * clips
    assert np.asarray(wave).std() > 10  # ink on the page, not a blank picture
    silent, _ = handlers.load_media(engine, None, str(SILENT_CLIP), handlers.MODE_AV, 4)
    assert inspect_view.waveform_image(silent.media) is None


def test_pipeline_stages_carry_the_traces_shapes_and_tokens(asked):
    engine, session = asked
    trace = engine.trace(session.conv)
    stages = inspect_view.stages_from_trace(trace)
    details = {s["name"]: s["detail"] for s in stages}
    frames = " x ".join(map(str, trace.shapes.frames))
    assert details["Frames (CLIP-normalised)"].startswith(frames)
    video = trace.shapes.video_tokens
    assert f"{video[1]} soft tokens" in details["frame positions + video Q-Former + video_proj"]
    assert f"{trace.tokens.prompt} tokens" in details["Prompt: text tokens with media embeddings spliced in"]
    assert {s["lane"] for s in stages} == {"vision", "audio", "text"}
    picture = inspect_view.pipeline_diagram(stages)
    assert np.asarray(picture).std() > 10


def test_render_gives_every_panel(asked):
    engine, session = asked
    frames, wave, spec, diagram, prompt, timings, notes = inspect_view.render(session, engine)
    assert len(frames) == 5 and wave is not None and spec is not None and diagram is not None
    assert "<ImageHere>" in prompt and "What colour?" in prompt
    assert any(row[0] == "generate" for row in timings)
    empty = inspect_view.render(handlers.ChatSession(), engine)
    assert empty[0] == [] and "Chat tab" in empty[-1]


def test_votes_log_and_tally(tmp_path):
    log = VoteLog(tmp_path / "sub" / "votes.jsonl")
    for vote in ("left", "right", "left", "tie", "both_bad"):
        log.append(vote, models=["a", "b"], answers=["x", "y"], question="q?", media_path=str(CLIP))
    with open(log.path, "a") as handle:
        handle.write('{"broken line\n')  # a crash mid-write must not break the tally
    assert log.tally() == [["a", 2, 1, 1, 1, 5], ["b", 1, 2, 1, 1, 5]]
    assert json.loads(log.path.read_text().splitlines()[0])["media_sha256"] == log.records()[0]["media_sha256"]
    with pytest.raises(ValueError, match="unknown vote"):
        log.append("meh", models=["a", "b"], answers=["x", "y"], question="q", media_path=None)
    with pytest.raises(ValueError, match="two models"):
        log.append("left", models=["a"], answers=["x"], question="q", media_path=None)


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_command_line_options():
    args = _args("--model", "m1", "--preset", "video-llama-2-7b", "--model", "m2", "--load-4bit", "--port", "7999")
    folders = model_folders(args)
    assert [f.name for f in folders] == ["m1", "m2", "video-llama-2-7b"]
    assert precision_of(args) == "nf4" and args.port == 7999
    assert precision_of(_args("--load-8bit")) == "int8" and precision_of(_args("--precision", "fp16")) == "fp16"
    assert precision_of(_args()) == "auto" and model_folders(_args())[0].name == "toy-world"
    for bad in (["--precision", "fp8"], ["--preset", "no-such-architecture"]):
        with pytest.raises(SystemExit):
            _args(*bad)
    assert unique_names(folders[:1] * 2) == ["m1", "m1 (2)"]


def test_missing_weights_say_what_to_run(tmp_path, capsys):
    assert "launch.py download video-llama-2-7b" in missing_message(tmp_path / "video-llama-2-7b")
    assert main(_args("--model", str(tmp_path / "nowhere"))) == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "launch.py convert" in err


def test_first_missing_names_the_first_absent_folder_unless_weights_are_random(tmp_path):
    from model.commands.common import first_missing

    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "config.json").write_text("{}")
    args = _args("--model", str(tmp_path / "here"), "--model", str(tmp_path / "gone"))
    assert str(tmp_path / "gone") in first_missing(args)
    assert first_missing(_args("--model", str(tmp_path / "here"))) is None
    assert first_missing(_args("--preset", "tiny", "--random-weights")) is None
