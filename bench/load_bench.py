"""Loading a model folder: peak host memory and whether each weight is read only once.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.load_bench [--dir /tmp/load_bench] [--keep]

Builds a synthetic model folder once: the full-size video-llama-2-7b encoders and adapters
(EVA ViT-g + image Q-Former ~4.4 GB, ImageBind audio ~0.35 GB, fp32) with random weights,
plus a mid-size random LLaMA (~0.5 B parameters, fp32 safetensors). Then, each in a fresh
process so peaks do not mix:

- ``ours``: ``model.weights.checkpoint.load_model`` (meta build, mmap'd safetensors, ``assign=True``);
- ``naive``: the usual way for the same encoder files -- randomly initialised modules, the
  file read into memory, ``load_state_dict`` copying into the parameters.

For each: wall time, peak RSS right after loading, peak RSS after reading every weight once
(a sum over each tensor), the share of parameters that are views of the mmap'd files (so
nothing was copied), and the bytes the process read. Targets: peak below the largest
component file + 2 GiB while loading; after reading everything, RSS close to the folder size
(one copy, not two).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

GIB = 2**30
MID_LLM = dict(hidden_size=2048, intermediate_size=5504, num_layers=8, num_heads=16, num_kv_heads=16)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _io() -> dict[str, int]:
    rows = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    majflt = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[9])
    return {"rchar": int(rows["rchar"]), "read_bytes": int(rows["read_bytes"]), "majflt": majflt}


def _mapped_ranges(folder: Path) -> list[tuple[int, int]]:
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith(str(folder)):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi))
    return out


def _share_mapped(tensors, folder: Path) -> float:
    """Fraction of bytes of ``tensors`` whose storage lies inside a mapping of a folder file."""
    ranges = _mapped_ranges(folder)
    total = inside = 0
    for t in tensors:
        ptr, n = t.data_ptr(), t.numel() * t.element_size()
        total += n
        inside += n if any(lo <= ptr and ptr + n <= hi for lo, hi in ranges) else 0
    return inside / max(total, 1)


def _touch(tensors) -> None:
    with torch.no_grad():
        for t in tensors:
            t.float().sum()  # reads every byte once


# -- building the synthetic folder ------------------------------------------------------
def make_folder(folder: Path) -> None:
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from model.commands.common import char_tokenizer
    from model.config import VideoLlamaConfig
    from model.llm import llama_config
    from model.video_llama import build_model
    from model.weights.checkpoint import save_state_folder

    cfg = VideoLlamaConfig.from_name("video-llama-2-7b")
    for key, value in MID_LLM.items():
        setattr(cfg.llm, key, value)
    cfg.llm.hf_path = "llm"
    gen = torch.Generator().manual_seed(0)
    meta = build_model(cfg, device="meta", with_llm=False).state_dict()
    state = {k: torch.randn(v.shape, generator=gen) * 0.02 for k, v in meta.items()}
    save_state_folder(state, cfg, folder)
    del state
    with torch.device("meta"):
        llm = LlamaForCausalLM(llama_config(cfg.llm))
    llm_state = {k: torch.randn(v.shape, generator=gen) * 0.02 for k, v in llm.state_dict().items()}
    (folder / "llm").mkdir(exist_ok=True)
    save_file(llm_state, folder / "llm" / "model.safetensors", metadata={"format": "pt"})
    llm.config.save_pretrained(folder / "llm")
    char_tokenizer(cfg.llm.vocab_size).save_pretrained(folder / "llm")


# -- the two ways of loading (each run in its own process) ------------------------------------
def run_ours(folder: Path) -> dict:
    from model.weights.checkpoint import load_model

    io0, t0 = _io(), time.perf_counter()
    model = load_model(folder, precision="fp32", device="cpu")
    seconds = time.perf_counter() - t0
    peak_load = _status("VmHWM")
    encoders = [p for n, p in model.named_parameters() if not n.startswith("llm.")]
    llm = list(model.llm.parameters())
    mapped_enc, mapped_llm = _share_mapped(encoders, folder), _share_mapped(llm, folder)
    _touch(encoders)
    peak_encoders = _status("VmHWM")
    _touch(llm)
    io1 = _io()
    return {"seconds": seconds, "peak_after_load": peak_load, "peak_after_reading_encoders": peak_encoders,
            "peak_after_reading_all": _status("VmHWM"),
            "rss_after_reading_all": _status("VmRSS"), "mapped_share_encoders": mapped_enc,
            "mapped_share_llm": mapped_llm, **{k: io1[k] - io0[k] for k in io1}}


def run_naive(folder: Path) -> dict:
    """Random init + whole file read into memory + copying load_state_dict (encoder files only)."""
    from safetensors.torch import load_file

    from model.config import VideoLlamaConfig
    from model.video_llama import build_model

    cfg = VideoLlamaConfig.from_file(folder / "config.json")
    io0, t0 = _io(), time.perf_counter()
    model = build_model(cfg, device="cpu", with_llm=False)
    for path in sorted(folder.glob("*.safetensors")):
        state = load_file(path, backend="pread")  # read into fresh memory, as torch.load without mmap
        model.load_state_dict(state, strict=False)
        del state
    seconds = time.perf_counter() - t0
    peak_load = _status("VmHWM")
    _touch(list(model.parameters()))
    io1 = _io()
    peak = _status("VmHWM")
    return {"seconds": seconds, "peak_after_load": peak_load, "peak_after_reading_encoders": peak,
            "peak_after_reading_all": peak,
            "rss_after_reading_all": _status("VmRSS"), **{k: io1[k] - io0[k] for k in io1}}


def _child(mode: str, folder: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--dir", str(folder)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/videollama_load_bench"))
    parser.add_argument("--keep", action="store_true", help="keep the synthetic folder afterwards")
    parser.add_argument("--child", choices=("ours", "naive"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_ours(args.dir) if args.child == "ours" else run_naive(args.dir)))
        return
    if not (args.dir / "config.json").is_file():
        t0 = time.perf_counter()
        make_folder(args.dir)
        print(f"built synthetic folder {args.dir} in {time.perf_counter() - t0:.0f} s")
    files = {p.relative_to(args.dir).as_posix(): p.stat().st_size for p in args.dir.rglob("*.safetensors")}
    largest, total = max(files.values()), sum(files.values())
    enc_total = sum(v for k, v in files.items() if not k.startswith("llm/"))
    print("files: " + ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in sorted(files.items())))
    print(f"folder total {total / GIB:.2f} GiB; largest component {largest / GIB:.2f} GiB; "
          f"target peak while loading <= {(largest + 2 * GIB) / GIB:.2f} GiB")
    results = {"ours": _child("ours", args.dir)}
    if _mem_available() > 3 * enc_total:
        results["naive"] = _child("naive", args.dir)
    else:
        print("(skipping the naive baseline: not enough free memory for its extra copies)")
    for mode, r in results.items():
        print(f"\n[{mode}] load {r['seconds']:.1f} s | peak RSS after load {r['peak_after_load'] / GIB:.2f} GiB | "
              f"peak after reading all weights {r['peak_after_reading_all'] / GIB:.2f} GiB | "
              f"RSS then {r['rss_after_reading_all'] / GIB:.2f} GiB")
        print(f"[{mode}] read() bytes {r['rchar'] / GIB:.2f} GiB, disk read_bytes {r['read_bytes'] / GIB:.2f} GiB, "
              f"major page faults {r['majflt']}")
        if mode == "ours":
            print(f"[ours] parameters that are views of the mmap'd files: encoders+adapters "
                  f"{100 * r['mapped_share_encoders']:.1f} %, LLM {100 * r['mapped_share_llm']:.1f} %")
    ours = results["ours"]
    ok = ours["peak_after_load"] <= largest + 2 * GIB
    target = (largest + 2 * GIB) / GIB
    print(f"\npeak while loading {ours['peak_after_load'] / GIB:.2f} GiB vs target {target:.2f} GiB: "
          f"{'OK' if ok else 'ABOVE TARGET'}; after reading every weight: "
          f"{ours['peak_after_reading_all'] / total:.2f} x folder size")
    if "naive" in results:
        naive = results["naive"]
        n_peak, o_peak = naive["peak_after_reading_encoders"], ours["peak_after_reading_encoders"]
        print(f"encoders+adapters ({enc_total / GIB:.2f} GiB of files), naive vs ours: peak after reading them "
              f"{n_peak / GIB:.2f} vs {o_peak / GIB:.2f} GiB "
              f"(ratio {n_peak / o_peak:.2f}); "
              f"load time {naive['seconds']:.1f} vs {ours['seconds']:.1f} s (ours includes the LLM)")
    if not args.keep:
        shutil.rmtree(args.dir)


if __name__ == "__main__":
    main()
