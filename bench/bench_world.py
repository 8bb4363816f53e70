"""Synthetic-world speed: in-memory render vs mp4 encode vs an ffmpeg-drawn clip, medians of N runs.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_world
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from train.world.data import make_item
from train.world.render import render_arrays, render_clip, render_ffmpeg_clip


def median_ms(fn, n: int) -> float:
    times = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    items = [make_item(0, "train", i) for i in range(40)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        scene_ms = median_ms(lambda i: make_item(1, "train", i), 40)
        arrays_ms = median_ms(lambda i: render_arrays(items[i].scene), 40)
        mp4_ms = median_ms(lambda i: render_clip(items[i].scene, out / f"{i}.mp4"), 20)
        ffmpeg_ms = median_ms(lambda i: render_ffmpeg_clip("red", "high", out / f"ff{i}.mp4"), 5)
    print(f"scene+captions+QA  {scene_ms:7.2f} ms")
    print(f"render_arrays      {arrays_ms:7.2f} ms")
    print(f"render_clip (mp4)  {mp4_ms:7.2f} ms  ({mp4_ms / arrays_ms:.1f}x render_arrays)")
    print(f"render_ffmpeg_clip {ffmpeg_ms:7.2f} ms")


if __name__ == "__main__":
    main()
