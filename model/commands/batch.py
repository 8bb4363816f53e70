"""`launch.py batch`: answer a JSONL file of questions about media files.

    python launch.py batch --input questions.jsonl --output answers.jsonl [--model DIR] [--greedy]

Input, one JSON object per line::

    {"id": "q1", "video": "clips/dog.mp4", "question": "What is the dog doing?"}
    {"image": "dog.jpg", "question": "What breed?"}          # or "audio": ..., or no media
    {"video": "a.mp4", "question": "...", "use_audio": false, "num_frames": 16}
    {"video": "a.mp4", "question": "...", "system": "Answer in one word."}  # replaces the system prompt

Other keys are refused (so a misspelt media key is not answered as a text-only question).
Relative paths are relative to the input file's folder. Output, one line per input line::

    {"line": 1, "id": "q1", "media": "...", "question": "...", "answer": "...", "error": null, "seconds": 1.2}

A bad line (bad JSON, missing file, undecodable media...) is written with its ``error`` and
the run goes on. Running again with the same output file skips lines already answered
(``--retry-errors`` also redoes the lines that failed). Exit code 1 when a line failed in
this run, else 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from model.chat.errors import WrongMediaKind
from model.commands.common import ModelMissing, add_model_arguments, add_sampling_arguments, fail, load_models

MEDIA_KEYS = ("video", "image", "audio")
# What a line may hold; anything else is refused, so a misspelt media key ("media", "file") is not
# silently answered as a text-only question.
LINE_KEYS = ("id", "question", "model", "system", "use_audio", "num_frames", *MEDIA_KEYS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, required=True, help="questions, one JSON object per line")
    parser.add_argument("--output", type=Path, required=True, help="answers (appended to; resumes)")
    parser.add_argument("--retry-errors", action="store_true", help="redo lines that failed in an earlier run")
    add_model_arguments(parser)
    add_sampling_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model.chat.engine import ChatEngine
    from model.commands.common import settings_from_args

    if not args.input.is_file():
        return fail(f"input file not found: {args.input}")
    try:
        models = load_models(args)
        # the first model folder's generation settings, then the flags given
        settings = settings_from_args(args, next(iter(models.values())).generation_defaults)
        settings.check()
    except (ModelMissing, FileNotFoundError, ValueError) as err:
        return fail(str(err))
    lines = args.input.read_text(encoding="utf-8").splitlines()
    done = finished_lines(args.output, retry_errors=args.retry_errors)
    todo = [(n, text) for n, text in enumerate(lines, start=1) if text.strip() and n not in done]
    engine = ChatEngine(models)
    failed = 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with args.output.open("a", encoding="utf-8") as out:
            for n, text in tqdm(todo, desc="answering", unit="q", initial=len(lines) - len(todo), total=len(lines)):
                record = answer_line(engine, n, text, args.input.parent, settings)
                failed += record["error"] is not None
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()  # a killed run keeps every finished line
    finally:
        engine.close()
    skipped = len(lines) - len(todo)
    print(f"{len(todo) - failed} answered, {failed} failed, {skipped} already done or blank -> {args.output}")
    return 1 if failed else 0


def finished_lines(output: Path, retry_errors: bool = False) -> set[int]:
    """Line numbers already in ``output`` (only the answered ones with ``retry_errors``)."""
    done: set[int] = set()
    if not output.is_file():
        return done
    for text in output.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run: that question is asked again
        if isinstance(record, dict) and isinstance(record.get("line"), int):
            if not (retry_errors and record.get("error")):
                done.add(record["line"])
    return done


def answer_line(engine, n: int, text: str, base: Path, settings) -> dict:
    """Answer one input line; every failure becomes the record's ``error``."""
    record = {"line": n, "id": None, "media": None, "question": None, "answer": None, "error": None}
    start = time.perf_counter()
    try:
        try:
            item = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"the line is not valid JSON ({err})") from None
        if not isinstance(item, dict):
            raise ValueError("the line is not a JSON object")
        record["id"] = item.get("id")
        record["question"] = question = item.get("question")
        unknown = sorted(set(item) - set(LINE_KEYS))
        if unknown:
            raise ValueError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; a line "
                             f"takes {', '.join(LINE_KEYS)} (media go under video, image or audio)")
        kinds = [k for k in MEDIA_KEYS if item.get(k)]
        if len(kinds) > 1:
            raise ValueError(f"give at most one of {', '.join(MEDIA_KEYS)}; this line has {', '.join(kinds)}")
        conv = engine.new_conversation(item.get("model"), item.get("system"))
        if kinds:
            path = Path(item[kinds[0]])
            path = path if path.is_absolute() else base / path
            record["media"] = str(path)
            try:
                engine.attach_media(conv, path, kind=kinds[0], use_audio=bool(item.get("use_audio", True)),
                                    num_frames=item.get("num_frames"))
            except WrongMediaKind as err:  # the engine words it for Python (kind=...); a line has keys
                raise ValueError(f"{err.path} is not a {err.asked} but {err.found}: give it under the "
                                 f"\"{err.found}\" key") from None
        answer = "".join(engine.ask(conv, question, settings))
        record["answer"] = conv.turns[-1].answer if conv.turns else answer.strip()
        trace = engine.trace(conv)
        record["notes"] = list(trace.notes) if trace else []
    except Exception as err:  # reported in the output; the run goes on
        record["error"] = f"{type(err).__name__}: {err}"
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record
