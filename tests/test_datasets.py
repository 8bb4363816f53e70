"""Readers for the original training data, on a few hand-written lines in each format."""

from __future__ import annotations

import json
import os

import pytest

from train.datasets import (
    READERS,
    DataFormatError,
    Turn,
    read_cc_sbu_align,
    read_llava_cc3m,
    read_llava_instruct,
    read_videochat_instruct,
    read_webvid,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WEBVID_CSV = """videoid,contentUrl,duration,page_dir,name
31353427,https://ak.picdn.net/v/31353427.mp4,PT00H00M10S,001201_001250,"Merida, mexico - may 23, 2017: tourists walk."
14781349,https://ak.picdn.net/v/14781349.mp4,PT00H00M16S,000551_000600,Happy family using laptop on bed at home
"""

CC3M_CHAT = [
    {"id": "GCC_train_002582585", "image": "GCC_train_002582585.jpg", "conversations": [
        {"from": "human", "value": "Provide a brief description of the given image.\n<image>"},
        {"from": "gpt", "value": "olive oil is a healthy ingredient used liberally ."}]},
    {"id": "GCC_train_002109690", "image": "GCC_train_002109690.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWrite a terse but informative summary of the picture."},
        {"from": "gpt", "value": "a view of a city skyline"}]},
]

FILTER_CAP = {"annotations": [
    {"image_id": "2", "caption": "A man fishing on a lawn next to a river."},
    {"image_id": "3", "caption": "A red double decker bus parked on the street. "},
]}

LLAVA_INSTRUCT = [
    {"id": "000000033471", "image": "000000033471.jpg", "conversations": [
        {"from": "human", "value": "What are the colors of the bus in the image?\n<image>"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
]

VIDEOCHAT = [
    {"video": "000551_000600/1066619623.mp4", "QA": [
        {"i": "Describe the following video in detail.", "q": "", "a": "A woman is walking on a beach at sunset."}]},
    {"video": "001201_001250/1021564411.mp4", "QA": [
        {"q": "What is the man holding?", "a": "He is holding a red umbrella."},
        {"q": "Is it raining?", "a": "Yes, it is raining lightly."}]},
]


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_webvid_csv(tmp_path):
    recs = list(read_webvid(write(tmp_path, "results_2M_train.csv", WEBVID_CSV), "/data/webvid"))
    assert [r.id for r in recs] == ["31353427", "14781349"]
    assert recs[0].media_path == "/data/webvid/001201_001250/31353427.mp4" and recs[0].media_type == "video"
    assert recs[0].caption == "Merida, mexico - may 23, 2017: tourists walk."
    assert recs[1].caption == "Happy family using laptop on bed at home" and recs[1].turns == []
    # A folder of CSVs is read whole, as the original does.
    write(tmp_path, "results_part2.csv", WEBVID_CSV)
    assert len(list(read_webvid(tmp_path, "/v"))) == 4


def test_webvid_bad_header_and_bad_row(tmp_path):
    bad_header = write(tmp_path, "a.csv", "videoid,url,caption\n1,http://x,hello\n")
    with pytest.raises(DataFormatError, match=r"missing columns \['page_dir', 'name'\]"):
        list(read_webvid(bad_header, "/v"))
    short_row = write(tmp_path, "b.csv", WEBVID_CSV + "999,http://x.mp4,PT00H00M05S\n")
    with pytest.raises(DataFormatError, match="line 4: wrong number of fields"):
        list(read_webvid(short_row, "/v"))
    empty_caption = write(tmp_path, "c.csv", WEBVID_CSV + '999,http://x.mp4,PT00H00M05S,000001_000050,""\n')
    with pytest.raises(DataFormatError, match="line 4: missing or empty 'name'"):
        list(read_webvid(empty_caption, "/v"))
    with pytest.raises(FileNotFoundError, match="WebVid CSV not found"):
        list(read_webvid(tmp_path / "nope.csv", "/v"))


def test_llava_cc3m_chat_json(tmp_path):
    recs = list(read_llava_cc3m(write(tmp_path, "chat.json", CC3M_CHAT), "/data/cc3m"))
    assert recs[0].media_path == "/data/cc3m/GCC_train_002582585.jpg" and recs[0].media_type == "image"
    assert recs[0].caption == "olive oil is a healthy ingredient used liberally ."
    assert recs[0].turns[0] == Turn("human", "Provide a brief description of the given image.")
    assert recs[1].turns[0].text == "Write a terse but informative summary of the picture."  # <image> first


def test_cc_sbu_align_filter_cap(tmp_path):
    recs = list(read_cc_sbu_align(write(tmp_path, "filter_cap.json", FILTER_CAP), "/data/cc_sbu_align/image"))
    assert [r.media_path for r in recs] == ["/data/cc_sbu_align/image/2.jpg", "/data/cc_sbu_align/image/3.jpg"]
    assert recs[1].caption == "A red double decker bus parked on the street."
    with pytest.raises(DataFormatError, match="'annotations' list"):
        list(read_cc_sbu_align(write(tmp_path, "x.json", CC3M_CHAT), "/i"))
    broken = {"annotations": [{"image_id": "4"}]}
    with pytest.raises(DataFormatError, match="annotation 0: missing or empty 'caption'"):
        list(read_cc_sbu_align(write(tmp_path, "y.json", broken), "/i"))


def test_llava_instruct_150k(tmp_path):
    path = write(tmp_path, "llava_instruct_150k.json", LLAVA_INSTRUCT)
    (rec,) = read_llava_instruct(path, "/coco/train2014")
    assert rec.media_path == "/coco/train2014/COCO_train2014_000000033471.jpg" and rec.caption is None
    assert [t.role for t in rec.turns] == ["human", "gpt", "human", "gpt"]
    assert rec.turns[0].text == "What are the colors of the bus in the image?"
    (plain,) = read_llava_instruct(path, "/coco/train2017", image_prefix="")
    assert plain.media_path == "/coco/train2017/000000033471.jpg"


def test_llava_conversation_errors(tmp_path):
    wrong_role = [{"id": "1", "image": "1.jpg", "conversations": [{"from": "user", "value": "hi"}]}]
    with pytest.raises(DataFormatError, match="entry 0 turn 0: speaker 'user'"):
        list(read_llava_instruct(write(tmp_path, "a.json", wrong_role), "/i"))
    no_image = [LLAVA_INSTRUCT[0], {"id": "2", "conversations": LLAVA_INSTRUCT[0]["conversations"]}]
    with pytest.raises(DataFormatError, match="entry 1: missing or empty 'image'"):
        list(read_llava_instruct(write(tmp_path, "b.json", no_image), "/i"))
    truncated = write(tmp_path, "c.json", json.dumps(LLAVA_INSTRUCT)[:-5])
    with pytest.raises(DataFormatError, match="not valid JSON at line 1"):
        list(read_llava_instruct(truncated, "/i"))
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        list(read_llava_cc3m(write(tmp_path, "d.json", FILTER_CAP), "/i"))


def test_videochat_instruct_11k(tmp_path):
    recs = list(read_videochat_instruct(write(tmp_path, "videochat_instruct_11k.json", VIDEOCHAT), "/webvid"))
    assert recs[0].media_path == "/webvid/000551_000600/1066619623.mp4" and recs[0].media_type == "video"
    assert recs[0].instruction == "Describe the following video in detail."
    assert recs[0].turns == [Turn("human", ""), Turn("gpt", "A woman is walking on a beach at sunset.")]
    assert recs[1].id == "1021564411" and recs[1].instruction is None
    assert [t.text for t in recs[1].turns] == ["What is the man holding?", "He is holding a red umbrella.",
                                               "Is it raining?", "Yes, it is raining lightly."]
    bad = [{"video": "a.mp4", "QA": [{"question": "x", "answer": "y"}]}]
    with pytest.raises(DataFormatError, match="entry 0 QA 0: needs text 'q' and non-empty 'a'"):
        list(read_videochat_instruct(write(tmp_path, "bad.json", bad), "/v"))


def test_reader_table_is_complete():
    assert set(READERS) == {"webvid", "llava_cc3m", "cc_sbu_align", "llava_instruct", "videochat_instruct"}
    assert READERS["webvid"] is read_webvid
