"""Make small test media with the ffmpeg command line (lavfi sources) for the media tests.

Every helper writes into a directory the caller gives (a pytest tmp_path) and returns the
path. Files are tiny (tens of pixels, about a second) so the whole suite stays fast.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

FFMPEG = ["ffmpeg", "-nostdin", "-v", "error", "-y"]

# Gray ramp: frame n has luma 16 + 4 n (limited range), so a decoded frame tells its index.
RAMP_STEP = 4


def run_ffmpeg(*args: str) -> None:
    result = subprocess.run([*FFMPEG, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(args)}\n{result.stderr}")


def ramp_index(rgb_mean: float) -> int:
    """Frame index from the mean RGB value of a ramp frame (inverse of the drawn luma)."""
    luma = 16 + rgb_mean * 219 / 255
    return round((luma - 16) / RAMP_STEP)


def video(path: Path, *, size: str = "64x48", fps: float = 25, duration: float = 1.0,
          source: str = "testsrc", color: str = "red", audio: str | None = None,
          audio_duration: float | None = None, vcodec: str = "libx264", acodec: str = "aac",
          gop: int | None = None, extra: tuple[str, ...] = (), vf: str | None = None) -> Path:
    """A video from a lavfi source: "testsrc", "color" (plain ``color``) or "ramp" (gray ramp).

    ``audio``: None (no track), "sine" (440 Hz), "silence".
    """
    if source == "ramp":
        src = f"color=c=black:s={size}:r={fps}:d={duration}"
        vf = f"geq=lum='16+{RAMP_STEP}*N':cb=128:cr=128" + (f",{vf}" if vf else "")
    elif source == "color":
        src = f"color=c={color}:s={size}:r={fps}:d={duration}"
    else:
        src = f"testsrc=s={size}:r={fps}:d={duration}"
    args = ["-f", "lavfi", "-i", src]
    if audio is not None:
        adur = duration if audio_duration is None else audio_duration
        asrc = (f"sine=frequency=440:sample_rate=48000:duration={adur}" if audio == "sine"
                else f"anullsrc=r=48000:cl=stereo:d={adur}")
        args += ["-f", "lavfi", "-t", str(adur), "-i", asrc]
    if vf:
        args += ["-vf", vf]
    args += ["-c:v", vcodec]
    if vcodec == "libx264":
        args += ["-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if gop:
        args += ["-g", str(gop)]
    if audio is not None:
        args += ["-c:a", acodec]
    run_ffmpeg(*args, *extra, str(path))
    return path


def audio(path: Path, *, freq: float = 440.0, duration: float = 3.0, rate: int = 16000,
          channels: int = 1, codec: str | None = None, source: str | None = None) -> Path:
    """A tone (or any lavfi audio ``source``); the container and codec follow the file suffix."""
    src = source or f"sine=frequency={freq}:sample_rate={rate}:duration={duration}"
    args = ["-f", "lavfi", "-i", src, "-ac", str(channels), "-ar", str(rate)]
    if codec:
        args += ["-c:a", codec]
    run_ffmpeg(*args, str(path))
    return path


def image(path: Path, *, color: str = "red", size: str = "40x30") -> Path:
    run_ffmpeg("-f", "lavfi", "-i", f"color=c={color}:s={size}:d=0.04", "-frames:v", "1", str(path))
    return path


def halves(path: Path, *, left: str = "red", right: str = "blue", side: int = 32,
           duration: float = 0.4, extra: tuple[str, ...] = ()) -> Path:
    """A video whose left half is ``left`` and right half ``right`` (for orientation tests)."""
    graph = (f"color=c={left}:s={side}x{side}:r=25:d={duration}[l];"
             f"color=c={right}:s={side}x{side}:r=25:d={duration}[r];[l][r]hstack")
    run_ffmpeg("-f", "lavfi", "-i", graph, "-c:v", "libx264", "-preset", "ultrafast",
               "-pix_fmt", "yuv420p", *extra, str(path))
    return path


def rotated(src: Path, path: Path, degrees: int) -> Path:
    """Copy ``src`` with a rotation tag (the display matrix phones write)."""
    run_ffmpeg("-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(path))
    return path


def browser_webm(path: Path, *, duration: float = 1.0) -> Path:
    """A webm written to a pipe, like a browser's MediaRecorder: no duration, no seek index."""
    args = [*FFMPEG, "-f", "lavfi", "-i", f"testsrc=s=64x48:r=25:d={duration}",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}",
            "-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libopus", "-f", "webm", "pipe:1"]
    with open(path, "wb") as out:
        subprocess.run(args, stdout=out, check=True)
    return path


def count_frames(path: Path) -> int:
    """Frames in the first video stream, counted by decoding with ffprobe (independent of PyAV)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0].strip(","))  # MPEG-TS lists the stream once per program


def decode_png(src: Path, path: Path) -> Path:
    """First frame as the ffmpeg CLI shows it (rotation applied): an independent reference."""
    run_ffmpeg("-i", str(src), "-frames:v", "1", str(path))
    return path
