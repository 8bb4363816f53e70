"""The paper's four training runs on the original datasets (``vl-stage1`` ... ``al-stage2``).

``python launch.py train --recipe vl-stage1 --init MODEL_DIR --data-root DATA [--out DIR]``

``--init`` is a model folder holding the frozen encoders (and, for stage 2, the stage-1
adapters), e.g. one written by ``launch.py convert``. The data root is laid out as
``DATA_LAYOUT`` below (the released files under their released names). Media is loaded and
encoded on the fly through the same ``load_media`` as inference; the frozen encoders run
without gradients, the LLM is frozen, only the stage's branch adapters train.

The audio-branch runs follow the original: frames go through ImageBind's vision encoder
(``train/al_visual.py``) into the audio adapter; the teacher's weights are
``<data root>/imagebind/imagebind_huge.pth``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from model.media import LoadOptions, load_media
from train import llm_lora, stages
from train.datasets import READERS, Record
from train.recipes import Recipe, StageSpec
from train.trainer import batch_generator, make_accelerator, run

# Dataset name -> (reader, annotation file, media folder), relative to --data-root.
DATA_LAYOUT = {
    "webvid": ("webvid", "webvid/results_2M_train.csv", "webvid/videos"),
    "cc3m": ("llava_cc3m", "llava_cc3m/chat.json", "llava_cc3m/images"),
    "cc_sbu_align": ("cc_sbu_align", "cc_sbu_align/filter_cap.json", "cc_sbu_align/image"),
    "llava_instruct": ("llava_instruct", "llava_instruct/llava_instruct_150k.json", "coco/train2014"),
    "videochat_instruct": ("videochat_instruct", "videochat_instruct/videochat_instruct_11k.json",
                           "videochat_instruct/videos"),
}
TEACHER_FILE = "imagebind/imagebind_huge.pth"
MAX_CAPTION_WORDS = 50  # the original's blip_caption


def blip_caption(text: str) -> str:
    """The original caption cleaning: lowercase, punctuation to spaces, at most 50 words."""
    text = re.sub(r"[.!\"()*#:;~]", " ", text.lower())
    return " ".join(text.split()[:MAX_CAPTION_WORDS])


@dataclass
class Source:
    name: str
    ratio: float
    records: list[Record]


def load_sources(spec: StageSpec, data_root: Path) -> list[Source]:
    out = []
    for name, ratio in spec.datasets.items():
        reader, annotations, media = DATA_LAYOUT[name]
        records = list(READERS[reader](data_root / annotations, data_root / media))
        if not records:
            raise ValueError(f"{data_root / annotations} holds no records for {name}")
        out.append(Source(name, ratio, records))
    return out


def pick_records(sources: list[Source], g: torch.Generator, n: int) -> list[Record]:
    """One batch: a source drawn by its sample ratio (as the original's MultiIterLoader picks
    one dataset per iteration), then ``n`` of its records uniformly."""
    weights = torch.tensor([s.ratio for s in sources], dtype=torch.float64)
    source = sources[int(torch.multinomial(weights, 1, generator=g))]
    rows = torch.randint(len(source.records), (n,), generator=g).tolist()
    return [source.records[r] for r in rows]


def stack_frames(frames: list[torch.Tensor]) -> torch.Tensor:
    """(T_i, 3, S, S) clips -> (B, T, 3, S, S); a clip shorter than the longest repeats its
    last frame (videos with fewer frames than asked for)."""
    T = max(f.shape[0] for f in frames)
    return torch.stack([torch.cat([f, f[-1:].expand(T - f.shape[0], -1, -1, -1)]) for f in frames])


def record_example(record: Record, spec: StageSpec, tokenizer, template: str, media, slot: str) -> stages.Example:
    """One record as a training sequence (caption or conversation), media in slot ``slot``."""
    if spec.objective == "caption":
        return stages.caption_example(tokenizer, blip_caption(record.caption or ""), slot, clip=0,
                                      max_tokens=spec.max_txt_len)
    turns = [(h.text, a.text) for h, a in zip(record.turns[0::2], record.turns[1::2], strict=False)]
    if record.caption and not turns:  # cc_sbu_align: a description request and the caption
        turns = [("Describe this image in detail.", record.caption)]
    if record.instruction:
        turns[0] = (f"{record.instruction} {turns[0][0]}", turns[0][1])
    pieces, sup = stages.conversation_example(
        tokenizer, template, turns, kind=record.media_type, with_audio=False,
        frame_message=getattr(media, "frame_message", ""), slot_names={"video": slot})
    return stages.Example(pieces, sup, clip=0)


def _truncate(example: stages.Example, budget: int) -> stages.Example:
    # Keep whole pieces up to the token budget (media counts too), as max_txt_len bounds the text.
    pieces, sup, used = [], [], 0
    for p, s in zip(example.pieces, example.supervised, strict=True):
        n = 32 if isinstance(p, str) else len(p)
        if used + n > budget and any(sup):
            break
        pieces.append(p)
        sup.append(s)
        used += n
    return stages.Example(pieces, sup, example.clip)


def run_paper_stage(recipe: Recipe, out: Path, init: Path, data_root: Path, resume: bool = False,
                    llm_precision: str = "auto") -> Path:
    """Train the recipe's single stage; returns the model folder ``<out>/final``."""
    from model.weights.checkpoint import load_model, save_model_folder

    spec = recipe.stages[0]
    acc = make_accelerator(spec.train)
    model = load_model(init, precision=stages.backprop_llm_precision(acc.device, llm_precision), device=acc.device,
                       for_training=True)  # encoders and LLM of its own: training must not change a shared copy
    stages.prepare_backprop_llm(model.llm, acc.device)
    sources = load_sources(spec, Path(data_root))
    branch = spec.branches[0]
    teacher = _teacher(model, data_root) if spec.audio_from == "vision" else None
    options = LoadOptions(num_frames=spec.num_frames, image_size=model.config.vision.image_size, use_audio=False)
    llm_lora.attach(model, recipe)  # off unless --lora-rank (or the --init folder has an adapter)
    params = stages.branch_parameters(model, spec.branches)
    model.train()
    params = llm_lora.with_lora(model, spec, recipe, params)
    cfg = spec.train
    template = model.config.llm.template
    slot = "audio" if branch == "audio" else "video"

    def batch_fn(index: int, rank: int, world: int):
        g = batch_generator(cfg.seed, index * world + rank, 0)
        records = pick_records(sources, g, cfg.batch_size)
        medias = [load_media(r.media_path, options) for r in records]
        frames = stack_frames([m.frames for m in medias])
        budget = spec.max_txt_len + 64
        examples = [_truncate(record_example(r, spec, model.tokenizer, template, m, slot), budget)
                    for r, m in zip(records, medias, strict=True)]
        return examples, frames  # frames (B, T, 3, S, S)

    def loss_fn(batch):
        examples, frames = batch
        if teacher is not None:
            from train.al_visual import audio_tokens_from_frames

            media = {"audio": audio_tokens_from_frames(model, teacher, frames)}
        else:
            media = {"video": model.video_tokens(model.encode_frames(frames))}
        embeds, mask, labels = stages.assemble(model.llm.get_input_embeddings(), examples, media)
        return stages.supervised_lm_loss(model.llm, embeds, mask, labels), len(examples)

    t0 = time.time()
    run(spec.name, params, loss_fn, batch_fn, cfg, out, lambda d: save_model_folder(model, d),
        accelerator=acc, resume=resume)
    final = Path(out) / "final"
    if acc.is_main_process:
        save_model_folder(model, final)
    print(f"{spec.name}: {time.time() - t0:.0f} s")
    return final


def _teacher(model, data_root: Path):
    from train.al_visual import load_teacher

    if model.config.audio_visual_teacher is None:
        raise ValueError("the audio-branch recipes need config.audio_visual_teacher (ImageBind's vision "
                         "encoder sizes) in the --init model folder's config.json")
    path = Path(data_root) / TEACHER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the audio-branch stages need imagebind_huge.pth there")
    return load_teacher(path, model.config, device=next(model.parameters()).device)
