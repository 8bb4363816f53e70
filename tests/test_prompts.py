"""Prompt strings against the original's rendering (written out from the reference facts)."""

from __future__ import annotations

import re

import pytest
import torch

from model.chat.builder import Part
from model.chat.cache import pieces_after
from model.chat.conversation import Attachment, Conversation, Turn, prompt_keys, prompt_pieces, render_prompt
from model.chat.prompts import (
    AUDIO_VIDEO_MESSAGE,
    IMAGE_SYSTEM,
    LLAMA_2,
    LLAMA_2_SYSTEM,
    TOKENIZER,
    VICUNA_V0,
    get_template,
    media_message,
    stop_strings,
    stop_token_ids,
)
from tests.tiny import tiny_tokenizer

FRAMES_MSG = "The video contains 8 frames sampled at 0.0, 1.2, 2.5, 3.8, 5.0, 6.2, 7.5, 8.8 seconds. "
AV = ("Close your eyes, open your ears and you imagine only based on the sound that: <ImageHere>."
      "                 Close your ears, open your eyes and you see that <Video><ImageHere></Video>."
      "                  Now answer my question based on what you have just seen and heard.")


class _Media:  # what the conversation reads from a MediaInput
    frame_message = FRAMES_MSG


def _conv(kind: str | None, turns: list[tuple[str, str | None]], sound: bool = False) -> Conversation:
    conv = Conversation(model="m", turns=[Turn(q, a) for q, a in turns])
    if kind:
        conv.media = Attachment(path="x", kind=kind, media=_Media(), use_audio=sound, options_key=())
    return conv


def test_audio_video_message_has_the_original_runs_of_spaces():
    assert AUDIO_VIDEO_MESSAGE == AV
    runs = [len(m) for m in re.findall(r" {2,}", AUDIO_VIDEO_MESSAGE)]
    assert runs == [17, 18]
    assert media_message("video", with_audio=True)[1] == ["audio", "video"]  # sound slot first


def test_vicuna_video_without_sound():
    prompt, slots = render_prompt(_conv("video", [("What is the dog doing?", None)]), VICUNA_V0, None, 0)
    assert prompt == ("###Human: <Video><ImageHere></Video> " + FRAMES_MSG + " What is the dog doing?###Assistant:")
    assert "seconds.  What" in prompt  # the original's double space (message ends with a space, join adds one)
    assert slots == ["video"]


def test_vicuna_image_two_turns_uses_the_image_system_prompt():
    conv = _conv("image", [("Describe it.", "A dog on a board."), ("What colour?", None)])
    prompt, _ = render_prompt(conv, VICUNA_V0, None, 0)
    assert prompt == (IMAGE_SYSTEM + "###Human: <Image><ImageHere></Image>  Describe it.###Assistant: "
                      "A dog on a board.###Human: What colour?###Assistant:")


def test_llama2_audio_video_has_empty_system_block():
    prompt, slots = render_prompt(_conv("video", [("What is the dog doing?", None)], sound=True), LLAMA_2, None, 0)
    assert prompt == "[INST] <<SYS>>\n\n<</SYS>>\n\n" + AV + " What is the dog doing? [/INST]"
    assert slots == ["audio", "video"]


def test_llama2_multi_turn_image():
    conv = _conv("image", [("Describe it.", "A dog."), ("Why?", None)])
    prompt, _ = render_prompt(conv, LLAMA_2, None, 0)
    assert prompt == (f"[INST] <<SYS>>\n{IMAGE_SYSTEM}\n<</SYS>>\n\n<Image><ImageHere></Image>  Describe it. [/INST]"
                      " A dog. </s><s>[INST] Why? [/INST]")


def test_llama2_text_only_uses_default_system_and_strips_leading_bos_text():
    prompt = LLAMA_2.render(LLAMA_2.system, [("USER", "Hi"), ("ASSISTANT", None)])
    assert prompt == f"[INST] <<SYS>>\n{LLAMA_2_SYSTEM}\n<</SYS>>\n\nHi [/INST]"
    with pytest.raises(ValueError, match="first message"):
        LLAMA_2.render("", [("ASSISTANT", "x")])


def test_dropped_turns_keep_the_media_with_the_first_kept_question():
    conv = _conv("video", [("Q1", "A1"), ("Q2", "A2"), ("Q3", None)])
    prompt, _ = render_prompt(conv, VICUNA_V0, None, 2)
    assert prompt == "###Human: <Video><ImageHere></Video> " + FRAMES_MSG + " Q3###Assistant:"


def test_tokenizer_template_puts_media_in_the_user_message():
    tok = tiny_tokenizer()  # chat template: "{bos}role: content\n..." + "assistant:"
    conv = _conv("video", [("Q1", "A1"), ("Q2", None)])
    prompt, _ = render_prompt(conv, TOKENIZER, tok, 0)
    assert prompt == "<s>user: <Video><ImageHere></Video> " + FRAMES_MSG + " Q1\nassistant: A1\nuser: Q2\nassistant:"
    with pytest.raises(ValueError, match="chat template"):
        TOKENIZER.render("", [("user", "x")], tokenizer=None)


def test_audio_only_and_unknown_kind():
    msg, slots = media_message("audio")
    assert slots == ["audio"] and msg.count("<ImageHere>") == 1
    with pytest.raises(ValueError, match="unknown media kind"):
        media_message("pdf")
    with pytest.raises(KeyError, match="known"):
        get_template("alpaca")


def test_stops_come_from_template_and_tokenizer():
    tok = tiny_tokenizer()
    assert stop_strings(VICUNA_V0, tok) == ["###", "</s>"]
    assert stop_strings(LLAMA_2, tok) == ["</s>"]
    assert stop_token_ids(tok) == {tok.convert_tokens_to_ids("</s>")}

    class GenCfg:
        eos_token_id = [5, 7]

    assert stop_token_ids(tok, GenCfg()) == {tok.eos_token_id, 5, 7}
    assert VICUNA_V0.answer_suffix() == "###" and LLAMA_2.answer_suffix() == " </s>"
    assert TOKENIZER.answer_suffix(tok) == "</s>"


def test_pieces_put_media_in_the_slots_with_keys_per_position():
    media = {"audio": torch.randn(1, 3, 4), "video": torch.randn(1, 5, 4)}
    parts = [Part(ids=[1, 5, 6]), Part(slot="audio"), Part(ids=[7]), Part(slot="video"), Part(ids=[8, 9])]
    pieces = prompt_pieces(parts, media, 9)
    kinds = ["text" if p.ids is not None else "media" for p in pieces]
    assert kinds == ["text", "media", "text", "media", "text"]
    assert pieces[0].ids == [1, 5, 6] and torch.equal(pieces[3].embeds, media["video"])
    keys = prompt_keys(pieces)
    assert len(keys) == 3 + 3 + 1 + 5 + 2 and keys[3] == (9, "audio", 0) and keys[:3] == [1, 5, 6]
    tail = pieces_after(pieces, 5)  # inside the audio block
    assert tail[0].embeds.shape[1] == 1 and sum(len(p) for p in tail) == len(keys) - 5
    with pytest.raises(ValueError, match="no video tokens"):
        prompt_pieces(parts, {"audio": media["audio"]}, 9)
