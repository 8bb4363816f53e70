"""Cost of scaling one decoded frame to 224x224 rgb24: the loader's scaler against the one it replaced.

    python -m bench.frame_scale_bench [--repeats 5] [--frames 50]

``FrameScaler`` (libavfilter ``scale`` with bilinear flags: decord's bytes) against PyAV's
``VideoReformatter`` with bicubic interpolation (the loader's scaler before, which did not
give decord's bytes), and against decord itself for the bytes. Frames are decoded once
(ffmpeg ``testsrc2``, x264) and then scaled ``--frames`` at a time; the time is CPU seconds of
this process (``time.process_time``: on a shared machine it does not count waiting for a
core), the median of ``--repeats`` rounds, per frame.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import av
import decord
import numpy as np
from av.video.reformatter import VideoReformatter

from model.media.video import FrameScaler

SIZES = ("640x360", "1280x720", "1920x1080")


def make_clip(path: Path, size: str, frames: int) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=s={size}:r=25:d={frames / 25}", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(path)], check=True)


def cpu_per_frame(scale, frames, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        for frame in frames:
            scale(frame)
        runs.append((time.process_time() - start) / len(frames))
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=50)
    args = parser.parse_args(argv)
    print(f"CPU ms per frame scaled to 224x224 rgb24 (median of {args.repeats} rounds of {args.frames} frames)")
    print(f"  {'source':<10} {'FrameScaler (now)':>18} {'reformatter bicubic (before)':>29}  equal to decord")
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            path = Path(tmp) / f"{size}.mp4"
            make_clip(path, size, args.frames)
            with av.open(str(path)) as container:
                frames = list(container.decode(video=0))
            scaler, reformatter = FrameScaler(), VideoReformatter()
            ours = cpu_per_frame(lambda f, s=scaler: s(f, 224, 224), frames, args.repeats)
            before = cpu_per_frame(lambda f, r=reformatter: r.reformat(f, width=224, height=224, format="rgb24",
                                                                       interpolation="BICUBIC").to_ndarray(),
                                   frames, args.repeats)
            reader = decord.VideoReader(str(path), width=224, height=224, num_threads=1)
            theirs = reader.get_batch(list(range(len(frames)))).asnumpy()
            same = np.array_equal(np.stack([scaler(f, 224, 224) for f in frames]), theirs)
            print(f"  {size:<10} {ours * 1e3:>18.3f} {before * 1e3:>29.3f}  {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
