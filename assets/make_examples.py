"""Regenerate the example clips shown in the app's examples gallery.

Each clip is drawn with ffmpeg's own filters (shapes over a plain background, sine
tones), in the spirit of the synthetic world the bundled model was trained on, and kept
small (well under 300 kB) so the repository stays light. Run from anywhere:

    python assets/make_examples.py          # rewrites the files listed in EXAMPLES
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE = 224  # the encoders' input size: nothing is lost in resizing
SECONDS = 4
# Drawn as the synthetic world draws its scenes (train/world/scene.py), which is all the bundled
# model knows: a dark grey background (the world's are grey 0-90; on mid grey, 128, the model
# called the blue circle purple) and beeps of 0.12 s on, 0.12 s off (BEEP_ON_S; beeps of 0.25 s
# it called a steady tone).
BACKGROUND = 48
BACKGROUND_HEX = f"0x{BACKGROUND:02x}{BACKGROUND:02x}{BACKGROUND:02x}"
BEEP_S = 0.12

# A filled circle of radius r centred at (cx, cy) given as ffmpeg expressions of t.
_CIRCLE = "if(lte(pow(X-({cx}),2)+pow(Y-({cy}),2),{r}*{r}),{on},{off})"


def _circle_filter(cx: str, cy: str, r: int, rgb: tuple[int, int, int], bg: int) -> str:
    """geq filter drawing one circle on a grey background (per-channel expressions)."""
    parts = [_CIRCLE.format(cx=cx, cy=cy, r=r, on=c, off=bg) for c in rgb]
    return "geq=r='{}':g='{}':b='{}'".format(*parts)


def _moving_square(colour: str, side: int, x: str, y: str) -> str:
    """A square overlaid on a grey background at (x, y), expressions of t (seconds).

    drawbox evaluates its position once, so motion goes through overlay, which
    re-evaluates x and y on every frame.
    """
    return (f"color=c={BACKGROUND_HEX}:s={SIZE}x{SIZE}:r=10:d={SECONDS}[bg];"
            f"color=c={colour}:s={side}x{side}:r=10:d={SECONDS}[fg];"
            f"[bg][fg]overlay=x='{x}':y='{y}':eval=frame")


# name -> (ffmpeg input/filter arguments, questions). Inputs are lavfi sources.
EXAMPLES: dict[str, dict] = {
    "red_square_low_tone.mp4": dict(
        video=_moving_square("red", 44, x="20+t*35", y="90"),
        audio=f"sine=frequency=220:sample_rate=16000:duration={SECONDS}",
        questions=["What colour is the shape?", "Which way does it move?", "Is the sound high or low?"],
    ),
    "blue_circle_beeping.mp4": dict(
        video=f"color=c={BACKGROUND_HEX}:s={SIZE}x{SIZE}:r=10:d={SECONDS},format=rgb24,"
              + _circle_filter("112", "30+T*40", 24, (40, 80, 230), BACKGROUND),
        # A 1760 Hz tone switched on and off every BEEP_S seconds: a beeping sound.
        audio=f"sine=frequency=1760:sample_rate=16000:duration={SECONDS},"
              f"volume='if(lt(mod(t,{2 * BEEP_S}),{BEEP_S}),1,0)':eval=frame",
        questions=["What shape do you see?", "Describe the sound.", "Which way does the circle move?"],
    ),
    "green_square_silent.mp4": dict(
        video=_moving_square("green", 40, x="150-t*30", y="150-t*25"),
        audio=None,  # no audio track at all: the app greys out the audio mode
        questions=["What colour is the square?", "Describe the motion."],
    ),
    "yellow_square.png": dict(
        video=f"color=c={BACKGROUND_HEX}:s={SIZE}x{SIZE}:d=1,drawbox=x=80:y=80:w=64:h=64:color=yellow:t=fill",
        audio=None,
        questions=["What is in this picture?", "What colour is the shape?"],
    ),
    "rising_tone.wav": dict(
        video=None,
        # Frequency rises from 300 Hz to 1500 Hz over the clip (phase = integral of f).
        audio=f"aevalsrc='0.5*sin(2*PI*(300*t+150*t*t))':s=16000:d={SECONDS}",
        questions=["Is the pitch rising or falling?", "What do you hear?"],
    ),
}


def _ffmpeg_args(name: str, spec: dict) -> list[str]:
    args = ["ffmpeg", "-y", "-loglevel", "error"]
    if spec["video"]:
        args += ["-f", "lavfi", "-i", spec["video"]]
    if spec["audio"]:
        args += ["-f", "lavfi", "-i", spec["audio"]]
    if name.endswith(".mp4"):
        args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "30", "-movflags", "+faststart"]
        if spec["audio"]:
            args += ["-c:a", "aac", "-b:a", "48k", "-shortest"]
    elif name.endswith(".png"):
        args += ["-frames:v", "1"]
    elif name.endswith(".wav"):
        args += ["-ac", "1", "-c:a", "pcm_s16le"]
    return [*args, str(HERE / name)]


def main() -> int:
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is missing: install it with `apt-get install -y ffmpeg`", file=sys.stderr)
        return 1
    listing = []
    for name, spec in EXAMPLES.items():
        subprocess.run(_ffmpeg_args(name, spec), check=True)
        size = (HERE / name).stat().st_size
        print(f"{name}: {size / 1024:.0f} kB")
        listing.append({"file": name, "questions": spec["questions"]})
    (HERE / "examples.json").write_text(json.dumps(listing, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
