"""Turn an uploaded file into what the encoders need: frames, fbank clips, and facts about them.

``load_media(path, LoadOptions())`` decides what the file is (video, image or audio) from
its content, not its name, checks the configured limits, decodes under a time limit and
returns a ``MediaInput``. Threads share the work: frames (the worker, which the time limit
watches, plus a second decoder for far-apart targets) and the sound track (its own
container). The cache key hashes the decoded input, not the file. Every failure
is a ``MediaError`` whose message says what is wrong and what to do. Decoding details live
in ``video``, ``audio`` and ``image`` beside it; ``model.media`` re-exports this module's
public names, and is what other code imports.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch

from model.media.audio import AudioClips, load_clips
from model.media.common import Background, Deadline, LoadOptions, normalise
from model.media.errors import CorruptMedia, DecodeTimeout, MediaError, MediaTooLarge, UnsupportedMedia
from model.media.image import load_image, probe_image
from model.media.video import decode_frames_decord, decode_frames_pyav, sample_indices, video_info, window_note

NO_SOUND_NOTE = "this video has no sound"
_ANIMATED_IMAGE_FORMATS = ("GIF",)  # FFmpeg decodes these as video; animated WebP it cannot


@dataclass
class MediaInput:
    """What the model receives from one file. Shapes use T frames, S clips, S px squares."""

    kind: str  # "video", "image" or "audio"
    path: str
    sha256: str  # of what the encoders receive (sampled frames, fbank clips): the features' cache key
    frames: torch.Tensor | None = None  # (T, 3, S, S) float32, CLIP-normalised
    frames_uint8: np.ndarray | None = None  # (T, S, S, 3) for display
    frame_indices: list[int] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)  # seconds
    frame_message: str = ""  # the original's "The video contains ..." sentence (videos only)
    audio: torch.Tensor | None = None  # (S, 1, mel_bins, frames) normalised fbank (128 x 204 by default)
    audio_waveforms: torch.Tensor | None = None  # (S, samples) 16 kHz mono
    clip_starts: list[float] = field(default_factory=list)  # seconds
    has_audio: bool = False  # False when there is no sound track (or audio was not asked for)
    audio_silent: bool = False  # a sound track that carries only silence
    notes: list[str] = field(default_factory=list)  # user-facing remarks
    duration: float = 0.0  # seconds (0 for images)
    fps: float = 0.0
    width: int = 0  # of the original picture, as displayed
    height: int = 0
    decode_seconds: float = 0.0


def frame_message(timestamps: list[float]) -> str:
    """The original's sentence, exactly (times to 0.1 s, and its trailing space)."""
    times = ", ".join(str(round(t, 1)) for t in timestamps)
    return f"The video contains {len(timestamps)} frames sampled at {times} seconds. "


def load_media(path: str | os.PathLike, options: LoadOptions | None = None) -> MediaInput:
    """Load a video, image or audio file; raise a ``MediaError`` subclass if that is not possible."""
    options = options or LoadOptions()
    options.validate()
    path = str(path)
    _check_file(path, options)
    started = time.perf_counter()
    result = _run_with_timeout(lambda deadline: _decode(path, options, deadline), options.timeout_s)
    result.sha256 = content_sha256(result)
    result.decode_seconds = round(time.perf_counter() - started, 4)
    return result


# What a path is when it is not a regular file (``stat`` mode test, then words for the user).
_NOT_FILES = ((stat.S_ISDIR, "a folder, not a file; give one of the video, image or audio files in it"),
              (stat.S_ISFIFO, "a named pipe (FIFO), not a file; save what it streams to a file and give that"),
              (stat.S_ISSOCK, "a socket, not a file; give a video, image or audio file"),
              (stat.S_ISCHR, "a character device, not a file; give a video, image or audio file"),
              (stat.S_ISBLK, "a block device, not a file; give a video, image or audio file"))


def check_path(path: str | os.PathLike) -> None:
    """Raise a ``MediaError`` saying what ``path`` is unless it is a readable regular file.

    Only ``stat`` is used: opening a named pipe to look at it would wait for a writer.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MediaError(f"file not found: {os.fspath(path)}; check the path") from None
    except OSError as err:
        raise MediaError(f"{os.fspath(path)} cannot be read ({err.strerror}); check the path") from None
    for is_kind, words in _NOT_FILES:
        if is_kind(mode):
            raise UnsupportedMedia(f"{os.fspath(path)} is {words}")
    if not stat.S_ISREG(mode):
        raise UnsupportedMedia(f"{os.fspath(path)} is not a regular file; give a video, image or audio file")
    if not os.access(path, os.R_OK):
        raise MediaError(f"{os.fspath(path)} cannot be read (permission denied); make it readable")


def _check_file(path: str, options: LoadOptions) -> None:
    check_path(path)
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        raise CorruptMedia(f"{p.name} is empty (0 bytes); the upload or copy may have failed: try again")
    if size > options.max_bytes:
        raise MediaTooLarge(f"{p.name} is {size / 2**20:.0f} MiB, over the {options.max_bytes / 2**20:.0f} MiB "
                            "limit; trim or compress it, or raise LoadOptions.max_bytes")


def content_sha256(media: MediaInput) -> str:
    """Hash of the model's input: the sampled frames and the fbank clips, not the file.

    A few MB whatever the file's length (hashing a 10-minute upload's bytes costs more than
    seeking its frames), and a key that changes exactly when the encoders' input does: other
    frame counts or clip options give another key, a re-encoded copy with the same pictures
    and sound may share one.
    """
    h = hashlib.sha256(media.kind.encode())
    for array in (media.frames_uint8, None if media.audio is None else media.audio.numpy()):
        if array is not None:
            h.update(str((array.shape, array.dtype)).encode())
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _run_with_timeout(work, timeout_s: float) -> MediaInput:
    """Run ``work(deadline)`` on a worker thread; give up after ``timeout_s`` seconds.

    The decoding loops check the deadline between packets and stop themselves; the join
    timeout covers a call stuck inside FFmpeg, which a thread cannot interrupt (the caller
    gets its answer; the stuck thread is a daemon and ends with the process).
    """
    deadline = Deadline(timeout_s)
    worker = Background(lambda: work(deadline), "media-decode")
    try:
        return worker.result(timeout_s + 1.0)
    except TimeoutError:
        raise DecodeTimeout(f"decoding did not finish within {timeout_s:g} s; the file may be damaged or "
                            "unusually heavy: re-encode it, or raise LoadOptions.timeout_s") from None


def _decode(path: str, options: LoadOptions, deadline: Deadline) -> MediaInput:
    image = probe_image(path)
    if image is not None and not (image[0] in _ANIMATED_IMAGE_FORMATS and image[3] > 1):
        return _image_input(path, image, options)
    container = _open(path)
    video, audio = _pick_streams(container)
    if (video or audio) is not None and _needs_remux(container, video or audio):
        container.close()
        # The temporary folder only when needed: making and removing one costs ~3 ms here.
        with tempfile.TemporaryDirectory(prefix="media-") as tmp:
            source = _transcode(path, tmp, options, copy=True)
            return _decode_container(path, source, _open(source), options, deadline)
    return _decode_container(path, path, container, options, deadline)


def _decode_container(path: str, source: str, container, options: LoadOptions, deadline: Deadline) -> MediaInput:
    """Decode an open container of ``source``: the user's file at ``path`` or a remuxed copy of it."""
    try:
        video, audio = _pick_streams(container)
        _check_decodable(path, video, audio)
        if video is not None:
            return _video_input(path, source, container, video, audio, options, deadline)
        if audio is not None:
            return _audio_input(path, container, audio, options, deadline)
        raise UnsupportedMedia(f"{Path(path).name} has no video or audio stream; give a video, image "
                               "or audio file")
    except av.error.FFmpegError as err:
        raise CorruptMedia(f"{Path(path).name} could not be decoded ({err}); it may be damaged: "
                           "re-export or re-encode it") from err
    finally:
        container.close()


def _open(path: str):
    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as err:
        name = Path(path).name
        if _looks_like_text(path):
            raise UnsupportedMedia(f"{name} is a text file, not a video, image or audio file; "
                                   "upload the media file itself") from err
        if isinstance(err, av.error.InvalidDataError):
            raise CorruptMedia(f"{name} is not a readable video, image or audio file ({err.strerror}); "
                               "it may be truncated or damaged, or of an unsupported format: "
                               "try MP4 (H.264/AAC), WebM, MP3, WAV, JPEG or PNG") from err
        raise UnsupportedMedia(f"{name} cannot be opened ({err}); try MP4 (H.264/AAC), JPEG, PNG or WAV") from err


def _looks_like_text(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\r\n" for ch in text)


def _pick_streams(container):
    """First real video stream (cover art in music files does not count) and first audio stream."""
    videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    audios = list(container.streams.audio)
    return (videos[0] if videos else None), (audios[0] if audios else None)


def _needs_remux(container, stream) -> bool:
    """True when the file does not say how long it is (a browser's MediaRecorder webm)."""
    return stream.duration is None and container.duration is None


def _transcode(path: str, tmp: str, options: LoadOptions, copy: bool) -> str:
    """Rewrite the file with the ffmpeg CLI into ``tmp`` (never next to the input: it may be read-only).

    ``copy`` remuxes without re-encoding, which is enough to get a duration and a seek index.
    """
    import ffmpeg  # ffmpeg-python builds the command line; we run it with a timeout

    if shutil.which("ffmpeg") is None:
        raise UnsupportedMedia("this file needs the ffmpeg program to be read (it lacks a duration or index); "
                               "install ffmpeg, or re-export the file as MP4")
    out = os.path.join(tmp, "remuxed.mkv" if copy else "transcoded.mp4")
    codec = {"c": "copy"} if copy else {"c:v": "libx264", "preset": "ultrafast", "c:a": "aac"}
    args = ffmpeg.input(path).output(out, **codec).global_args("-nostdin", "-v", "error").compile()
    try:
        subprocess.run(args, check=True, capture_output=True, timeout=options.timeout_s)
    except subprocess.TimeoutExpired as err:
        raise DecodeTimeout(f"rewriting the file took longer than {options.timeout_s:g} s; "
                            "re-export it as MP4") from err
    except subprocess.CalledProcessError as err:
        if copy:
            return _transcode(path, tmp, options, copy=False)
        detail = err.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
        raise CorruptMedia(f"ffmpeg could not read the file ({detail[0]}); re-export it as MP4") from err
    return out


def _check_decodable(path: str, video, audio) -> None:
    """A stream whose codec FFmpeg does not know has no codec context."""
    name = Path(path).name
    if video is not None and video.codec_context is None:
        raise UnsupportedMedia(f"{name}: its video codec is not supported; convert it to H.264 MP4 "
                               "(for example `ffmpeg -i in -c:v libx264 -c:a aac out.mp4`)")
    if video is None and audio is not None and audio.codec_context is None:
        raise UnsupportedMedia(f"{name}: its audio codec is not supported; convert it to WAV, MP3 or AAC")


def _check_video_limits(name: str, stream, info, options: LoadOptions) -> None:
    if info.width * info.height > options.max_pixels:
        raise MediaTooLarge(f"{name} is {info.width}x{info.height}, more than the {options.max_pixels:,} pixel "
                            "limit per frame; scale it down or raise LoadOptions.max_pixels")
    if info.duration is not None and info.duration > options.max_duration_s:
        raise MediaTooLarge(f"{name} lasts {info.duration:.0f} s, over the {options.max_duration_s:.0f} s limit; "
                            "trim it or raise LoadOptions.max_duration_s")


def _video_input(path, source, container, stream, audio_stream, options, deadline) -> MediaInput:
    name = Path(path).name
    info = video_info(container, stream)
    _check_video_limits(name, stream, info, options)
    sound = None
    if audio_stream is not None and audio_stream.codec_context is not None and options.use_audio:
        # The sound track is decoded meanwhile, on a second thread with its own open of the file
        # (one container cannot be read from two threads; opening costs ~2 ms). The threads
        # share little (FFmpeg and torch release the GIL), so with a free core the sound is
        # free; on a busy machine this costs no more CPU time than decoding one after the other.
        sound = Background(lambda: _clips_in(source, audio_stream.index, options, deadline), "media-audio")
        audio_stream.discard = type(audio_stream.discard).all  # the frames' demuxer skips sound packets
    if options.backend == "decord":
        sampled, info = decode_frames_decord(path, options)
    else:
        indices = sample_indices(info.num_frames, info.fps, options)
        sampled = decode_frames_pyav(container, stream, info, indices, options, deadline, source)
        window = window_note(info.num_frames, info.fps, options)
        sampled.notes += [window] if window else []
    result = MediaInput(
        kind="video", path=path, sha256="", frames=normalise(sampled.frames_uint8),
        frames_uint8=sampled.frames_uint8, frame_indices=sampled.indices, timestamps=sampled.timestamps,
        frame_message=frame_message(sampled.timestamps), duration=round(info.duration or 0.0, 3),
        fps=round(info.fps, 3), width=info.width, height=info.height, notes=list(sampled.notes),
    )
    if sampled.rotation in (90, 270):  # report the size as displayed
        result.width, result.height = info.height, info.width
    if audio_stream is not None and audio_stream.codec_context is None:
        result.notes.append("the sound track's codec is not supported; using the pictures only")
    elif audio_stream is None:
        result.notes.append(NO_SOUND_NOTE)
    elif sound is not None:
        try:
            _attach_audio(result, sound.result())
        except CorruptMedia as err:
            result.notes.append(f"the sound track could not be read ({err}); using the pictures only")
    return result


def _clips_in(source: str, index: int, options: LoadOptions, deadline: Deadline) -> AudioClips:
    """Audio clips of stream ``index`` of ``source``, read through a container of their own."""
    try:
        with av.open(source, metadata_errors="ignore") as container:
            return load_clips(container, container.streams[index], options, deadline)
    except av.error.FFmpegError as err:
        raise CorruptMedia(str(err)) from err


def _audio_input(path, container, stream, options, deadline) -> MediaInput:
    duration = stream.duration * stream.time_base if stream.duration is not None else None
    if duration is None and container.duration is not None:
        duration = container.duration / av.time_base
    if duration is not None and duration > options.max_duration_s:
        raise MediaTooLarge(f"{Path(path).name} lasts {float(duration):.0f} s, over the "
                            f"{options.max_duration_s:.0f} s limit; trim it or raise LoadOptions.max_duration_s")
    clips = load_clips(container, stream, options, deadline)
    result = MediaInput(kind="audio", path=path, sha256="", duration=round(clips.duration, 3))
    _attach_audio(result, clips)
    return result


def _attach_audio(result: MediaInput, clips: AudioClips) -> None:
    result.audio = clips.fbank
    result.audio_waveforms = clips.waveforms
    result.clip_starts = clips.starts
    result.has_audio = True
    result.audio_silent = clips.silent
    result.notes.extend(clips.notes)


def _image_input(path: str, probe: tuple, options: LoadOptions) -> MediaInput:
    width, height = probe[1], probe[2]
    if width * height > options.max_pixels:  # before Pillow decodes (or refuses) it
        raise MediaTooLarge(f"{Path(path).name} is an image of {width}x{height} pixels, too large: the limit is "
                            f"{options.max_pixels:,} pixels (max_pixels); scale it down, or raise "
                            "LoadOptions.max_pixels")
    frames_uint8 = load_image(path, options)
    notes = ["only the first frame of this animated image is used"] if probe[3] > 1 else []
    return MediaInput(kind="image", path=path, sha256="", frames=normalise(frames_uint8), frames_uint8=frames_uint8,
                      frame_indices=[0], timestamps=[0.0], width=probe[1], height=probe[2], notes=notes)
