"""Hostile input end to end: damaged model folders, nasty and random-byte uploads.

    python -m bench.fuzz                  # the bundled model folder, 200 random uploads
    python -m bench.fuzz --uploads 1000 --seed 3

Every case must end in an *expected* error (a ValueError or OSError whose message is one line
and names the damaged file) or, for uploads, in a refusal after which the engine still answers.
A traceback-worthy exception (TypeError, RuntimeError, ...) is a failure. The case lists are
plain data shared with tests/test_hostile.py, which runs the fast ones on a tiny model.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "checkpoints" / "toy-world"


# -- damaged model folders ------------------------------------------------------------------
def _edit_config(change: Callable[[dict], object]) -> Callable[[Path], str]:
    """A damage that rewrites config.json with ``change(data)`` (which edits ``data`` or returns a new one)."""
    def damage(folder: Path) -> str:
        data = json.loads((folder / "config.json").read_text())
        new = change(data)
        (folder / "config.json").write_text(json.dumps(data if new is None else new))
        return "config.json"
    return damage


def _set(section: str | None, key: str, value: object) -> Callable[[Path], str]:
    def change(data: dict) -> None:
        (data[section] if section else data)[key] = value
    return _edit_config(change)


def _write(name: str, content: bytes) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        (folder / name).write_bytes(content)
        return name
    return damage


def _truncate(name: str, keep: float) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:int(len(data) * keep)])
        return name
    return damage


def _poison(name: str, value: float) -> Callable[[Path], str]:
    """Set the first floating-point tensor of ``name`` to ``value`` (NaN, Inf)."""
    def damage(folder: Path) -> str:
        from safetensors.torch import load_file, save_file
        state = load_file(folder / name)
        key = sorted(k for k, t in state.items() if t.is_floating_point())[0]
        state[key] = state[key].clone().fill_(value)
        save_file(state, folder / name)
        return name
    return damage


def _retensor(name: str, edit: Callable[[dict], None]) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        import torch  # noqa: F401 - the tensors below
        from safetensors.torch import load_file, save_file
        state = load_file(folder / name)
        edit(state)
        save_file(state, folder / name)
        return name
    return damage


def _drop_first(state: dict) -> None:
    del state[sorted(state)[0]]


def _add_extra(state: dict) -> None:
    import torch
    state["video_proj.extra"] = torch.zeros(1)


def _reshape_first(state: dict) -> None:
    import torch
    state[sorted(state)[0]] = torch.zeros(3, 3)


def _remove(name: str) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        (folder / name).unlink()
        return name
    return damage


# name -> damage(folder) returning the file the error message must name.
FOLDER_DAMAGES: dict[str, Callable[[Path], str]] = {
    "config is a list": _edit_config(lambda d: [1, 2, 3]),
    "config is a number": _edit_config(lambda d: 7),
    "config is not JSON": _write("config.json", b"{not json"),
    "config is binary": _write("config.json", bytes(range(256))),
    "config is empty": _write("config.json", b""),
    "image_size is text": _set("vision", "image_size", "112"),
    "num_layers is 2.5": _set("image_qformer", "num_layers", 2.5),
    "llm is a list": _set(None, "llm", [1, 2, 3]),
    "vision is null": _set(None, "vision", None),
    "negative head count": _set("llm", "num_heads", -9),
    "zero head count": _set("video_qformer", "num_heads", 0),
    "heads do not divide width": _set("vision", "num_heads", 3),
    "kv heads do not divide heads": _set("llm", "num_kv_heads", 5),
    "unknown top-level key": _set(None, "colour", "blue"),
    "unknown nested key": _set("audio", "sample_rat", 16000),
    "unknown template": _set("llm", "template", "chatml-ish"),
    "use_audio is text": _set(None, "use_audio", "no"),
    "eps is NaN": _set("vision", "norm_eps", float("nan")),
    "huge size": _set("vision", "mlp_dim", 10 ** 12),
    "stem channels not a list": _set("vision", "stem_channels", 4),
    "widths disagree": _set("audio", "out_dim", 77),
    "empty encoder file": _write("vision_encoder.safetensors", b""),
    "truncated encoder file": _truncate("vision_encoder.safetensors", 0.5),
    "8-byte adapter file": _truncate("video_adapter.safetensors", 0.0001),
    "random-byte adapter file": _write("audio_adapter.safetensors", bytes(range(256)) * 40),
    "NaN adapter weights": _poison("video_adapter.safetensors", float("nan")),
    "Inf adapter weights": _poison("audio_adapter.safetensors", float("inf")),
    "adapter tensor missing": _retensor("video_adapter.safetensors", _drop_first),
    "adapter tensor extra": _retensor("video_adapter.safetensors", _add_extra),
    "adapter tensor reshaped": _retensor("video_adapter.safetensors", _reshape_first),
    "adapter file missing": _remove("audio_adapter.safetensors"),
}


def damaged_copy(good: Path, out: Path, damage: Callable[[Path], str]) -> tuple[Path, str]:
    """Copy model folder ``good`` to ``out``, damage it; return (folder, file the message must name)."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(good, out, ignore=shutil.ignore_patterns("README.md"))
    return out, damage(out)


@dataclass
class Outcome:
    case: str
    ok: bool  # an expected error, one line, naming the file
    message: str
    seconds: float


def try_folder(case: str, folder: Path, names: str, load: Callable[[Path], object]) -> Outcome:
    """Load a damaged folder with ``load``; judge the error."""
    start = time.perf_counter()
    try:
        load(folder)
    except (ValueError, OSError) as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        ok = "\n" not in text and names in text
        return Outcome(case, ok, text, time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001 - a crash is what this bench looks for
        return Outcome(case, False, f"CRASH {type(err).__name__}: {err}", time.perf_counter() - start)
    return Outcome(case, False, "loaded without a word", time.perf_counter() - start)


# -- hostile uploads --------------------------------------------------------------------------
NASTY_SUFFIXES = (".mp4", ".png", ".wav", ".jpg", ".mkv", ".webm", ".mp3", "")


def random_uploads(out: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` files of random bytes (0 B to 64 KiB; some start with a real magic number)."""
    rng = random.Random(seed)
    magics = [b"", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\x00\x00\x00\x18ftypmp42",
              b"\x1aE\xdf\xa3", b"\xff\xd8\xff\xe0", b"GIF89a", b"ID3\x03\x00"]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        size = rng.choice([0, 1, 17, 512, 4096, 65536])
        path = out / f"random_{i:04d}{rng.choice(NASTY_SUFFIXES)}"
        path.write_bytes(rng.choice(magics) + rng.randbytes(size))
        paths.append(path)
    return paths


def nasty_uploads(out: Path) -> list[Path]:
    """Odd things a user can hand over: empty files, a folder, a FIFO, text named as media."""
    out.mkdir(parents=True, exist_ok=True)
    items = {"empty.mp4": b"", "empty.png": b"", "text.mp4": b"hello\n" * 100,
             "html.png": b"<html><script>alert(1)</script></html>", "zeros.wav": bytes(4096),
             "json.mp3": b'{"a": 1}', "nul name.mkv": b"\x00" * 100}
    paths = []
    for name, content in items.items():
        (out / name).write_bytes(content)
        paths.append(out / name)
    folder = out / "folder.mp4"
    folder.mkdir(exist_ok=True)
    paths.append(folder)
    fifo = out / "fifo.mp4"
    if hasattr(os, "mkfifo") and not fifo.exists():
        os.mkfifo(fifo)
    if fifo.exists():
        paths.append(fifo)
    return paths


def try_upload(engine, path: Path) -> Outcome:
    """Attach ``path`` to a new conversation: an expected refusal (or a decoded file) is fine."""
    start = time.perf_counter()
    try:
        engine.attach_media(engine.new_conversation(), path)
        return Outcome(path.name, True, "decoded", time.perf_counter() - start)
    except ValueError as err:
        return Outcome(path.name, "\n" not in str(err), str(err), time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001
        return Outcome(path.name, False, f"CRASH {type(err).__name__}: {err}", time.perf_counter() - start)


# -- the bench -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=BUNDLED, help="a good model folder to damage")
    parser.add_argument("--uploads", type=int, default=200, help="random-byte uploads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/videollama-fuzz"))
    args = parser.parse_args(argv)

    from model.chat.engine import ChatEngine
    from model.weights.checkpoint import load_model

    failures = 0
    print(f"damaged model folders ({len(FOLDER_DAMAGES)} cases, from {args.model}):")
    for i, (case, damage) in enumerate(FOLDER_DAMAGES.items()):
        folder, names = damaged_copy(args.model, args.work / f"folder_{i}", damage)
        out = try_folder(case, folder, names, lambda f: load_model(f, device="cpu"))
        failures += not out.ok
        print(f"  {'ok  ' if out.ok else 'FAIL'} {case:28s} {out.seconds:5.2f}s  {out.message[:110]}")
        shutil.rmtree(folder, ignore_errors=True)

    engine = ChatEngine({"model": load_model(args.model, device="cpu")})
    try:
        for title, paths in (("nasty uploads", nasty_uploads(args.work / "nasty")),
                             ("random-byte uploads", random_uploads(args.work / "random", args.uploads, args.seed))):
            outcomes = [try_upload(engine, p) for p in paths]
            bad = [o for o in outcomes if not o.ok]
            failures += len(bad)
            worst = max(outcomes, key=lambda o: o.seconds)
            print(f"{title}: {len(outcomes)} files, {sum(o.message != 'decoded' for o in outcomes)} refused, "
                  f"{len(bad)} crashed; slowest {worst.seconds:.2f}s ({worst.case})")
            for o in bad[:10]:
                print(f"  FAIL {o.case}: {o.message[:150]}")
        conv = engine.new_conversation()
        engine.attach_media(conv, ROOT / "assets" / sorted(p.name for p in (ROOT / "assets").glob("*.mp4"))[0])
        answer = "".join(engine.ask(conv, "What is in the video?"))
        print(f"after all that, a good question is answered: {answer[:80]!r}")
    finally:
        engine.close()
        shutil.rmtree(args.work, ignore_errors=True)
    print(f"failures: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
