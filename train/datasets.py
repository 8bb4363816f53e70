"""Readers for the original Video-LLaMA training data, each yielding plain ``Record``s.

Formats (as the released files are laid out):

- WebVid-2M/10M caption CSV (``results_2M_train.csv``): columns ``videoid``, ``contentUrl``,
  ``duration``, ``page_dir``, ``name`` (the caption); the video is ``<root>/<page_dir>/<videoid>.mp4``.
  Stage 1, video captions.
- LLaVA-CC3M-Pretrain-595K ``chat.json``: a list of ``{"id", "image", "conversations": [{"from":
  "human", "value": "...<image>"}, {"from": "gpt", "value": caption}]}``. Stage 1, image captions.
- MiniGPT-4 ``cc_sbu_align/filter_cap.json``: ``{"annotations": [{"image_id", "caption"}]}``; the
  image is ``<root>/<image_id>.jpg``. Stage 2, image descriptions.
- LLaVA-Instruct-150K ``llava_instruct_150k.json``: a list of ``{"id", "image", "conversations"}``;
  the original prefixes COCO 2014 names (``COCO_train2014_<image>``). Stage 2.
- VideoChat-Instruct-11K ``videochat_instruct_11k.json``: a list of ``{"video", "QA": [{"i"
  (optional instruction), "q", "a"}]}``; the video is ``<root>/<video>``. Stage 2.

The ``<image>`` / ``<video>`` placeholders are removed from the text: the media belongs to the
first human turn, where the trainer splices its query tokens (as the original does for video).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class DataFormatError(ValueError):
    """A data file does not have the layout of the format it was read as."""


@dataclass
class Turn:
    role: str  # "human" or "gpt", as in the LLaVA files
    text: str


@dataclass
class Record:
    id: str
    source: str  # "webvid", "llava_cc3m", "cc_sbu_align", "llava_instruct", "videochat_instruct"
    media_type: str  # "video" or "image"
    media_path: str
    caption: str | None = None  # caption-style data (stage 1 and cc_sbu_align)
    turns: list[Turn] = field(default_factory=list)  # conversations, human first
    instruction: str | None = None  # VideoChat's optional per-item instruction ("i")


_PLACEHOLDER = re.compile(r"\s*<(image|video)>\s*", re.IGNORECASE)
ROLES = ("human", "gpt")


def _strip_placeholder(text: str) -> str:
    return _PLACEHOLDER.sub(" ", text).strip()


def _load_json(path: Path, what: str):
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{what} file not found: {path}") from err
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: not valid JSON at line {err.lineno} column {err.colno} ({err.msg}); "
                              f"expected the {what} file") from err


def _fail(path: Path, where: str, problem: str, expected: str) -> DataFormatError:
    return DataFormatError(f"{path} {where}: {problem}; expected {expected}")


def _text(entry: dict, key: str, path: Path, where: str, expected: str) -> str:
    value = entry.get(key) if isinstance(entry, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, where, f"missing or empty {key!r}", expected)
    return value


def _turns(conversations, path: Path, where: str) -> list[Turn]:
    expected = 'conversations as [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]'
    if not isinstance(conversations, list) or not conversations:
        raise _fail(path, where, "'conversations' is missing, empty or not a list", expected)
    turns = []
    for k, turn in enumerate(conversations):
        role = turn.get("from") if isinstance(turn, dict) else None
        if role not in ROLES:
            raise _fail(path, f"{where} turn {k}", f"speaker {role!r} is not 'human' or 'gpt'", expected)
        value = turn.get("value")
        if not isinstance(value, str):
            raise _fail(path, f"{where} turn {k}", "'value' is missing or not text", expected)
        turns.append(Turn(role, _strip_placeholder(value)))
    if turns[0].role != "human":
        raise _fail(path, where, "the conversation starts with 'gpt'", expected)
    return turns


def _json_list(path: Path, what: str) -> list:
    data = _load_json(path, what)
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: top level is {type(data).__name__}, expected a JSON list ({what})")
    return data


# -- stage 1 -------------------------------------------------------------------------
WEBVID_COLUMNS = ("videoid", "page_dir", "name")


def _csv_files(path: Path) -> list[Path]:
    # The original reads every .csv in the annotation folder.
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise FileNotFoundError(f"no .csv files in {path}; expected WebVid results_*.csv files")
        return files
    if not path.exists():
        raise FileNotFoundError(f"WebVid CSV not found: {path}")
    return [path]


def read_webvid(csv_path: str | Path, video_root: str | Path) -> Iterator[Record]:
    """WebVid caption CSV (or a folder of them): one video-caption record per row."""
    root = Path(video_root)
    for path in _csv_files(Path(csv_path)):
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in WEBVID_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataFormatError(f"{path}: missing columns {missing} (found {reader.fieldnames}); expected "
                                      "a WebVid CSV with columns videoid, contentUrl, duration, page_dir, name")
            for row in reader:
                where = f"line {reader.line_num}"
                if None in row or any(row[c] is None for c in WEBVID_COLUMNS):
                    raise _fail(path, where, "wrong number of fields",
                                f"{len(reader.fieldnames)} comma-separated fields")
                expected = "a videoid, page_dir and a non-empty name (caption)"
                videoid = _text(row, "videoid", path, where, expected).strip()
                page_dir = _text(row, "page_dir", path, where, expected).strip()
                caption = _text(row, "name", path, where, expected).strip()
                yield Record(id=videoid, source="webvid", media_type="video",
                             media_path=str(root / page_dir / f"{videoid}.mp4"), caption=caption)


def read_llava_cc3m(chat_json: str | Path, image_root: str | Path) -> Iterator[Record]:
    """LLaVA-CC3M-Pretrain-595K ``chat.json``: image-caption records (caption = the gpt turn)."""
    path, root = Path(chat_json), Path(image_root)
    expected = 'entries {"id", "image", "conversations"}'
    for k, entry in enumerate(_json_list(path, "LLaVA-CC3M chat.json")):
        where = f"entry {k}"
        image = _text(entry, "image", path, where, expected)
        turns = _turns(entry.get("conversations"), path, where)
        answers = [t.text for t in turns if t.role == "gpt"]
        if not answers:
            raise _fail(path, where, "no 'gpt' turn holding the caption", expected)
        yield Record(id=str(entry.get("id", image)), source="llava_cc3m", media_type="image",
                     media_path=str(root / image), caption=answers[0], turns=turns)


# -- stage 2 -------------------------------------------------------------------------
def read_cc_sbu_align(filter_cap_json: str | Path, image_root: str | Path) -> Iterator[Record]:
    """MiniGPT-4 ``filter_cap.json``: image-description records, images at ``<image_id>.jpg``."""
    path, root = Path(filter_cap_json), Path(image_root)
    data = _load_json(path, "cc_sbu_align filter_cap.json")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataFormatError(f"{path}: expected an object with an 'annotations' list (MiniGPT-4 filter_cap.json)")
    expected = 'annotations {"image_id", "caption"}'
    for k, ann in enumerate(data["annotations"]):
        where = f"annotation {k}"
        image_id = _text(ann, "image_id", path, where, expected)
        caption = _text(ann, "caption", path, where, expected)
        yield Record(id=image_id, source="cc_sbu_align", media_type="image",
                     media_path=str(root / f"{image_id}.jpg"), caption=caption.strip())


def read_llava_instruct(json_path: str | Path, image_root: str | Path,
                        image_prefix: str = "COCO_train2014_") -> Iterator[Record]:
    """LLaVA-Instruct-150K: multi-turn image conversations.

    Args:
        image_prefix: prepended to each ``image`` name; the original points at COCO 2014 files
            (``COCO_train2014_000000033471.jpg``). Pass "" for COCO 2017 names.
    """
    path, root = Path(json_path), Path(image_root)
    expected = 'entries {"id", "image", "conversations"}'
    for k, entry in enumerate(_json_list(path, "LLaVA-Instruct json")):
        where = f"entry {k}"
        image = _text(entry, "image", path, where, expected)
        turns = _turns(entry.get("conversations"), path, where)
        yield Record(id=str(entry.get("id", image)), source="llava_instruct", media_type="image",
                     media_path=str(root / f"{image_prefix}{image}"), turns=turns)


def read_videochat_instruct(json_path: str | Path, video_root: str | Path) -> Iterator[Record]:
    """VideoChat-Instruct-11K: video conversations from ``QA`` lists of ``q`` / ``a`` (and optional ``i``)."""
    path, root = Path(json_path), Path(video_root)
    expected = 'entries {"video", "QA": [{"q", "a"}, ...]}'
    for k, entry in enumerate(_json_list(path, "VideoChat-Instruct json")):
        where = f"entry {k}"
        video = _text(entry, "video", path, where, expected)
        qa = entry.get("QA")
        if not isinstance(qa, list) or not qa:
            raise _fail(path, where, "'QA' is missing, empty or not a list", expected)
        turns, instruction = [], None
        for j, pair in enumerate(qa):
            q = pair.get("q") if isinstance(pair, dict) else None
            a = pair.get("a") if isinstance(pair, dict) else None
            if not isinstance(q, str) or not isinstance(a, str) or not a.strip():
                raise _fail(path, f"{where} QA {j}", "needs text 'q' and non-empty 'a'", expected)
            if j == 0 and isinstance(pair.get("i"), str) and pair["i"].strip():
                instruction = pair["i"].strip()
            turns += [Turn("human", _strip_placeholder(q)), Turn("gpt", a.strip())]
        yield Record(id=Path(video).stem, source="videochat_instruct", media_type="video",
                     media_path=str(root / video), turns=turns, instruction=instruction)


# Format name -> reader, for configs that name their data sources.
READERS = {"webvid": read_webvid, "llava_cc3m": read_llava_cc3m, "cc_sbu_align": read_cc_sbu_align,
           "llava_instruct": read_llava_instruct, "videochat_instruct": read_videochat_instruct}
