"""Messages for media that cannot be used say what the file is and what to do, in the words
of the front end that shows them (the loader, the engine's Python API, the `chat` flags)."""

from __future__ import annotations

import os
import struct
import sys
import zlib

import pytest

import launch
from model.media import MediaError, MediaTooLarge, UnsupportedMedia, load_media
from tests import media_factory as mf

TINY = ["--preset", "tiny", "--random-weights", "--max-new-tokens", "2", "--greedy"]


def _huge_png(path, width: int = 30000, height: int = 30000):
    """A valid PNG of width x height 1-bit grey pixels (about 110 kB: rows of zeros compress)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the row's bits
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _chat(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["launch.py", "chat", *argv])
    code = launch.main(["chat", *argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    return _huge_png(tmp_path_factory.mktemp("huge") / "huge.png")


@pytest.mark.parametrize("name", ["huge.png", "huge.mp4"])  # refused by its content, whatever its name
def test_huge_image_says_it_is_too_large_and_the_limit(tmp_path, huge_png, name):
    path = tmp_path / name
    path.write_bytes(huge_png.read_bytes())
    with pytest.raises(MediaTooLarge, match=r"image of 30000x30000 pixels, too large: the limit is 33,177,600"):
        load_media(path)


def test_gif_header_over_pillows_size_guard_is_too_large_not_a_crash(tmp_path):
    # GIF runs Pillow's size guard inside its own header read: these 128 random bytes behind a GIF
    # signature (found by `python -m bench.fuzz`, seed 0) once crashed the loader with DecompressionBombError.
    data = bytes.fromhex(
        "4749463839610a41f28c78d9753c034c506476aa0c7ac6ea48b043c43909f276"
        "22a6547c1781240c2f5b0ead5b5aa99e0d771bd973f21733a8d12c8fb771126a"
        "41acfc1a5e311a2ca5fbf667b4933708b60195701d318514a83afd31e5e69409"
        "dc6fc9b9cbfbb3afaef3a1d552e5e38462eb9ef89c07a027d9c7a371cb931168"
    )
    path = tmp_path / "bomb.mp3"
    path.write_bytes(data)
    with pytest.raises(MediaTooLarge, match=r"bomb.mp3 reads as a GIF image too large to open"):
        load_media(path)


def test_folder_and_named_pipe_say_what_they_are(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(UnsupportedMedia, match="named pipe"):
        load_media(fifo)  # refused without opening it (opening would wait for a writer)
    with pytest.raises(UnsupportedMedia, match="is a folder"):
        load_media(tmp_path)
    with pytest.raises(MediaError, match="file not found"):
        load_media(tmp_path / "none.mp4")


def test_chat_names_the_folder_the_pipe_and_the_flag_to_use(monkeypatch, capsys, tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    for path, words in ((fifo, "named pipe"), (tmp_path, "is a folder")):
        code, err = _chat(monkeypatch, capsys, "--video", str(path), "-q", "hi", *TINY)
        assert code == 2 and words in err and "not found" not in err
    sound = mf.audio(tmp_path / "tone.wav", duration=1.0)
    code, err = _chat(monkeypatch, capsys, "--video", str(sound), "-q", "hi", *TINY)
    assert code == 2 and "is an audio file, not a video; give it with --audio" in err and "kind=" not in err
    picture = mf.image(tmp_path / "red.png")
    code, err = _chat(monkeypatch, capsys, "--audio", str(picture), "-q", "hi", *TINY)
    assert code == 2 and "is an image file, not an audio; give it with --image" in err


def test_engine_keeps_the_python_wording_and_a_typed_error(tmp_path):
    from model.chat.engine import ChatEngine
    from model.chat.errors import BadRequest, WrongMediaKind
    from tests import tiny

    engine = ChatEngine({"tiny": tiny.tiny_model(seed=0)})
    try:
        conv = engine.new_conversation()
        sound = mf.audio(tmp_path / "tone.wav", duration=1.0)
        with pytest.raises(WrongMediaKind, match="is an audio file, not 'video'; attach it as kind='audio'") as info:
            engine.attach_media(conv, sound, kind="video")
        assert (info.value.found, info.value.asked) == ("audio", "video") and isinstance(info.value, BadRequest)
        with pytest.raises(BadRequest, match="is a folder"):
            engine.attach_media(conv, tmp_path)
    finally:
        engine.close()


def test_batch_names_the_key_to_use(monkeypatch, capsys, tmp_path):
    import json

    sound = mf.audio(tmp_path / "tone.wav", duration=1.0)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"video": str(sound), "question": "What moves?"}) + "\n")
    answers = tmp_path / "a.jsonl"
    argv = ["batch", "--input", str(questions), "--output", str(answers), *TINY]
    monkeypatch.setattr(sys, "argv", ["launch.py", *argv])
    assert launch.main(argv) == 1
    error = json.loads(answers.read_text())["error"]
    assert 'is not a video but audio: give it under the "audio" key' in error and "kind=" not in error
