"""Sample frames from a video: which frames (the original's formula) and how to decode them.

Decoder choice, measured (``bench/media_bench.py`` and ``shared/reference/dependencies.md``):
PyAV with a backward seek to the keyframe before each target, then decoding forward, costs
about the same per target whatever the video's length; decord and torchcodec (exact mode)
cost more on a first open because they scan the whole file, and the ffmpeg CLI is 5x slower.
PyAV also gives us rotation metadata and the audio track from the same library. The sound
is read through a second container on its own thread (``model/media.py``): it overlaps the
frames when a core is free and costs no extra CPU time when none is.
decord stays available as ``LoadOptions(backend="decord")``; the default backend's frames
are byte for byte decord's (``FrameScaler``), so it is only needed to check that.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from model.media.common import Background, Deadline, LoadOptions, place, rotate, scaled_size
from model.media.errors import CorruptMedia

MAX_BAD_PACKETS = 50  # undecodable packets tolerated (damaged files) before giving up
# A second decoder pays when its part needs at least this many pixels decoded: 25 frames of
# 720p, about 9 ms here, against ~3 ms to open a container and start a thread.
MIN_PART_PIXELS = 25 * 1280 * 720


@dataclass
class VideoInfo:
    """What the container says about a video stream, before decoding."""

    width: int
    height: int
    fps: float
    duration: float | None  # seconds; None when the container does not say (browser webm)
    num_frames: int  # 0 when unknown
    sample_aspect: float = 1.0  # pixel width / height (anamorphic video)
    # The demuxer's index listed frames when the file was opened (MP4, AVI, Matroska cues). Not
    # MPEG-TS: its index only fills in as packets are read, so it never tells what lies ahead.
    indexed: bool = False


@dataclass
class SampledFrames:
    frames_uint8: np.ndarray  # (T, S, S, 3)
    indices: list[int]
    timestamps: list[float]  # seconds from the start of the video
    notes: list[str] = field(default_factory=list)
    rotation: int = 0  # counter-clockwise degrees applied for display


def video_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    num_frames = stream.frames
    entries = len(stream.index_entries)  # before any read below adds to it
    if num_frames > 0 and entries and entries != num_frames:
        indexed = _count_indexed(stream)
        if abs(indexed - num_frames) <= 2:
            num_frames = indexed  # AVI headers may count a dropped frame that the index does not list
    if num_frames <= 0 and fps > 0:
        last = _last_packet_time(container, stream)  # Matroska/WebM do not store a frame count
        if last is not None:
            num_frames, duration = round(last * fps) + 1, last + 1 / fps
        elif duration is not None:
            num_frames = max(1, round(duration * fps))
    if fps <= 0 and duration and num_frames > 0:
        fps = num_frames / duration
    sar = stream.sample_aspect_ratio
    return VideoInfo(width=ctx.width, height=ctx.height, fps=fps or 25.0, duration=duration,
                     num_frames=num_frames, sample_aspect=float(sar) if sar else 1.0, indexed=entries > 0)


def _last_packet_time(container, stream) -> float | None:
    """Time of the last video packet, found by reading packets (not decoding) after a seek near the end.

    If a seek to the end finds nothing (FLV without an index), try 10 s before it, then the start.
    """
    if container.duration is None or stream.time_base is None:
        return None
    start = stream.start_time or 0
    end = start + int(container.duration / av.time_base / stream.time_base)
    for offset in (end, end - int(10 / stream.time_base), 0):
        try:
            container.seek(max(offset, 0), stream=stream, backward=True)
            last = max((p.pts for p in container.demux(stream) if p.pts is not None), default=None)
        except av.error.FFmpegError:
            continue
        if last is not None:
            return float((last - start) * stream.time_base)
    return None


def sample_indices(num_total: int, fps: float, options: LoadOptions) -> list[int]:
    """Frame indices to sample.

    By count (default), as the original: ``arange(0, n, n / T)`` cast to int, T clamped to n.
    By ``options.fps``: one frame every ``1 / fps`` seconds from the start, at most
    ``options.num_frames`` of them.

    With a window (``options.start``/``end``, seconds), frames come from it only, as MVBench's
    ``get_index`` picks them: the window's frames ``round(start * fps)`` to ``round(end * fps)``
    (clamped to the video), cut into T equal segments, the middle frame of each; with
    ``options.fps``, one frame every ``1 / fps`` seconds from the window's first frame.
    """
    if num_total <= 0:
        return [0]
    if options.start is not None:
        return _window_indices(num_total, fps, options)
    if options.fps is None:
        count = min(options.num_frames, num_total)
        idx = np.arange(0, num_total, num_total / count).astype(int)[:count]
    else:
        step = max(fps / options.fps, 1.0)
        idx = np.arange(0, num_total, step).astype(int)[: options.num_frames]
    return [int(i) for i in idx]


def window_note(num_total: int, fps: float, options: LoadOptions) -> str | None:
    """What the user should know when ``options``' time window is not all inside the video
    (sample_indices clamps it, as MVBench's ``get_index`` does, so the frames alone do not say)."""
    if options.start is None or num_total <= 0 or fps <= 0:
        return None
    last = num_total - 1
    length = num_total / fps
    window = f"the time window {options.start:g}-{options.end:g} s"
    if round(options.start * fps) > last:
        return f"{window} starts after the video ends ({length:.2f} s): every sampled frame is its last frame"
    if round(options.end * fps) > last:
        return f"{window} runs past the video's end ({length:.2f} s): frames come from {options.start:g}-{length:.2f} s"
    return None


def sample_spacing(num_total: int, fps: float, options: LoadOptions) -> float:
    """Frames between consecutive samples, as ``sample_indices`` spaces them (the scale of
    ``options.keyframe_snap``)."""
    if options.fps is not None:
        return max(fps / options.fps, 1.0)
    if options.start is not None and num_total > 0:
        first, end = _window_bounds(num_total, fps, options)
        return (end - first) / options.num_frames
    return num_total / max(min(options.num_frames, num_total), 1)


def _window_bounds(num_total: int, fps: float, options: LoadOptions) -> tuple[int, int]:
    """First and last frame of the time window, clamped to the video (see ``window_note``)."""
    last = num_total - 1
    first = min(max(0, round(options.start * fps)), last)  # a window past the end keeps the last frame
    return first, min(max(first, round(options.end * fps)), last)


def _window_indices(num_total: int, fps: float, options: LoadOptions) -> list[int]:
    first, end = _window_bounds(num_total, fps, options)
    if options.fps is not None:
        step = max(fps / options.fps, 1.0)
        idx = np.arange(first, end + 1, step).astype(int)[: options.num_frames]
    else:
        segment = (end - first) / options.num_frames
        idx = np.array([int(first + segment / 2 + np.round(segment * k)) for k in range(options.num_frames)])
    return [int(i) for i in np.minimum(idx, end)]


def _packets_frames(container, stream, deadline: Deadline, skip_before_pts: list):
    """Decode frames of ``stream`` from the current position, skipping bad packets.

    While a packet's pts is below ``skip_before_pts[0]`` the decoder is told to drop
    non-reference frames: nothing needs them to decode the target, so it is free speed.
    """
    ctx = stream.codec_context
    bad = 0
    for packet in container.demux(stream):
        deadline.check("decoding the video")
        skip = packet.pts is not None and skip_before_pts[0] is not None and packet.pts < skip_before_pts[0]
        ctx.skip_frame = "NONREF" if skip else "DEFAULT"
        try:
            frames = packet.decode()
        except (av.error.InvalidDataError, av.error.UndefinedError, av.error.BugError):
            bad += 1
            if bad > MAX_BAD_PACKETS:
                raise CorruptMedia("the video is damaged: too many frames cannot be decoded; "
                                   "re-export or re-encode it") from None
            continue
        yield from frames


def _count_indexed(stream) -> int:
    """Entries of the demuxer's index that hold a frame (not empty, not discarded).

    A walk in Python (~4 ms for a 10-minute video's 15,000 entries), so only done when the
    index and the header disagree on the frame count.
    """
    return sum(1 for entry in stream.index_entries if entry.size > 0 and not entry.is_discard)


def keyframes_near(stream, targets: list[int]) -> list[int]:
    """Sorted keyframe timestamps around ``targets`` (pts): for each target, the last keyframe
    at or before it and the first one after it; empty when the file has no index.

    That is all the decoder asks of keyframes (which one precedes a target, which is nearest),
    and a binary search in the demuxer's index finds each without walking all of it.
    """
    entries = stream.index_entries
    found = set()
    for target in targets:
        for backward in (True, False):
            i = entries.search_timestamp(target, backward=backward)
            if i >= 0:
                found.add(entries[i].timestamp)
    return sorted(found)


def decode_frames_pyav(container, stream, info: VideoInfo, indices: list[int], options: LoadOptions,
                       deadline: Deadline, source: str | None = None) -> SampledFrames:
    """Decode the frames shown at ``index / fps`` for each index, seeking only when it pays.

    With ``source`` (the path ``container`` reads) and ``options.frame_workers`` > 1, targets
    in different keyframe intervals are shared among decoders of their own (``split_targets``).
    """
    tb = stream.time_base or Fraction(1, 90000)
    start = stream.start_time or 0
    fps = info.fps
    targets = [start + int(round(Fraction(i) / Fraction(fps).limit_denominator(100000) / tb)) for i in indices]
    tolerance = int(0.5 / fps / tb)  # half a frame: pts rounding and timestamps that jitter
    notes = []
    keyframes = keyframes_near(stream, targets) if info.indexed else []
    if options.keyframe_snap > 0 and keyframes and len(targets) > 1:
        spacing = sample_spacing(info.num_frames, fps, options)  # inside a time window, the window's
        bound = int(options.keyframe_snap * spacing / fps / tb)  # pts
        snapped = snap_to_keyframes(targets, keyframes, bound)
        if snapped != targets:
            notes.append(f"frames moved to the nearest keyframe (keyframe_snap={options.keyframe_snap:g})")
        targets = snapped
    parts = [targets]
    if source is not None and options.frame_workers > 1 and keyframes:
        min_cost = int(MIN_PART_PIXELS / max(info.width * info.height, 1) / fps / tb)  # in pts
        parts = split_targets(targets, keyframes, options.frame_workers, min_cost, tolerance)
    # Helpers first: they open their containers while this thread decodes the first part.
    helpers = [Background(lambda part=part: _decode_part(source, stream.index, info, part, keyframes, tolerance,
                                                          options, deadline), "media-frames") for part in parts[1:]]
    results = [_decode_targets(container, stream, info, parts[0], keyframes, tolerance, options, deadline)]
    results += [helper.result() for helper in helpers]
    images = [image for part_images, _, _ in results for image in part_images]
    pts = [p for _, part_pts, _ in results for p in part_pts]
    short = sum(1 for target, p in zip(targets, pts, strict=True) if p < target - tolerance)
    if short:  # the decoder ran out before these targets: past the end of a truncated or damaged file
        notes.append(f"{short} of the {len(targets)} sampled frames lie past the last frame that could be "
                     "decoded (the file is truncated or damaged); they repeat that frame")
    times = [round(float((p - start) * tb), 3) for p in pts]
    actual = [max(0, int(round(t * fps))) for t in times]
    return SampledFrames(frames_uint8=np.stack(images), indices=actual, timestamps=times, notes=notes,
                         rotation=results[-1][2])


def snap_to_keyframes(targets: list[int], keyframes: list[int], bound: int) -> list[int]:
    """Each target moved to the nearest keyframe at most ``bound`` away (the earlier on a tie), else kept."""
    keys = np.asarray(keyframes)
    out = []
    for target in targets:
        pos = int(np.searchsorted(keys, target, side="right"))  # keys[pos - 1] <= target < keys[pos]
        near = [int(k) for k in keys[max(pos - 1, 0) : pos + 1]]
        best = min(near, key=lambda k: (abs(k - target), k), default=target)
        out.append(best if abs(best - target) <= bound else target)
    return out


def split_targets(targets: list[int], keyframes: list[int], workers: int, min_cost: int,
                  tolerance: int = 0) -> list[list[int]]:
    """Cut ``targets`` (in order) into at most ``workers`` runs of about equal decoding cost.

    A decoder reads forward from the keyframe before a target, so targets with no keyframe
    between them form a group that one decoder reads in one pass; cuts fall between groups
    only. A group costs the distance from its keyframe to its last target (pts units). Every
    run must cost at least ``min_cost``: a second container and thread cost a few ms.
    Targets within ``tolerance`` of each other (one frame) stay together, as one decoder
    returns the frame it already has for them.
    """
    groups: list[list[int]] = []
    costs: list[int] = []
    for target in targets:
        key = _last_at_or_before(keyframes, target)
        key = target if key is None else key
        previous = groups[-1][-1] if groups else None
        if previous is not None and (abs(target - previous) <= tolerance or (previous < target and key <= previous)):
            groups[-1].append(target)  # the same frame, or no keyframe since: one decoder reads on
            costs[-1] += target - groups[-1][-2]
        else:
            groups.append([target])
            costs.append(target - key)
    for count in range(min(workers, len(groups)), 1, -1):
        cuts = _balanced_cuts(costs, count)
        spans = list(zip([0, *cuts], [*cuts, len(groups)], strict=True))
        if min(sum(costs[a:b]) for a, b in spans) >= min_cost:
            return [[t for group in groups[a:b] for t in group] for a, b in spans]
    return [targets]


def _balanced_cuts(costs: list[int], count: int) -> list[int]:
    """Group positions cutting ``costs`` into ``count`` contiguous runs with the smallest maximum run.

    Dynamic programme over (runs, groups); the lists hold at most 32 groups.
    """
    n = len(costs)
    prefix = [0, *itertools.accumulate(costs)]
    best = {(1, j): (prefix[j], 0) for j in range(1, n + 1)}  # (runs, first j groups) -> (max run, last cut)
    for k in range(2, count + 1):
        for j in range(k, n + 1):
            best[(k, j)] = min((max(best[(k - 1, i)][0], prefix[j] - prefix[i]), i) for i in range(k - 1, j))
    cuts, j = [], n
    for k in range(count, 1, -1):
        j = best[(k, j)][1]
        cuts.append(j)
    return cuts[::-1]


def _decode_part(source: str, index: int, info: VideoInfo, targets: list[int], keyframes: list[int],
                 tolerance: int, options: LoadOptions, deadline: Deadline):
    """``_decode_targets`` through a container of its own (one container is not thread-safe)."""
    with av.open(source, metadata_errors="ignore") as container:
        for other in container.streams:
            if other.index != index:  # the demuxer skips their packets instead of reading them
                other.discard = type(other.discard).all
        return _decode_targets(container, container.streams[index], info, targets, keyframes, tolerance, options,
                               deadline)


def _decode_targets(container, stream, info: VideoInfo, targets: list[int], keyframes: list[int], tolerance: int,
                    options: LoadOptions, deadline: Deadline) -> tuple[list[np.ndarray], list[int], int]:
    """(images, pts, rotation) of the frames at ``targets`` (pts), read from one container;
    ``keyframes`` holds at least the last keyframe at or before each target (``keyframes_near``)."""
    tb = stream.time_base or Fraction(1, 90000)
    start = stream.start_time or 0
    if options.decode_threads != 1:
        # Frame threads decode forward on several cores; settable before the first decode only.
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = options.decode_threads
    far = int(2.0 / tb)  # without an index, a seek pays off when the target is 2 s ahead

    scaler = FrameScaler()  # one filter graph for all frames of a size: building one costs ~1 ms
    images: list[np.ndarray] = []  # converted at once: holding 8K frames would cost 50 MB each
    pts: list[int] = []
    rotation = 0
    skip_before: list = [None]
    frames_iter = None
    last = None  # last decoded frame
    for target in targets:
        if pts and abs(pts[-1] - target) <= tolerance:
            images.append(images[-1])  # several indices map to one frame (very short videos)
            pts.append(pts[-1])
            continue
        skip_before[0] = target - 2 * tolerance
        if _should_seek(last, target, keyframes, far):
            frames_iter = _seek(container, stream, target, start, tolerance, deadline, skip_before)
            last = None
        elif frames_iter is None:
            frames_iter = _packets_frames(container, stream, deadline, skip_before)
        found = None
        for frame in frames_iter:
            if frame.pts is None:
                continue
            last = frame
            if frame.pts >= target - tolerance:
                found = frame
                break
        if found is None and last is None:
            raise CorruptMedia("no frame of the video could be decoded; the file may be truncated or "
                               "damaged: re-export or re-encode it")
        chosen = found if found is not None else last  # past the end: the last frame
        rotation = int(round(chosen.rotation or 0)) % 360
        images.append(_to_rgb(chosen, scaler, info.sample_aspect, options))
        pts.append(chosen.pts)
    return images, pts, rotation


def _seek(container, stream, target: int, start: int, tolerance: int, deadline: Deadline, skip_before: list):
    """Seek to the keyframe before ``target`` and return an iterator of frames from there.

    Formats without an index (MPEG-TS, for one) may land after the target; then seek again
    further back, doubling the distance, down to the start of the file.
    """
    back = 0
    while True:
        goal = target - back
        try:
            container.seek(goal if goal > start else 0, stream=stream, backward=True)
        except av.error.FFmpegError:
            return _packets_frames(container, stream, deadline, skip_before)  # keep going forward
        frames = _packets_frames(container, stream, deadline, skip_before)
        first = next((f for f in frames if f.pts is not None), None)
        if first is None or first.pts <= target + tolerance or goal <= start:
            return itertools.chain([first] if first is not None else [], frames)
        back = max(2 * back, int(1.0 / stream.time_base))


def _should_seek(last, target: int, keyframes: list[int], far: int) -> bool:
    if last is None:
        return True
    if target <= last.pts:
        return True  # going back (variable frame rate or a bad index)
    if keyframes:
        key = _last_at_or_before(keyframes, target)
        return key is not None and key > last.pts  # a keyframe between us and the target
    return target - last.pts > far


def _last_at_or_before(sorted_values: list[int], value: int) -> int | None:
    pos = int(np.searchsorted(np.asarray(sorted_values), value, side="right")) - 1
    return sorted_values[pos] if pos >= 0 else None


class FrameScaler:
    """Scale decoded frames to rgb24 of a given size, exactly as the original's reader did.

    The original reads ``decord.VideoReader(path, width=224, height=224)``: decord runs
    libavfilter's ``scale=224:224`` (whose default flags in decord's FFmpeg 4.1 are bilinear)
    into rgb24. The same filter here gives the same bytes (``tests/test_media_fidelity.py``);
    PyAV's ``VideoReformatter`` with bilinear flags does not (up to 39 levels apart on a 640x360
    clip): the filter also sets libswscale's chroma sample position, range and matrix from each
    frame. One graph serves every frame of one size and pixel format; it runs on one thread,
    as the decoder does (``LoadOptions.decode_threads``).
    """

    def __init__(self):
        self._graph: av.filter.Graph | None = None
        self._key: tuple | None = None

    def __call__(self, frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
        key = (frame.width, frame.height, frame.format.name, width, height)
        if key != self._key:
            self._graph, self._key = _scale_graph(frame, width, height), key
        self._graph.vpush(frame)
        return self._graph.vpull().to_ndarray()  # (height, width, 3) uint8


def _scale_graph(frame: av.VideoFrame, width: int, height: int) -> av.filter.Graph:
    graph = av.filter.Graph()
    graph.threads = 1
    source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                              time_base=frame.time_base or Fraction(1, 90000))
    scale = graph.add("scale", f"{width}:{height}:flags=bilinear")
    rgb = graph.add("format", "rgb24")
    sink = graph.add("buffersink")
    source.link_to(scale)
    scale.link_to(rgb)
    rgb.link_to(sink)
    graph.configure()
    return graph


def _to_rgb(frame: av.VideoFrame, scaler: FrameScaler, sample_aspect: float,
            options: LoadOptions) -> np.ndarray:
    """Scale in libswscale straight to the target size (bilinear, as decord), then rotate and pad or crop."""
    ccw = int(round(frame.rotation or 0)) % 360  # display matrix: counter-clockwise degrees
    w, h = frame.width, frame.height
    display_w = w * sample_aspect
    if ccw in (90, 270):
        sw, sh = scaled_size(h, round(display_w), options.image_size, options.resize)
        sw, sh = sh, sw  # scale in stored orientation, rotate afterwards
    else:
        sw, sh = scaled_size(round(display_w), h, options.image_size, options.resize)
    rgb = scaler(frame, sw, sh)
    rgb = rotate(rgb, -ccw)
    return place(rgb, options.image_size, options.resize)


def decode_frames_decord(path: str, options: LoadOptions) -> tuple[SampledFrames, VideoInfo]:
    """The original's way: decord resizes while decoding, then ``get_batch``. No rotation."""
    import decord

    size = options.image_size
    kwargs = {"width": size, "height": size} if options.resize == "squash" else {}
    reader = decord.VideoReader(path, num_threads=1, **kwargs)
    fps = float(reader.get_avg_fps()) or 25.0
    info = VideoInfo(width=size, height=size, fps=fps, duration=len(reader) / fps, num_frames=len(reader))
    indices = sample_indices(len(reader), fps, options)
    batch = reader.get_batch(indices).asnumpy()  # (T, H, W, 3)
    if options.resize != "squash":
        batch = np.stack([_resize_numpy(img, options) for img in batch])
    times = [round(i / fps, 3) for i in indices]
    notes = ["decord backend: rotation metadata is not applied"]
    window = window_note(len(reader), fps, options)
    notes += [window] if window else []
    return SampledFrames(frames_uint8=batch, indices=indices, timestamps=times, notes=notes), info


def _resize_numpy(img: np.ndarray, options: LoadOptions) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    sw, sh = scaled_size(w, h, options.image_size, options.resize)
    scaled = np.asarray(Image.fromarray(img).resize((sw, sh), Image.Resampling.BICUBIC))
    return place(scaled, options.image_size, options.resize)
