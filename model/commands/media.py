"""`python launch.py media PATH [--frames N] [--json]`: show what the model will receive from a file."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from model.media import MAX_FRAMES, LoadOptions, MediaError, MediaInput, load_media
from model.media.common import BACKENDS, RESIZE_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a video, image or audio file")
    parser.add_argument("--frames", type=int, default=LoadOptions.num_frames,
                        help=f"frames to sample, 1..{MAX_FRAMES} (default %(default)s)")
    parser.add_argument("--fps", type=float, default=None,
                        help="sample one frame every 1/FPS seconds instead (at most --frames)")
    parser.add_argument("--resize", choices=RESIZE_MODES, default=LoadOptions.resize,
                        help="squash (the original), or keep the aspect ratio with pad or crop")
    parser.add_argument("--no-audio", action="store_true", help="do not read the sound track")
    parser.add_argument("--backend", choices=BACKENDS, default=LoadOptions.backend,
                        help="frame decoder (decord reproduces the original)")
    parser.add_argument("--keyframe-snap", type=float, default=LoadOptions.keyframe_snap,
                        help="let each sample move to a keyframe within this fraction (< 0.5) of the spacing "
                             "between samples: faster on long videos, frames no longer exact (default: exact)")
    parser.add_argument("--timeout", type=float, default=LoadOptions.timeout_s, help="seconds (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def summary(m: MediaInput) -> dict:
    """Everything a person or a script needs to know about the model's input, as plain data."""
    return {
        "path": m.path,
        "kind": m.kind,
        "frames": 0 if m.frames is None else int(m.frames.shape[0]),
        "frame_shape": None if m.frames is None else list(m.frames.shape),
        "frame_indices": m.frame_indices,
        "timestamps": m.timestamps,
        "frame_message": m.frame_message,
        "has_audio": m.has_audio,
        "audio_silent": m.audio_silent,
        "audio_clips": 0 if m.audio is None else int(m.audio.shape[0]),
        "audio_shape": None if m.audio is None else list(m.audio.shape),
        "clip_starts": m.clip_starts,
        "duration": m.duration,
        "fps": m.fps,
        "width": m.width,
        "height": m.height,
        "notes": m.notes,
        "sha256": m.sha256,
        "decode_seconds": m.decode_seconds,
    }


def _print_text(s: dict) -> None:
    size = f", {s['width']}x{s['height']}" if s["width"] else ""
    timing = f", {s['fps']:g} fps, {s['duration']:g} s" if s["kind"] == "video" else (
        f", {s['duration']:g} s" if s["kind"] == "audio" else "")
    print(f"{s['path']}: {s['kind']}{size}{timing}")
    if s["frames"]:
        print(f"frames: {s['frames']} -> tensor {tuple(s['frame_shape'])}")
        print(f"  indices: {', '.join(map(str, s['frame_indices']))}")
        print(f"  timestamps (s): {', '.join(f'{t:g}' for t in s['timestamps'])}")
        if s["frame_message"]:
            print(f"  message: {s['frame_message'].strip()}")
    if s["has_audio"]:
        silent = " (silent)" if s["audio_silent"] else ""
        print(f"audio: found{silent}, {s['audio_clips']} clips -> tensor {tuple(s['audio_shape'])}")
        print(f"  clip starts (s): {', '.join(f'{t:g}' for t in s['clip_starts'])}")
    elif s["kind"] != "image":
        print("audio: none")
    for note in s["notes"]:
        print(f"note: {note}")
    print(f"decoded in {s['decode_seconds']:.3f} s; content hash {s['sha256'][:16]}...")


def main(args: argparse.Namespace) -> int:
    # The fbank and resampling tensors are small: OpenMP threads only add waiting, which on a
    # busy machine can turn 0.08 s into more than a second. A command owns its process.
    torch.set_num_threads(1)
    options = LoadOptions(num_frames=args.frames, fps=args.fps, resize=args.resize, use_audio=not args.no_audio,
                          backend=args.backend, timeout_s=args.timeout, keyframe_snap=args.keyframe_snap)
    try:
        media = load_media(args.path, options)
    except (MediaError, ValueError) as err:
        if args.json:
            print(json.dumps({"error": str(err), "error_type": type(err).__name__}))
        else:
            print(f"error: {err}", file=sys.stderr)
        return 2
    info = summary(media)
    if args.json:
        print(json.dumps(info))
    else:
        _print_text(info)
    return 0
