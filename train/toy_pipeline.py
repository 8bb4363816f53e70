"""The ``toy-world`` recipe end to end: stage 0, frozen features, stage 1, stage 2, model folder.

Every stage writes ``<out>/<stage>/`` (log, training state, a model-folder checkpoint) and a
``done.json`` when finished; ``--resume`` skips finished stages (restoring their weights from
the training state) and continues an interrupted one from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from model.config import VideoLlamaConfig
from model.media import frame_message
from model.media.common import normalise
from model.video_llama import build_model
from model.vision import sincos_2d
from train import al_toy, clip_attributes, llm_lora, stage0, stages
from train.recipes import OPEN_ANSWERS, YES_NO_ANSWERS, Recipe, StageSpec
from train.trainer import STATE_FILE, batch_generator, load_training_state, make_accelerator, run
from train.world.pool import POSITION_BINS, Pool, corrupt_objects, describe_objects, precompute, render_pool
from train.world.qa import SOUND_SKILLS, frame_scene, image_caption, image_qa
from train.world.scene import COLOURS, SHAPES

FEATURES_FILE = "features.pt"
IMAGES_PER_CLIP = 4  # stage 0 takes several frames of one clip so position must be encoded
HARD_NEGATIVES = 4  # per image: its description with one attribute changed


def save_folder(model, folder: Path) -> None:
    """Write ``model`` as a model folder (config.json + safetensors, no LLM weights)."""
    from model.weights.checkpoint import save_model_folder

    save_model_folder(model, folder)


def save_fp16_folder(model, folder: Path) -> None:
    """The released form: every encoder and adapter tensor in fp16, the LLM's LoRA adapter too (the
    LLM itself is not saved)."""
    from model.weights.checkpoint import save_model_folder

    save_model_folder(model, folder, dtype=torch.float16)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- stage 0 -------------------------------------------------------------------------------
def _stage0_params(model, heads) -> list:
    named = stages.branch_parameters(model, ("video", "audio"), stages.ENCODER_PREFIXES)
    return named + [(f"heads.{n}", p) for n, p in heads.named_parameters()]


def _image_batch(pool: Pool, g: torch.Generator, batch: int):
    clips = torch.randint(len(pool.scenes), (batch // IMAGES_PER_CLIP,), generator=g)
    T = pool.frames.shape[1]
    images, texts, hard, objs = [], [], [], []
    rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=g)))
    for c in clips.tolist():
        for t in torch.randperm(T, generator=g)[:IMAGES_PER_CLIP].tolist():
            images.append(pool.frames[c, t])
            texts.append(pool.frame_texts[c][t])
            objs.append(pool.frame_objs[c][t])
            hard += [describe_objects(corrupt_objects(pool.frame_objs[c][t], rng)) for _ in range(HARD_NEGATIVES)]
    x = normalise(torch.stack(images).numpy())  # (B, 3, S, S)
    # Mild global colour jitter so colour names survive other renderers and codecs.
    gain = 1 + 0.15 * (torch.rand(x.shape[0], 3, 1, 1, generator=g) - 0.5)
    shift = 0.2 * (torch.rand(x.shape[0], 3, 1, 1, generator=g) - 0.5)
    return x * gain + shift, texts, hard, objs


def _audio_batch(pool: Pool, g: torch.Generator, batch: int):
    C = pool.fbank.shape[1]
    clips = torch.randint(len(pool.scenes), (batch,), generator=g)
    wins = torch.randint(C, (batch,), generator=g)
    fb = pool.fbank[clips, wins].float()  # (B, 1, M, F)
    return fb, [pool.sound_texts[c][w] for c, w in zip(clips.tolist(), wins.tolist(), strict=True)]


def run_stage0(model, pool: Pool, spec: StageSpec, out: Path, acc, resume: bool) -> al_toy.ImageTower | None:
    """Train the encoders; with ``audio_from="vision"`` also the image tower (``train/al_toy.py``),
    which is returned (else None)."""
    vocab = None
    if spec.caption_weight:
        vocab = sorted({w for texts in pool.frame_texts for t in texts for w in stage0.caption_words(t)})
    width = model.config.image_qformer.hidden_size
    attributes = stage0.AttributeHead(width, SHAPES, COLOURS, POSITION_BINS) if spec.attribute_weight else None
    heads = stage0.ContrastiveHeads(width, model.config.audio.out_dim, vocab=vocab, attributes=attributes)
    # Start the ViT's learned position embedding from 2-D sine-cosine codes: from the tiny
    # random init, 1000 contrastive steps left positions (hence motion) barely decodable.
    vcfg = model.config.vision
    with torch.no_grad():
        codes = sincos_2d(vcfg.image_size // vcfg.patch_size, vcfg.width)
        model.vision_encoder.pos_embed[0, 1:] = spec.position_code_scale * codes
    heads.to(acc.device)
    tower = al_toy.build_tower(model.config, acc.device, spec.train.seed) if spec.audio_from == "vision" else None
    params = _stage0_params(model, heads) + al_toy.named_parameters(tower)
    model.vision_encoder.train()
    model.image_qformer.train()
    model.audio_encoder.train()
    cfg = spec.train

    def batch_fn(index: int, rank: int, world: int):
        g = batch_generator(cfg.seed, index, rank)
        images, sounds = _image_batch(pool, g, cfg.batch_size), _audio_batch(pool, g, cfg.batch_size)
        # Drawn last, so the other batches are the same with or without the tower.
        seen = None if tower is None else al_toy.tower_batch(pool, g, cfg.batch_size, model.config.audio)
        return images, sounds, seen

    def loss_fn(batch):
        (images, itexts, hard, objs), (fbank, stexts), seen = batch
        tokens = model.ln_vision(model.vision_encoder(images.to(acc.device)))  # (B, 1+P, W)
        feats = model.image_qformer(tokens)  # (B, Qi, H)
        li = stage0.info_nce(heads.image_head(feats.mean(1)), heads.image_text(itexts), itexts,
                             heads.image_scale, heads.image_text(hard))
        la = stage0.audio_text_loss(model, heads, fbank.to(acc.device), stexts)
        if heads.caption is not None:  # BLIP-2's image-grounded generation, beside the contrast
            li = li + spec.caption_weight * heads.caption.loss(feats, itexts)
        if heads.attributes is not None:  # labelled-image pre-training: which shape, which colour, where
            li = li + spec.attribute_weight * heads.attributes.loss(feats, objs)
        if tower is not None:  # frames into the audio space, for the audio branch of stages 1-2
            la = la + al_toy.tower_loss(model, tower, seen)
        return li + la, len(itexts)

    _run_stage(spec, params, loss_fn, batch_fn, out, acc, resume, lambda d: save_folder(model, d))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    al_toy.freeze(tower)
    return tower


def run_probe(model, recipe: Recipe, folder: Path) -> None:
    """The stage-0 probe (train/probe.py) on held-out clips: its table, with a WARNING for every
    attribute the frozen features hold too weakly, into the log and ``folder``/probe.{json,txt}."""
    from train import probe

    clips, steps = recipe.world.get("probe_clips", 0), recipe.world.get("probe_steps", 400)
    if not clips:
        return
    t0 = time.time()
    with torch.random.fork_rng():  # the probe's own seeds leave the recipe's random stream as it was
        rows = probe.probe_model(model, clips, steps)
    header = "stage-0 probe: " + probe.describe(clips, steps, time.time() - t0)
    _log(header + "\n" + probe.format_table(rows))
    probe.save_report(rows, folder, header)


# -- frozen features -------------------------------------------------------------------------


# -- stages 1 and 2 --------------------------------------------------------------------------
@torch.no_grad()
def match_word_scale(model, feats: dict[str, torch.Tensor], sample: int = 64) -> dict[str, float]:
    """Rescale the fresh projections so soft tokens start at the LLM's word-embedding norm.

    A default-initialised projection gives tokens about seven times longer than SmolLM2's word
    embeddings; the frozen LLM's attention then sees them as one loud constant and the early
    steps go into shrinking them. Returns the factor applied per branch.
    """
    words = model.llm.get_input_embeddings().weight.norm(dim=-1).mean()
    rows = torch.arange(min(sample, next(iter(feats.values())).shape[0]))
    tokens = stages.media_tokens(model, {k: v[rows].float() for k, v in feats.items()})  # k -> (B, Q, D)
    factors = {}
    for name, proj in (("video", model.video_proj), ("audio", model.audio_proj)):
        if name in tokens and proj is not None:
            factor = float(words / tokens[name].norm(dim=-1).mean())
            proj.weight.mul_(factor)
            proj.bias.mul_(factor)
            factors[name] = factor
    return factors


def run_lm_stage(model, examples: list[stages.Example], feats: dict[str, torch.Tensor], spec: StageSpec,
                 out: Path, acc, resume: bool, recipe: Recipe | None = None, scenes: list | None = None) -> None:
    """Stage 1 or 2 on ``examples``; with ``spec.clip_attribute_weight`` and the clips' ``scenes``,
    the video soft tokens also answer clip-level attribute questions (``train/clip_attributes.py``)."""
    params = stages.branch_parameters(model, spec.branches)
    model.train()
    if recipe is not None:  # the LLM's LoRA adapter trains beside the Q-Formers where the recipe says
        params = llm_lora.with_lora(model, spec, recipe, params)
    head = _clip_attribute_head(model, spec, scenes, acc.device)
    if head is not None:
        params = params + [(f"{clip_attributes.PREFIX}{n}", p) for n, p in head.named_parameters()]
    cfg = spec.train
    prefixes = stages.PrefixCache()

    buckets = length_buckets(examples, prefix_groups(examples), 4 * cfg.batch_size)

    def batch_fn(index: int, rank: int, world: int):
        g = batch_generator(cfg.seed, index, rank)
        if len(examples) <= cfg.batch_size:
            rows = list(range(len(examples)))  # a tiny set (--quick): the same full batch each step
        else:
            rows = draw_rows(buckets, cfg.batch_size, g)
        batch = [examples[r] for r in rows]
        # Drawn after the rows, so the LM batches are those of a run without the head.
        clips = clip_attributes.clip_batch(len(scenes), spec.clip_attribute_batch, g) if head is not None else None
        return batch, batch_features(batch, feats, acc.device), clips

    def loss_fn(batch):
        exs, f, clips = batch
        loss, n = stages.lm_batch_loss(model, exs, f, prefixes, spec.centre_weight)
        if head is not None:  # the logged loss then includes it
            tokens = model.video_tokens(feats["video"][clips].float().to(acc.device))  # (b, Qv, D)
            loss = loss + spec.clip_attribute_weight * head.loss(tokens, [scenes[i] for i in clips.tolist()])
        return loss, n

    _run_stage(spec, params, loss_fn, batch_fn, out, acc, resume, lambda d: save_folder(model, d))
    model.eval()


def _clip_attribute_head(model, spec: StageSpec, scenes: list | None,
                         device) -> clip_attributes.ClipAttributeHead | None:
    if not spec.clip_attribute_weight:
        return None
    if scenes is None or "video" not in spec.branches:
        raise ValueError(f"{spec.name}.clip_attribute_weight asks the video soft tokens about the clips' scenes: "
                         "it needs the video branch and the toy world's scenes")
    # The head starts from the stage's seed whatever ran before, and the recipe's random stream
    # goes on as if it had not been built.
    words = None
    if spec.clip_attribute_readout != "linear":
        words = clip_attributes.answer_words(model.tokenizer, model.llm.get_input_embeddings().weight,
                                             time=spec.clip_attribute_readout == "words+time")
    with torch.random.fork_rng():
        torch.manual_seed(spec.train.seed)
        head = clip_attributes.ClipAttributeHead(model.video_proj.out_features, words=words)
    return head.to(device)


def prefix_groups(examples: list[stages.Example]) -> list[list[int]]:
    """Indices of ``examples`` grouped by their first piece (the prompt up to the first media
    slot: one group per system prompt and media message form), in order of first appearance."""
    groups: dict = {}
    for i, ex in enumerate(examples):
        first = ex.pieces[0]
        groups.setdefault(first if isinstance(first, str) else tuple(first), []).append(i)
    return list(groups.values())


def draw_rows(buckets: list[list[int]], batch_size: int, g: torch.Generator) -> list[int]:
    """One batch of example indices, all from one bucket.

    One bucket per batch: one prompt form, so the prefix cache serves every batch, and (with
    ``length_buckets``) lengths alike, so little is padding. The bucket is drawn by its size and
    the rows uniformly in it, with replacement: each example is as likely as in a uniform draw
    from all of them.
    """
    sizes = torch.tensor([len(b) for b in buckets], dtype=torch.float)
    bucket = buckets[int(torch.multinomial(sizes, 1, generator=g))] if len(buckets) > 1 else buckets[0]
    return [bucket[r] for r in torch.randint(len(bucket), (batch_size,), generator=g).tolist()]


def length_buckets(examples: list[stages.Example], groups: list[list[int]], size: int) -> list[list[int]]:
    """Each group's indices sorted by text length and cut into runs of ``size``.

    Within one prompt form every example has the same media slots, so its text length orders
    the sequence lengths. A batch drawn from all of a form's examples is padded to its longest
    (toy-world stage 2: 31% of the LLM's positions were padding); drawn from a bucket of 64
    alike, 0.2% (``python bench/train_bench.py --part sampling --clips 2000``).
    """
    def text_len(i: int) -> int:
        return sum(len(p) for p in examples[i].pieces if not isinstance(p, str))

    out = []
    for group in groups:
        ordered = sorted(group, key=text_len)  # stable: equal lengths keep their order
        out += [ordered[k:k + size] for k in range(0, len(ordered), size)]
    return out


def batch_features(batch: list[stages.Example], feats: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """The precomputed features of a batch's clips, plus each image example's frame."""
    clips = torch.tensor([ex.clip for ex in batch])
    out = {k: v[clips].float().to(device) for k, v in feats.items()}
    if any("image" in ex.pieces for ex in batch):
        frames = torch.tensor([ex.frame for ex in batch])
        out["image"] = feats["video"][clips, frames][:, None].float().to(device)  # (B, 1, Qi, H)
    return out


def _run_stage(spec: StageSpec, params, loss_fn, batch_fn, out: Path, acc, resume: bool, save_fn) -> None:
    folder = out / spec.name
    done = folder / "done.json"
    if resume and done.exists():
        state = load_training_state(folder / STATE_FILE)
        names = dict(params)
        missing, extra = sorted(set(names) - set(state["params"])), sorted(set(state["params"]) - set(names))
        if missing or extra:  # e.g. audio_from=vision now, but this stage 0 ran without the image tower
            raise ValueError(f"{folder} finished with other settings than this run's: "
                             f"{len(missing)} parameters this run trains are not in it ({', '.join(missing[:3])}"
                             f"{', ...' if len(missing) > 3 else ''}) and {len(extra)} of its are unknown here "
                             f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}); resume with the "
                             f"settings it ran with, or delete {folder} (and the stages after it) to train it again")
        with torch.no_grad():
            for n, t in state["params"].items():
                names[n].copy_(t)
        _log(f"{spec.name}: already finished, weights restored from {folder}")
        return
    t0 = time.time()
    result = run(spec.name, params, loss_fn, batch_fn, spec.train, folder, save_fn, accelerator=acc,
                 resume=resume)
    summary = {"steps": result.end_step, "resumed_from": result.start_step, "seconds": time.time() - t0,
               "first_losses": result.losses[:5], "last_losses": result.losses[-5:]}
    if acc.is_main_process:
        done.write_text(json.dumps(summary, indent=2) + "\n")
    _log(f"{spec.name}: done {summary}")


# -- the whole recipe ------------------------------------------------------------------------
def run_toy_world(recipe: Recipe, out: Path, resume: bool = False, llm_precision: str = "auto") -> Path:
    """Run every stage of ``recipe``; returns the final model folder ``<out>/final``."""
    from model.llm import load_llm

    al_toy.check_stages(recipe.stages)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = VideoLlamaConfig.from_dict(recipe.model)
    acc = make_accelerator(recipe.stages[0].train)
    torch.manual_seed(recipe.world["seed"])
    model = build_model(cfg, device=acc.device, with_llm=False)
    t0 = time.time()
    pool = render_pool(cfg, recipe.world["n_train"], recipe.world["seed"])
    _log(f"rendered {len(pool.scenes)} training clips in {time.time() - t0:.0f} s")
    spec0, spec1, spec2 = recipe.stages
    tower = run_stage0(model, pool, spec0, out, acc, resume)
    # A resumed run keeps the probe of the stage 0 it restored (the probe takes minutes).
    if acc.is_main_process and not (resume and (out / spec0.name / "probe.json").exists()):
        run_probe(model, recipe, out / spec0.name)
    feats = precompute(model, pool)
    _log(f"frozen features: video {tuple(feats['video'].shape)}, audio {tuple(feats['audio'].shape)}")
    seen = None if tower is None else al_toy.frame_features(tower, pool, cfg.audio)  # (N, C, E)
    if seen is not None:
        _log(f"audio branch reads frames through the image tower: {tuple(seen.shape)}")
    feats1, feats2 = (al_toy.stage_features(feats, seen, s) for s in (spec1, spec2))
    # Gradients flow through the LLM, so no 4-bit here: bf16 where the hardware has it, else fp32.
    precision = stages.backprop_llm_precision(acc.device, llm_precision)
    model.llm, model.tokenizer = load_llm(cfg.llm, precision=precision, device=acc.device)
    stages.prepare_backprop_llm(model.llm, acc.device)
    _log(f"frozen LLM in {precision} ({model.llm.config._attn_implementation} attention)")
    if precision == "fp32" and acc.device.type == "cpu" and llm_precision == "auto":
        _log("this CPU has no native bf16 (AVX512-BF16 or AMX): stages 1 and 2 run the LLM in fp32, at about "
             "half the bf16 speed; the toy-world recipe then takes about 2 h 40 min on 2 cores, not about 80 min")
    llm_lora.attach(model, recipe)
    if model.llm_adapter:
        _log(f"LoRA on the LLM: {recipe.lora} at lr {recipe.lora_lr}, trained in "
             f"{', '.join(s.name for s in recipe.stages[1:] if s.train_lora) or 'no stage'}")
    model.generation_defaults = recipe.generation
    # Always, resumed or not: a stage 1 that has saved weights restores its projections over this, and
    # one that has not (a run resumed after stage 0) must start from rescaled ones as a fresh run does.
    _log(f"projections rescaled to word-embedding norm by {match_word_scale(model, feats1)}")
    limit = recipe.world.get("max_examples")  # --quick: a few examples, so the loss visibly falls
    examples1 = caption_examples(pool, model.tokenizer, image_share=spec1.image_share,
                                 audio_captions=al_toy.audio_captions(pool, spec1))[:limit]
    run_lm_stage(model, examples1, feats1, spec1, out, acc, resume, recipe, pool.scenes)
    examples2 = instruct_examples(pool, model.tokenizer, cfg, spec2.max_turns, yes_no_answers=spec2.yes_no_answers,
                                  no_sound_share=spec2.no_sound_share, image_share=spec2.image_share,
                                  open_answers=spec2.open_answers)[:limit]
    run_lm_stage(model, examples2, feats2, spec2, out, acc, resume, recipe, pool.scenes)
    final = out / "final"
    if acc.is_main_process:
        save_fp16_folder(model, final)
    _log(f"model folder written to {final}")
    return final


def caption_examples(pool: Pool, tokenizer, image_share: float = 0.0, seed: int = 0,
                     audio_captions: list[str] | None = None) -> list[stages.Example]:
    """Stage 1: [BOS] media caption [EOS], for the video and the audio branch of every clip.

    ``image_share``: that share of the clips also gives one sampled frame as a still image with
    its caption (the paper's image-text pairs, through the video path with T = 1).
    ``audio_captions``: the audio branch's caption per clip (default: its sound caption).
    """
    audio_captions = audio_captions or pool.sound_captions
    rng = np.random.default_rng([seed, 1])
    out = []
    for i in range(len(pool.scenes)):
        out += [stages.caption_example(tokenizer, cap, "video", clip=i) for cap in pool.video_captions[i]]
        out.append(stages.caption_example(tokenizer, audio_captions[i], "audio", clip=i))
        if image_share and rng.random() < image_share and (k := image_frame(pool, i, rng)) is not None:
            text = image_caption(frame_scene(pool.scenes[i], pool.frame_times[i][k]))
            out.append(stages.caption_example(tokenizer, text, "image", clip=i, frame=k))
    return out


def image_frame(pool: Pool, clip: int, rng: np.random.Generator) -> int | None:
    """One of the clip's sampled frames that shows a shape (None if none does)."""
    shown = [k for k, objs in enumerate(pool.frame_objs[clip]) if objs]
    return int(rng.choice(shown)) if shown else None


def _image_conversations(pool: Pool, tokenizer, cfg: VideoLlamaConfig, clip: int, rng: np.random.Generator,
                         max_turns: int, yes_no_answers: str, open_answers: str = "short") -> list[stages.Example]:
    """Colour, shape and count questions about one frame of ``clip`` given as a still image,
    packed into conversations; its description, a longer answer, in a conversation of its own."""
    k = image_frame(pool, clip, rng)
    if k is None:
        return []
    qas = image_qa(frame_scene(pool.scenes[clip], pool.frame_times[clip][k]), rng)
    short = [qa for qa in qas if qa.skill != "description"]
    groups = [[qa] for qa in qas if qa.skill == "description"] + list(_packed(short, rng, max_turns))
    return [_conversation(tokenizer, cfg, clip, group, yes_no_answers, frame=k, open_answers=open_answers)
            for group in groups]


def _packed(qas: list, rng: np.random.Generator, max_turns: int):
    """``qas`` shuffled, in groups of 1 to ``max_turns``; lazy, so a caller's own draws from
    ``rng`` between groups keep their place in its sequence."""
    order = rng.permutation(len(qas))
    k = 0
    while k < len(order):
        n = int(rng.integers(1, max_turns + 1))
        yield [qas[j] for j in order[k:k + n]]
        k += n


def instruct_examples(pool: Pool, tokenizer, cfg: VideoLlamaConfig, max_turns: int = 1, seed: int = 0,
                      yes_no_answers: str = "verdict", no_sound_share: float = 0.0,
                      image_share: float = 0.0, open_answers: str = "short") -> list[stages.Example]:
    """Stage 2: the questions of every clip in the chat prompt inference uses.

    ``max_turns`` > 1 packs a clip's short questions into conversations of 1 to ``max_turns``
    turns (the media message comes with the first question, as in the app's chat). Media
    tokens and the long media message then serve several answers: on CPU, where the LLM
    forward is the whole cost, that is about three times the answers per second for the
    same steps. Long description answers stay single-turn. ``yes_no_answers`` is one of
    ``train.recipes.YES_NO_ANSWERS``, ``open_answers`` one of ``train.recipes.OPEN_ANSWERS``.

    ``no_sound_share``: that share of the conversations show the video as a file without a
    sound track (video tokens only, the original's frame-time message), as the chat engine
    does for such files; their questions about sound move to a conversation of their own,
    with sound. At 0 every conversation has both branches, and the examples are unchanged.

    ``image_share``: that share of the clips also gives one sampled frame as a still image, with
    colour, shape and count questions about it (``train.world.qa.image_qa``) in the engine's
    image prompt. Drawn from a generator of its own, so the video conversations stay the same.
    """
    if yes_no_answers not in YES_NO_ANSWERS:
        raise ValueError(f"yes_no_answers must be one of {YES_NO_ANSWERS}, not {yes_no_answers!r}")
    if open_answers not in OPEN_ANSWERS:
        raise ValueError(f"open_answers must be one of {OPEN_ANSWERS}, not {open_answers!r}")
    rng = np.random.default_rng(seed)
    image_rng = np.random.default_rng([seed, 1])
    out = []
    for i, qas in enumerate(pool.qas):
        if image_share and image_rng.random() < image_share:
            out += _image_conversations(pool, tokenizer, cfg, i, image_rng, max_turns, yes_no_answers, open_answers)
        frame_times = pool.frame_times[i] if no_sound_share else None
        out += clip_conversations(tokenizer, cfg, i, qas, rng, max_turns, yes_no_answers, no_sound_share, frame_times,
                                  open_answers)
    return out


def clip_conversations(tokenizer, cfg: VideoLlamaConfig, clip: int, qas: list, rng: np.random.Generator,
                       max_turns: int = 1, yes_no_answers: str = "verdict", no_sound_share: float = 0.0,
                       frame_times: list[float] | None = None, open_answers: str = "short") -> list[stages.Example]:
    """Stage-2 conversations about one clip's questions (``instruct_examples`` without the still
    images); ``frame_times`` (the clip's sampled frame times) is needed when ``no_sound_share`` > 0."""
    out = []
    short = []
    for qa in qas:
        if qa.skill == "description":
            if clip % 3 == 0:  # long answers, not a scored skill: keep a third of them
                out.append(_conversation(tokenizer, cfg, clip, [qa], yes_no_answers, open_answers=open_answers))
        else:
            short.append(qa)
    for turn_qas in _packed(short, rng, max_turns):
        # Drawn only when asked for, so the default recipe's examples stay as they were.
        if no_sound_share and rng.random() < no_sound_share:
            seen = [qa for qa in turn_qas if qa.skill not in SOUND_SKILLS]
            heard = [qa for qa in turn_qas if qa.skill in SOUND_SKILLS]
            if seen:
                message = frame_message(frame_times)
                out.append(_conversation(tokenizer, cfg, clip, seen, yes_no_answers, frame_message=message,
                                         open_answers=open_answers))
                turn_qas = heard
        if turn_qas:
            out.append(_conversation(tokenizer, cfg, clip, turn_qas, yes_no_answers, open_answers=open_answers))
    return out


def _target(qa, yes_no_answers: str, open_answers: str = "short") -> str:
    """What the model learns to answer: the short answer ("Red.", "No."), or for a yes/no
    question with "fact-first" the fact then the verdict ("The circle is red, so no."), for an
    open question with "sentence" the whole fact ("The circle is red."); a description whole."""
    if qa.skill == "description":
        return qa.answer
    if qa.kind == "yes_no" and yes_no_answers == "fact-first":
        return qa.full
    if qa.kind == "open" and open_answers == "sentence":
        return qa.full
    return qa.answer[:1].upper() + qa.answer[1:] + "."


def _conversation(tokenizer, cfg: VideoLlamaConfig, clip: int, qas: list, yes_no_answers: str,
                  frame_message: str | None = None, frame: int | None = None,
                  open_answers: str = "short") -> stages.Example:
    """One conversation about ``clip``; with a ``frame_message``, about the video without its
    sound; with a ``frame``, about that frame as a still image."""
    turns = [(qa.question, _target(qa, yes_no_answers, open_answers)) for qa in qas]
    if frame is not None:
        pieces, sup = stages.conversation_example(tokenizer, cfg.llm.template, turns, kind="image",
                                                  with_audio=False, slot_names={"video": "image"})
    else:
        pieces, sup = stages.conversation_example(tokenizer, cfg.llm.template, turns,
                                                  with_audio=frame_message is None, frame_message=frame_message or "")
    kind = "image" if frame is not None else "video" if frame_message is None else "video without sound"
    return stages.Example(pieces, sup, clip=clip, frame=frame or 0,
                          meta={"skill": qas[0].skill, "kind": qas[0].kind, "turns": len(qas),
                                "sound": frame is None and frame_message is None, "media": kind})
