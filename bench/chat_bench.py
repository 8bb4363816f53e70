"""Chat engine speed on the CPU: first-token time, tokens/s, KV reuse, shared media cache.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.chat_bench                  # the bundled model
    .venv/bin/python -m bench.chat_bench --preset toy-world --random-weights   # toy-world shape, random
                                                                               # encoders, real SmolLM2
    .venv/bin/python -m bench.chat_bench --preset tiny --random-weights --repeats 5   # tiny random model
    .venv/bin/python -m bench.chat_bench --model DIR [--video clip.mp4]

On a 30-second clip (drawn with ffmpeg unless ``--video`` is given), medians of
``--repeats`` runs, measured side by side in one process:

1. cold first turn: attach (decode) + encoders + prefill until the first token; tokens/s;
2. a follow-up after ``--turns`` earlier turns: first-token time with the conversation's
   KV cache, against the same turn with the cache dropped (the whole conversation run
   through the LLM again; media tokens still cached). Target ratio <= 0.3;
3. a second checkpoint with the same frozen encoders (the first model with new adapters,
   same fingerprints) asked about the same video: extra frozen-encoder calls. Target 0;
4. the LLM's LoRA adapter (model/lora.py, on media turns only): the cold first turn with and
   without it, side by side (runs alternate). A model folder without an adapter gets a
   random-weight one of the toy-world recipe's shape (rank 8 on q/k/v/o): the cost is the same.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from model.chat.engine import ChatEngine, GenerationSettings
from model.commands.common import ModelMissing, add_model_arguments, load_models
from model.video_llama import TRAINABLE, VideoLlama

QUESTIONS = ["Describe the video.", "What colours do you see?", "Is there any sound?", "What happens at the end?"]


def make_clip(folder: Path, seconds: int = 30) -> Path:
    path = folder / "clip30.mp4"
    picture = ["-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}"]
    sound = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *picture, *sound, "-shortest", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)], check=True, timeout=300)
    return path


def sibling(model: VideoLlama, seed: int = 1) -> VideoLlama:
    """Another checkpoint: the same frozen encoders and LLM (shared objects), new adapters."""
    torch.manual_seed(seed)
    parts = {name: getattr(model, name) for name in ("vision_encoder", "ln_vision", "image_qformer",
                                                     "audio_encoder", "llm")}
    for name in TRAINABLE:
        module = getattr(model, name)
        if module is not None:
            module = copy.deepcopy(module)
            with torch.no_grad():
                for p in module.parameters():
                    p.add_(0.02 * torch.randn_like(p))
        parts[name] = module
    other = VideoLlama(**parts).eval()
    other.config, other.tokenizer, other.fingerprints = model.config, model.tokenizer, dict(model.fingerprints)
    return other


def cold_turn(models: dict, video: Path, settings: GenerationSettings) -> tuple[float, float, int]:
    """(seconds to the first token incl. decode and encoders, tokens/s, tokens) on a fresh engine."""
    engine = ChatEngine(models)
    conv = engine.new_conversation()
    start = time.perf_counter()
    engine.attach_media(conv, video)
    attach = time.perf_counter() - start
    for _ in engine.ask(conv, QUESTIONS[0], settings):
        pass
    trace = engine.trace(conv)
    engine.close()
    return attach + trace.timings.first_token, trace.tokens_per_second, trace.tokens.new


def follow_up(models: dict, video: Path, settings: GenerationSettings, turns: int) -> tuple[float, float, int]:
    """(first-token seconds with the KV cache, without it, prompt tokens) for the same follow-up turn."""
    engine = ChatEngine(models)
    conv = engine.new_conversation()
    engine.attach_media(conv, video)
    for i in range(turns):
        for _ in engine.ask(conv, QUESTIONS[i % len(QUESTIONS)], settings):
            pass
    question = "So, in one sentence?"
    for _ in engine.ask(conv, question, settings):
        pass
    with_kv = engine.trace(conv).timings.first_token
    engine.undo(conv)
    engine.drop_kv_cache(conv)
    for _ in engine.ask(conv, question, settings):
        pass
    trace = engine.trace(conv)
    engine.close()
    return with_kv, trace.timings.first_token, trace.tokens.prompt


def shared_encoders(model: VideoLlama, video: Path, settings: GenerationSettings) -> tuple[dict, dict]:
    """Encoder calls after asking model A, then after asking its sibling B about the same video."""
    engine = ChatEngine({"a": model, "b": sibling(model)})
    for name in ("a", "b"):
        conv = engine.new_conversation(name)
        engine.attach_media(conv, video)
        for _ in engine.ask(conv, QUESTIONS[0], settings):
            pass
        if name == "a":
            after_a = dict(engine.encoder_calls)
    after_b = dict(engine.encoder_calls)
    engine.close()
    return after_a, after_b


def adapter_pair(model: VideoLlama) -> dict[str, VideoLlama]:
    """The model without and with a LoRA adapter of the LLM (the same modules otherwise).

    A model that has none gets a random-weight adapter of the toy-world recipe's shape: what it
    costs does not depend on what it learned.
    """
    from model import lora
    from train.recipes import TOY_WORLD_LORA

    def view(adapter: str | None) -> VideoLlama:
        parts = {name: getattr(model, name) for name in (*TRAINABLE, "vision_encoder", "ln_vision",
                                                          "image_qformer", "audio_encoder", "llm")}
        out = VideoLlama(**parts).eval()
        out.config, out.tokenizer, out.fingerprints = model.config, model.tokenizer, dict(model.fingerprints)
        out.llm_adapter = adapter
        return out

    adapter = model.llm_adapter
    if adapter is None:
        adapter = "bench_random"
        torch.manual_seed(0)
        for name, p in lora.add_adapter(model.llm, TOY_WORLD_LORA, adapter):
            with torch.no_grad():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
            p.requires_grad_(False)
    return {"without adapter": view(None), "with adapter": view(adapter)}


def adapter_cost(model: VideoLlama, video: Path, settings: GenerationSettings, repeats: int) -> dict:
    """name -> cold first turns [(TTFT, tokens/s, tokens)], the two runs alternating."""
    pair = adapter_pair(model)
    runs: dict[str, list] = {name: [] for name in pair}
    for _ in range(repeats):
        for name, m in pair.items():
            runs[name].append(cold_turn({name: m}, video, settings))
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)  # --model / --preset [--random-weights], as every command
    parser.add_argument("--video", type=Path, help="clip to use (default: a 30 s clip drawn with ffmpeg)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--turns", type=int, default=3, help="earlier turns before the follow-up")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--no-adapter", action="store_true", help="skip the LoRA adapter's cost (part 4)")
    args = parser.parse_args()
    # A CPU bench: fp32 and the CPU unless asked otherwise.
    args.precision = "fp32" if args.precision == "auto" else args.precision
    args.device = args.device or "cpu"
    try:
        models = load_models(args)
    except (ModelMissing, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name, model = next(iter(models.items()))
    single = {name: model}
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=False)
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or make_clip(Path(tmp))
        print(f"model {name}  video {video.name}  threads {torch.get_num_threads()}  repeats {args.repeats}")
        cold = [cold_turn(single, video, settings) for _ in range(args.repeats)]
        follow = [follow_up(single, video, settings, args.turns) for _ in range(args.repeats)]
        after_a, after_b = shared_encoders(model, video, settings)
        adapter_runs = adapter_cost(model, video, settings, args.repeats) if not args.no_adapter else {}
    ttft = statistics.median(c[0] for c in cold)
    tps = statistics.median(c[1] for c in cold)
    with_kv = statistics.median(f[0] for f in follow)
    without = statistics.median(f[1] for f in follow)
    ratios = [f[0] / f[1] for f in follow]
    extra = sum(after_b.values()) - sum(after_a.values())
    print(f"first turn, cold   TTFT {ttft:7.3f} s (decode + encoders + prefill)   "
          f"{tps:6.1f} tokens/s (median {statistics.median(c[2] for c in cold)} tokens)")
    print(f"follow-up ({args.turns} turns before, {follow[0][2]} prompt tokens)")
    print(f"  with KV cache    TTFT {with_kv:7.3f} s")
    print(f"  whole prompt     TTFT {without:7.3f} s")
    print(f"  ratio            {statistics.median(ratios):7.3f} (median of per-run ratios; target <= 0.3) "
          f"{'OK' if statistics.median(ratios) <= 0.3 else 'MISSED'}")
    print(f"second checkpoint, same frozen encoders: encoder calls {after_a} -> {after_b}: "
          f"{extra} extra (target 0) {'OK' if extra == 0 else 'MISSED'}")
    if adapter_runs:
        print("LoRA adapter of the LLM (media turns), cold first turn, side by side:")
        for label, runs in adapter_runs.items():
            ttft, tps, n = (statistics.median(r[k] for r in runs) for k in range(3))
            print(f"  {label:16s} TTFT {ttft:7.3f} s   {tps:6.1f} tokens/s (median {n} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
