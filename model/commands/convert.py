"""`launch.py convert`: official Video-LLaMA files -> a model folder of ours.

    python launch.py convert --preset video-llama-2-7b \\
        --vl VL_LLaMA_2_7B_Finetuned.pth --al AL_LLaMA_2_7B_Finetuned.pth \\
        --eva eva_vit_g.pth --blip2 blip2_pretrained_flant5xxl.pth \\
        --imagebind imagebind_huge.pth --llm llama-2-7b-chat-hf --out checkpoints/video-llama-2-7b

The LLM is *referenced* by its absolute path in ``config.json`` (``llm.hf_path``): it is
already a safe, loadable Hugging Face folder and is 13-26 GB, so copying it by default
would only double the disk use. ``--copy-llm`` instead copies it into ``OUT/llm`` with every
``pytorch_model*.bin`` shard rewritten as safetensors (read with ``weights_only``), so the
folder is self-contained and the LLM loads memory-mapped next time.

Without ``--al`` (and ``--imagebind``) the folder has the vision branch only.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from model.config import PRESETS, VideoLlamaConfig
from model.video_llama import build_model
from model.weights import convert as conv
from model.weights.checkpoint import flat_dict, load_pth, model_dict, save_state_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS), help="architecture of the files")
    parser.add_argument("--vl", required=True, type=Path, help="VL_*.pth or a Video-LLaMA-Series vision .pth")
    parser.add_argument("--al", type=Path, help="AL_*.pth or *_audiobranch.pth (audio branch; optional)")
    parser.add_argument("--eva", required=True, type=Path, help="eva_vit_g.pth")
    parser.add_argument("--blip2", required=True, type=Path, help="blip2_pretrained_flant5xxl.pth")
    parser.add_argument("--imagebind", type=Path, help="imagebind_huge.pth (needed with --al)")
    parser.add_argument("--llm", required=True, type=Path, help="Hugging Face LLaMA folder, e.g. llama-2-7b-chat-hf")
    parser.add_argument("--out", required=True, type=Path, help="model folder to write")
    parser.add_argument("--copy-llm", action="store_true", help="copy the LLM into OUT/llm as safetensors")


def expected_shapes(cfg: VideoLlamaConfig) -> dict[str, torch.Size]:
    """Key -> shape of our encoders and adapters, from a model built on the meta device."""
    return {k: v.shape for k, v in build_model(cfg, device="meta", with_llm=False).state_dict().items()}


def convert_files(cfg: VideoLlamaConfig, eva: Path, blip2: Path, vl: Path,
                  al: Path | None = None, imagebind: Path | None = None) -> dict[str, torch.Tensor]:
    """Read the official files safely, convert them, and check keys and shapes against ``cfg``."""
    if cfg.use_audio and (al is None or imagebind is None):
        raise ValueError("the audio branch needs both --al and --imagebind (or turn it off with use_audio=False)")
    parts = [
        (str(eva), conv.convert_eva(flat_dict(load_pth(eva), eva), cfg.vision.depth)),
        (str(blip2), conv.convert_blip2(model_dict(load_pth(blip2), blip2))),
        (str(vl), conv.convert_videollama(model_dict(load_pth(vl), vl), cfg.audio.logit_scale)),
    ]
    if cfg.use_audio:
        parts.append((str(imagebind), conv.convert_imagebind_audio(flat_dict(load_pth(imagebind), imagebind),
                                                                  cfg.audio.logit_scale)))
        parts.append((str(al), conv.convert_videollama(model_dict(load_pth(al), al), cfg.audio.logit_scale)))
    state = conv.merge(*parts)
    conv.check_against(state, expected_shapes(cfg), what=f"preset {cfg.name!r}")
    return state


def check_llm_folder(llm: Path, cfg: VideoLlamaConfig) -> None:
    """Cheap early check that the LLM folder is a LLaMA of the preset's width."""
    config_path = llm / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"--llm {llm} has no config.json; pass a Hugging Face LLaMA folder "
                                "(e.g. llama-2-7b-chat-hf from the Video-LLaMA-2 repos)")
    width = json.loads(config_path.read_text()).get("hidden_size")
    if width != cfg.llm.hidden_size:
        raise ValueError(f"--llm {llm} has hidden_size {width}, but preset {cfg.name!r} expects "
                         f"{cfg.llm.hidden_size}; pick the matching preset or LLM")


def copy_llm(src: Path, dst: Path) -> None:
    """Copy a HF LLaMA folder, rewriting ``pytorch_model*.bin`` shards as safetensors."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir()):
        if path.name.startswith("pytorch_model") and path.suffix == ".bin":
            state = {k: v.contiguous() for k, v in flat_dict(load_pth(path), path).items()}
            save_file(state, dst / _safetensors_name(path.name), metadata={"format": "pt"})
        elif path.name == "pytorch_model.bin.index.json":
            index = json.loads(path.read_text())
            index["weight_map"] = {k: _safetensors_name(v) for k, v in index["weight_map"].items()}
            (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        elif path.is_file():
            shutil.copy2(path, dst / path.name)


def _safetensors_name(bin_name: str) -> str:
    # pytorch_model-00001-of-00002.bin -> model-00001-of-00002.safetensors
    return bin_name.replace("pytorch_model", "model").removesuffix(".bin") + ".safetensors"


def main(args: argparse.Namespace) -> int:
    cfg = VideoLlamaConfig.from_name(args.preset)
    if not cfg.use_audio and (args.al or args.imagebind):
        raise ValueError(f"preset {args.preset!r} has no audio branch; drop --al/--imagebind or pick another preset")
    if cfg.use_audio and args.al is None:
        print("no --al given: writing the vision branch only (use_audio=False)")
        cfg.use_audio = False
    check_llm_folder(args.llm, cfg)
    state = convert_files(cfg, args.eva, args.blip2, args.vl, args.al, args.imagebind)
    if args.copy_llm:
        copy_llm(args.llm, args.out / "llm")
        cfg.llm.hf_path = "llm"
    else:
        cfg.llm.hf_path = str(args.llm.resolve())
    save_state_folder(state, cfg, args.out)
    total = sum(t.numel() for t in state.values())
    print(f"wrote {args.out}: {len(state)} tensors, {total / 1e6:.1f} M parameters; "
          f"LLM {'copied to llm/' if args.copy_llm else 'referenced at ' + cfg.llm.hf_path}")
    print(f"next: python launch.py inspect --model {args.out}")
    return 0
