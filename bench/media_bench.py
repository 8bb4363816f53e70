"""Media loading speed and memory: our loader against the original Video-LLaMA approach.

    python -m bench.media_bench [--repeats 5] [--cache-dir DIR] [--skip-rss]

Generates (once, then cached) a 10-second and a 10-minute 1280x720 25 fps H.264 + AAC video
and a 10-minute 1920x1080 one, with ffmpeg's ``testsrc`` and x264 ``ultrafast`` (default
GOP: x264's 250 frames). Then, measured side by side in one run (interleaved, medians):

- ours: ``load_media(path)``: 8 frames + 8 audio fbank clips, as the model receives them;
  also with the frames on one decoder (``frame_workers=1``) to show what the second buys,
  and with the opt-in ``keyframe_snap`` (frames move to nearby keyframes: not exact);
- the original: decord ``VideoReader(path, width=224, height=224)`` + ``get_batch`` for the
  frames, ``torchaudio.load`` of the whole track, resample, cut into clips, fbank;
- frames only, for the choice of decoder: ours (PyAV), decord, torchcodec (approximate seek);
  and our sound track alone (``load_clips``), which shares the cores with the frames.

Wall-clock and CPU seconds (all threads) are both printed: on 2 cores the second decoder
and the sound track run beside the first decoder only when a core is free.

Peak resident memory on the 1080p file is measured in fresh subprocesses, split into what
the imports take (``import torch`` alone is about 0.5 GB with this CUDA build) and what
loading adds; the target is on the total, printed as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio

from model.media import LoadOptions, load_media
from model.media.audio import fbank_clip, load_clips
from model.media.common import Deadline, normalise

ROOT = Path(__file__).resolve().parents[1]

SNAP = 0.25  # the opt-in keyframe snap shown beside the default (exact frames)
VIDEOS = {  # name -> (size, seconds)
    "720p-10s": ("1280x720", 10),
    "720p-10min": ("1280x720", 600),
    "1080p-10min": ("1920x1080", 600),
}


def make_video(path: Path, size: str, seconds: int, gop: int | None) -> None:
    """testsrc + 440 Hz stereo AAC at 48 kHz, 25 fps, x264 ultrafast; written atomically."""
    tmp = path.with_suffix(".part.mp4")
    gop_args = ["-g", str(gop)] if gop else []
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration={seconds}",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *gop_args,
           "-c:a", "aac", "-ac", "2", str(tmp)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    tmp.rename(path)
    print(f"  generated {path.name} in {time.perf_counter() - started:.0f} s", flush=True)


def ensure_videos(cache: Path, gop: int | None, names: list[str]) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        size, seconds = VIDEOS[name]
        path = cache / f"{name}-gop{gop or 'default'}.mp4"
        if not path.exists():
            make_video(path, size, seconds, gop)
        paths[name] = path
    return paths


# -- the approaches -----------------------------------------------------------------
def ours(path: Path) -> None:
    m = load_media(path)
    assert m.frames.shape == (8, 3, 224, 224) and m.audio.shape == (8, 1, 128, 204)


def ours_one_decoder(path: Path) -> None:
    load_media(path, LoadOptions(frame_workers=1))


def ours_snap(path: Path) -> None:
    load_media(path, LoadOptions(keyframe_snap=SNAP))


def ours_frames(path: Path) -> None:
    load_media(path, LoadOptions(use_audio=False))


def ours_audio(path: Path) -> None:
    """The sound track alone (it runs beside the frames in ``ours``): where a long video's extra time goes."""
    with av.open(str(path)) as container:
        clips = load_clips(container, container.streams.audio[0], LoadOptions(), Deadline(60))
    assert clips.fbank.shape == (8, 1, 128, 204)


def original(path: Path) -> None:
    """The original's inference path (Chat.upload_video + ImageBind's audio loader), re-typed."""
    frames = decord_frames(path)
    waveform, rate = torchaudio.load(str(path))
    waveform = torchaudio.functional.resample(waveform, orig_freq=rate, new_freq=16000)
    duration = waveform.shape[1] / 16000
    starts = [Fraction(max(duration - 2, 0)) / 8 * i for i in range(8)]
    clips = [waveform[:, int(s * 16000) : int((s + 2) * 16000)] for s in starts]  # every channel
    fbank = torch.stack([fbank_clip(c) for c in clips])  # the clip's mean removed, then channel 0's fbank
    assert frames.shape == (8, 3, 224, 224) and fbank.shape == (8, 1, 128, 204)


def decord_frames(path: Path) -> torch.Tensor:
    import decord

    reader = decord.VideoReader(str(path), width=224, height=224)
    n = len(reader)
    indices = np.arange(0, n, n / 8).astype(int)
    return normalise(reader.get_batch(indices).asnumpy())


def torchcodec_frames(path: Path) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), seek_mode="approximate")
    n = decoder.metadata.num_frames
    batch = decoder.get_frames_at(np.arange(0, n, n / 8).astype(int).tolist()).data  # (8, 3, H, W)
    small = torch.nn.functional.interpolate(batch.float(), size=(224, 224), mode="bicubic", antialias=True)
    return small.clamp(0, 255).round().to(torch.uint8)


APPROACHES = {"ours": ours, "original": original, "ours-1-decoder": ours_one_decoder,
              "ours-snap": ours_snap, "ours-frames": ours_frames, "ours-audio": ours_audio,
              "decord-frames": lambda p: decord_frames(p), "torchcodec-frames": torchcodec_frames}


def time_all(paths: dict[str, Path], repeats: int) -> tuple[dict, dict]:
    """Interleave every (approach, file) pair in each round so load changes hit all alike.

    Returns wall-clock seconds and CPU seconds (all threads of this process) per call.
    """
    cases = [(a, f) for f in ("720p-10s", "720p-10min") for a in APPROACHES]
    for approach, name in cases:  # warm-up: imports, page cache, first-call costs
        APPROACHES[approach](paths[name])
    times: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    cpu: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    for round_ in range(repeats):
        # Rotate the order each round: the first call after a switch of file runs slower.
        for approach, name in cases[round_ % len(cases):] + cases[: round_ % len(cases)]:
            started, cpu_started = time.perf_counter(), time.process_time()
            APPROACHES[approach](paths[name])
            times[(approach, name)].append(time.perf_counter() - started)
            cpu[(approach, name)].append(time.process_time() - cpu_started)
    return times, cpu


# -- memory -------------------------------------------------------------------------
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) parent process.
# Resident memory (RSS) counts shared library pages in full; PSS shares them out among the
# processes mapping them and USS (private) leaves them out: both said after loading.
_RSS_SCRIPT = """
import json, re, sys
def hwm_mb():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024
def rollup_mb():
    d = {}
    for line in open("/proc/self/smaps_rollup"):
        m = re.match(r"(\\w+):\\s+(\\d+) kB", line)
        if m:
            d[m.group(1)] = int(m.group(2)) / 1024
    return {"pss_mb": d["Pss"], "uss_mb": d["Private_Clean"] + d["Private_Dirty"]}
if sys.argv[1] == "torch-only":
    import torch
    print(json.dumps({"baseline_mb": hwm_mb(), "peak_mb": hwm_mb(), **rollup_mb()}))
    sys.exit()
import bench.media_bench as b  # torch, torchaudio, PyAV, model.media; decord/torchcodec load when used
baseline = hwm_mb()
if sys.argv[1] != "imports-only":
    b.APPROACHES[sys.argv[1]](sys.argv[2])
print(json.dumps({"baseline_mb": baseline, "peak_mb": hwm_mb(), **rollup_mb()}))
"""
MEMORY_CASES = ("torch-only", "imports-only", "ours", "ours-1-decoder", "original")


def peak_rss(approach: str, path: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    # Run from the repository root: `python -c` puts the working folder on sys.path.
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, approach, str(path)],
                         capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report -------------------------------------------------------------------------
def frames_to_decode(path: Path) -> int:
    """Frames an exact decoder must decode for the 8 targets: from the keyframe before each
    target (or from the previous target, when no keyframe lies between) up to the target."""
    import av

    from model.media.video import sample_indices, video_info

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = video_info(container, stream)
        keys = sorted(round(float(e.timestamp * stream.time_base) * info.fps)  # frame numbers
                      for e in stream.index_entries if e.is_keyframe)
    total, last = 0, None
    for target in sample_indices(info.num_frames, info.fps, LoadOptions()):
        key = max(k for k in keys if k <= target)
        total += target - last if last is not None and key <= last else target - key + 1
        last = target
    return total


def _verdict(value: float, target: float, below: bool = True) -> str:
    return "meets" if (value <= target if below else value < target) else "MISSES"


def report(times: dict, cpu: dict, rss: dict | None, decoded: dict[str, int], load: list[tuple]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    print("\nmedian seconds (each call opens the file and returns model-ready tensors)")
    print(f"  {'approach':<18} {'720p-10s':>10} {'720p-10min':>11}   all runs (10 s | 10 min)")
    for approach in APPROACHES:
        a, b = med[(approach, "720p-10s")], med[(approach, "720p-10min")]
        runs = " ".join(f"{t:.3f}" for t in times[(approach, "720p-10s")])
        runs_long = " ".join(f"{t:.3f}" for t in times[(approach, "720p-10min")])
        print(f"  {approach:<18} {a:>10.3f} {b:>11.3f}   {runs} | {runs_long}")
    r_len = med[("ours", "720p-10min")] / med[("ours", "720p-10s")]
    r_one = med[("ours-1-decoder", "720p-10min")] / med[("ours-1-decoder", "720p-10s")]
    r_long = med[("ours", "720p-10min")] / med[("original", "720p-10min")]
    r_short = med[("ours", "720p-10s")] / med[("original", "720p-10s")]
    r_snap = med[("ours-snap", "720p-10min")] / med[("ours-snap", "720p-10s")]
    r_cpu = cpu_med[("ours", "720p-10min")] / cpu_med[("ours", "720p-10s")]
    print("\nratios of medians")
    print(f"  ours 10 min / ours 10 s          {r_len:6.2f}   target <= 1.5  {_verdict(r_len, 1.5)}")
    print(f"  ours / original, 10 min          {r_long:6.2f}   target <= 0.5  {_verdict(r_long, 0.5)}")
    print(f"  ours / original, 10 s            {r_short:6.2f}   target <= 1.0  {_verdict(r_short, 1.0)}")
    print(f"  same, frames on one decoder      {r_one:6.2f}   (LoadOptions(frame_workers=1), for comparison)")
    print(f"  opt-in keyframe_snap={SNAP:g}        {r_snap:6.2f}   (not the default: frames move to a keyframe "
          "up to a quarter of the spacing away)")
    print(f"  ours CPU seconds 10 min / 10 s   {r_cpu:6.2f}   (all threads: the ratio when no second core is free; "
          f"{cpu_med[('ours', '720p-10s')]:.3f} s vs {cpu_med[('ours', '720p-10min')]:.3f} s)")
    short, long = decoded["720p-10s"], decoded["720p-10min"]
    print(f"  frames decoded for exact frames: 10 s {short}, 10 min {long} ({long / short:.2f}x: "
          "each target costs the frames since its keyframe)")
    print("  load average (1 min) before / after timing: " + " / ".join(f"{x[0]:.2f}" for x in load)
          + f" on {os.cpu_count()} cores")
    if rss:
        _report_memory(rss)


def _report_memory(rss: dict) -> None:
    torch_only = rss["torch-only"]
    print("\npeak resident memory, 1080p 10-minute file (a fresh process each; VmHWM)")
    print(f"  `import torch` alone: {torch_only['peak_mb']:.0f} MB resident (PSS {torch_only['pss_mb']:.0f} MB, "
          f"private {torch_only['uss_mb']:.0f} MB: the rest is library pages shared with other processes)")
    print(f"  interpreter baseline after imports (torch, torchaudio, PyAV, model.media): "
          f"{rss['imports-only']['peak_mb']:.0f} MB")
    for approach in ("ours", "ours-1-decoder", "original"):
        r = rss[approach]
        base, peak = r["baseline_mb"], r["peak_mb"]
        print(f"  {approach:<15} total peak {peak:5.0f} MB = baseline {base:4.0f} + loader {peak - base:5.0f} MB   "
              f"target total < 500 MB: {_verdict(peak, 500, False)}   (after loading: PSS {r['pss_mb']:.0f}, "
              f"private {r['uss_mb']:.0f} MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "videollama-media-bench")
    parser.add_argument("--gop", type=int, default=None, help="x264 keyframe interval (default: x264's 250)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: shared CPU)")
    parser.add_argument("--skip-rss", action="store_true", help="skip the 1080p memory measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = ["720p-10s", "720p-10min"] + ([] if args.skip_rss else ["1080p-10min"])
    print(f"videos in {args.cache_dir} (generated on first use; x264 ultrafast, 25 fps, "
          f"GOP {args.gop or 'x264 default 250'})", flush=True)
    paths = ensure_videos(args.cache_dir, args.gop, names)
    print(f"timing {len(APPROACHES)} approaches x 2 files x {args.repeats} rounds, torch threads {args.threads}",
          flush=True)
    load = [os.getloadavg()]
    times, cpu = time_all(paths, args.repeats)
    load.append(os.getloadavg())
    rss = None
    if not args.skip_rss:
        rss = {a: peak_rss(a, paths["1080p-10min"], args.threads) for a in MEMORY_CASES}
    report(times, cpu, rss, {name: frames_to_decode(paths[name]) for name in ("720p-10s", "720p-10min")}, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
