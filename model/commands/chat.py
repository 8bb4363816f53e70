"""`launch.py chat`: talk about a video, image or audio file in the terminal.

    python launch.py chat --video clip.mp4 --question "What is moving?" --question "What colour is it?"
    python launch.py chat --video clip.mp4 --no-audio          # interactive (type /help)
    python launch.py chat --image dog.jpg --model checkpoints/my-model --greedy
    python launch.py chat --video clip.mp4 --system "Answer in one short sentence." -q "What is moving?"

Each ``--question`` is one turn of the same conversation; answers stream to stdout, notes
(e.g. "this video has no sound") go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from model.commands.common import (
    ModelMissing,
    add_model_arguments,
    add_sampling_arguments,
    fail,
    load_models,
    settings_from_args,
)
from model.media import MAX_FRAMES, LoadOptions

HELP = "commands: /retry (answer again), /undo (forget the last turn), /trace (last turn details), /quit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    media = parser.add_mutually_exclusive_group()
    media.add_argument("--video", help="a video file (its sound is used unless --no-audio)")
    media.add_argument("--image", help="an image file")
    media.add_argument("--audio", help="an audio file (sound only)")
    parser.add_argument("--no-audio", action="store_true", help="ignore the video's sound")
    parser.add_argument("--frames", type=int, default=None,
                        help=f"frames sampled from the video (1-{MAX_FRAMES}, at most the model's max_frame_pos; "
                             f"default {LoadOptions.num_frames})")
    parser.add_argument("--question", "-q", action="append", default=[],
                        help="a question (repeatable: one turn each); none: interactive")
    parser.add_argument("--system", default=None, metavar="TEXT",
                        help="system prompt replacing the model's default (\"\" for none)")
    parser.add_argument("--trace", action="store_true", help="print each turn's timings and notes to stderr")
    add_model_arguments(parser)
    add_sampling_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from model.chat.engine import ChatEngine, ChatError
    from model.chat.errors import WrongMediaKind
    from model.media import MediaError

    try:
        models = load_models(args)
    except (ModelMissing, FileNotFoundError, ValueError) as err:
        return fail(str(err))
    engine = ChatEngine(models)
    settings = settings_from_args(args, engine.generation_defaults())  # the folder's, then the flags
    path, kind = _media_arg(args)
    try:
        conv = engine.new_conversation(system=args.system)
        settings.check()
        if path:
            media = engine.attach_media(conv, path, kind=kind, use_audio=not args.no_audio, num_frames=args.frames)
            for note in conv.media.notes:
                print(f"note: {note}", file=sys.stderr)
            print(f"[{conv.media.kind} {path}: {_describe(media)}]", file=sys.stderr)
        if args.question:
            for question in args.question:
                print(f"Q: {question}\nA: ", end="", flush=True)
                _answer(engine, conv, engine.ask(conv, question, settings), args.trace)
            return 0
        return _interactive(engine, conv, settings, args.trace)
    except WrongMediaKind as err:  # the engine's wording is the Python API's (kind=...): say the flag
        return fail(f"{err.path} is {_a(err.found)} file, not {_a(err.asked)}; give it with --{err.found}")
    except (ChatError, MediaError, ValueError) as err:
        return fail(str(err))
    finally:
        engine.close()


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _media_arg(args: argparse.Namespace) -> tuple[str | None, str | None]:
    for kind in ("video", "image", "audio"):
        if getattr(args, kind):
            return getattr(args, kind), kind
    return None, None


def _describe(media) -> str:
    parts = []
    if media.frames is not None:
        parts.append(f"{media.frames.shape[0]} frame(s)")
    parts.append(f"{media.audio.shape[0]} audio clip(s)" if media.has_audio else "no sound")
    return ", ".join(parts)


def _answer(engine, conv, stream, show_trace: bool) -> None:
    """Print a streamed answer; Ctrl-C stops it (the partial answer is kept)."""
    try:
        for delta in stream:
            print(delta, end="", flush=True)
    except KeyboardInterrupt:
        engine.cancel(conv)
        for _ in stream:  # let the worker finish its token
            pass
        print(" [stopped]", end="")
    print(flush=True)
    if show_trace:
        trace = engine.trace(conv)
        if trace is not None:
            summary = {k: v for k, v in trace.to_dict().items()
                       if k in ("timings", "tokens", "notes", "tokens_per_second")}
            print(json.dumps(summary, indent=1, default=str), file=sys.stderr)


def _interactive(engine, conv, settings, show_trace: bool) -> int:
    print(f"Chatting with {conv.model}. {HELP}", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        try:
            if line == "/undo":
                engine.undo(conv)
                print(f"[{len(conv.turns)} turn(s) left]", file=sys.stderr)
            elif line == "/retry":
                print("bot> ", end="", flush=True)
                _answer(engine, conv, engine.regenerate(conv, settings), show_trace)
            elif line == "/trace":
                trace = engine.trace(conv)
                print(json.dumps(trace.to_dict() if trace else None, indent=1, default=str), file=sys.stderr)
            elif line.startswith("/"):
                print(HELP, file=sys.stderr)
            else:
                print("bot> ", end="", flush=True)
                _answer(engine, conv, engine.ask(conv, line, settings), show_trace)
        except ValueError as err:  # ChatError and MediaError are ValueErrors: report and go on
            print(f"error: {err}", file=sys.stderr)
