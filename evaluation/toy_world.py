"""`python launch.py eval --suite toy-world [--model DIR] [--json]`: held-out accuracy per skill.

Held-out clips of the synthetic world are rendered to real mp4 files and asked about through
the same path as the app: ``load_media`` and the chat engine, greedy decoding. Two held-out
sets (``--split``): ``new-clips``, scenes never trained on, drawn like the training scenes
(another seed), and ``new-pairs``, the world's ``test`` split, where every scene holds a
colour/shape pair that training never shows (composition, a harder test). Free-text answers are scored by keywords
(``train.world.qa.score_answer``). A second set checks generalisation beyond our renderer:
clips drawn by ffmpeg's own filters with an ffmpeg sine tone, asked for colour and pitch
(skills ``another_way_colour`` and ``another_way_pitch``). ``--no-sound`` gives each video as
a file without a sound track and ``--images`` one frame of each clip as a still PNG image, the
two other forms the app sends.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from model.chat.generate import GenerationSettings, load_generation_defaults
from train.world.qa import NO, QA, SOUND_SKILLS, YES, make_qa, score_answer
from train.world.scene import COLOURS, sample_scene, scene_rng

SUITES = ("toy-world",)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "checkpoints" / "toy-world"
SAYS_YES = QA("", "", "yes", "", YES, NO, "yes_no")  # scores whether an answer's verdict is "yes"
EVAL_SEED = 7  # scenes of the eval; training draws its scenes with seed 1
SPLITS = {"new-clips": "train", "new-pairs": "test"}  # --split -> the world's split to draw from


@dataclass
class Item:
    path: str  # media file
    qa: QA
    # The scene as text, per media slot ("video": what is seen, "audio": what is heard): what a
    # perfect perception would hand the LLM (``--oracle-text``).
    context: dict | None = None
    shapes: int | None = None  # how many shapes the scene (or frame) shows; None: not a world scene


# -- scoring ------------------------------------------------------------------------------
def score(items: Iterable[Item], answers: Iterable[str]) -> dict:
    """Scores of the answers given to ``items`` in order.

    ``accuracy`` maps each skill to the fraction right and ``n`` counts the questions. Three
    diagnostics follow: ``by_form``, each skill's accuracy on open and on yes/no questions
    apart; ``by_shapes``, each skill's accuracy by how many shapes the scene shows ("1", "2",
    "3"; world scenes only), since naming one shape's colour or motion among several needs the
    model to bind it to the right shape; and ``says_yes``, how often a yes/no answer is "yes"
    when the claim is true and when it is false (a model that checks claims says yes to the true
    ones only; one that guesses says yes to both about equally).
    """
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    # (skill, open / yes_no) and (skill, shape count) -> [right, asked]
    by_form: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    by_shapes: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    yes = {True: [0, 0], False: [0, 0]}  # claim true? -> [answers saying yes, yes/no questions]
    n = 0
    for item, answer in zip(items, answers, strict=True):
        qa, ok = item.qa, bool(score_answer(item.qa, answer))
        total[qa.skill] += 1
        right[qa.skill] += ok
        _tally(by_form[(qa.skill, qa.kind)], ok)
        if item.shapes is not None:
            _tally(by_shapes[(qa.skill, str(item.shapes))], ok)
        if qa.kind == "yes_no":
            truth = qa.answer == "yes"
            yes[truth][0] += score_answer(SAYS_YES, answer)
            yes[truth][1] += 1
        n += 1
    says_yes = {name: yes[truth][0] / yes[truth][1]
                for name, truth in (("true_claims", True), ("false_claims", False)) if yes[truth][1]}
    return {"accuracy": {k: right[k] / total[k] for k in total}, "n": n, "by_form": _rates(by_form),
            "by_shapes": _rates(by_shapes), "says_yes": says_yes}


def _tally(counts: list[int], ok: bool) -> None:
    counts[0] += ok
    counts[1] += 1


def _rates(counts: dict[tuple[str, str], list[int]]) -> dict[str, dict[str, float]]:
    """{(skill, part): [right, asked]} -> {skill: {part: fraction right}}, parts in sorted order."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (skill, part), (right, asked) in sorted(counts.items()):
        out[skill][part] = right / asked
    return dict(out)


# -- the question sets --------------------------------------------------------------------
def heldout_items(folder: Path, n_clips: int, seed: int = EVAL_SEED, split: str = "new-pairs") -> list[Item]:
    """Render ``n_clips`` scenes of ``split`` (see ``SPLITS``) into ``folder`` (kept for reuse)
    with their questions."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    world_split = SPLITS[split]
    if world_split == "train" and seed == 1:
        raise ValueError("seed 1 draws the training scenes; held-out clips need another seed")
    return scene_items(folder, n_clips, seed, world_split)


def scene_items(folder: Path, n_clips: int, seed: int, world_split: str) -> list[Item]:
    """The first ``n_clips`` scenes the world draws for ``seed`` and ``world_split``, rendered into
    ``folder`` (kept for reuse), with their questions; any seed, the training one included."""
    from train.world.render import render_clip

    items = []
    for i in range(n_clips):
        rng = scene_rng(seed, world_split, i)
        scene = sample_scene(rng, world_split)
        path = folder / f"{world_split}-{seed}-{i:04d}.mp4"
        if not path.exists():
            render_clip(scene, path)
        context = scene_text(scene)
        items += [Item(str(path), qa, context, len(scene.shapes)) for qa in make_qa(scene, rng)]
    return items


def image_items(folder: Path, n_clips: int, seed: int = EVAL_SEED, split: str = "new-clips") -> list[Item]:
    """One frame of each of the ``n_clips`` held-out scenes (the scenes ``heldout_items`` draws),
    saved as a PNG still image, with colour, shape and count questions about what it shows."""
    import numpy as np
    from PIL import Image

    from train.world.qa import frame_scene, image_qa
    from train.world.render import render_frames

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    world_split = SPLITS[split]
    items = []
    for i in range(n_clips):
        scene = sample_scene(scene_rng(seed, world_split, i), world_split)
        fps = scene.config.fps
        frames = render_frames(scene)  # (N, H, W, 3)
        rng = np.random.default_rng([seed, 2, i])
        shown = [k for k in range(len(frames)) if any(s.visible(k / fps) for s in scene.shapes)]
        k = int(rng.choice(shown))
        path = folder / f"{world_split}-{seed}-{i:04d}-frame{k:02d}.png"
        if not path.exists():
            Image.fromarray(frames[k]).save(path)
        still = frame_scene(scene, k / fps)
        items += [Item(str(path), qa, shapes=len(still.shapes)) for qa in image_qa(still, rng)]
    return items


ANOTHER_WAY_CLIPS = 56  # 7 colours x (low, high) x (square, circle) x 2 draws of size, place and tone
# Pitches across the audible range (the world draws 50-500 Hz low and 750-7000 Hz high since the
# model of session 16 called tones above 1.9 kHz low); the top stays under the 8 kHz Nyquist limit of
# the model's 16 kHz audio. The tones are ffmpeg's sine source, not the world's renderer.
ANOTHER_WAY_HZ = {"low": (60.0, 450.0), "high": (800.0, 6000.0)}
ANOTHER_WAY_EXTENT = (0.12, 0.5)  # the shape's side / diameter as a fraction of the frame


def another_way_specs(n: int = ANOTHER_WAY_CLIPS, seed: int = 0) -> list[dict]:
    """What each ffmpeg-drawn clip shows: colour, shape, pitch label, size, place, tone (Hz).

    Colours cycle fastest, then the pitch label, then the shape, so every (colour, pitch, shape)
    comes up as evenly as ``n`` allows; size, place and frequency are drawn (log-uniform in Hz).
    """
    import numpy as np

    rng = np.random.default_rng([seed, 23])
    specs = []
    for i in range(n):
        pitch = ("low", "high")[(i // len(COLOURS)) % 2]
        extent = float(rng.uniform(*ANOTHER_WAY_EXTENT))
        half = extent / 2
        centre = (float(rng.uniform(half, 1 - half)), float(rng.uniform(half, 1 - half)))
        lo, hi = ANOTHER_WAY_HZ[pitch]
        specs.append({"colour": COLOURS[i % len(COLOURS)], "pitch": pitch,
                      "shape": ("square", "circle")[(i // (2 * len(COLOURS))) % 2], "extent": round(extent, 3),
                      "centre": (round(centre[0], 3), round(centre[1], 3)),
                      "freq_hz": round(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))})
    return specs


def another_way_items(folder: Path, n: int = ANOTHER_WAY_CLIPS) -> list[Item]:
    """``n`` ffmpeg-drawn clips (a still square or disc of varied size and place over a plain
    background, a sine tone anywhere in ``ANOTHER_WAY_HZ``): a colour and a pitch question each."""
    import train.world.render as render

    items = []
    for i, spec in enumerate(another_way_specs(n)):
        colour, pitch, shape = spec["colour"], spec["pitch"], spec["shape"]
        path = folder / (f"ffmpeg-{i:02d}-{shape}-{colour}-{pitch}-{spec['freq_hz']}hz-{spec['extent']}-"
                         f"{spec['centre'][0]}-{spec['centre'][1]}.mp4")
        if not path.exists():
            render.render_ffmpeg_clip(colour, pitch, path, shape=shape, extent=spec["extent"], centre=spec["centre"],
                                      freq_hz=spec["freq_hz"])
        others = [c for c in COLOURS if c != colour]
        items.append(Item(str(path), QA("another_way_colour", f"What colour is the {shape}?", colour,
                                        colour, [[colour]], others)))
        other = "low" if pitch == "high" else "high"
        items.append(Item(str(path), QA("another_way_pitch", "Is the sound high or low?", pitch, pitch,
                                        [[pitch]], [other])))
    return items


def scene_text(scene) -> dict:
    """The scene's canonical caption, split into what is seen and what is heard."""
    from train.world.pool import visual_caption
    from train.world.qa import _sound_sentence, captions

    return {"video": visual_caption(scene, captions(scene)[0]), "audio": _sound_sentence(scene)}


# -- answering ----------------------------------------------------------------------------
# What a video without its sound cannot answer (descriptions name the sound too).
NEEDS_SOUND = (*SOUND_SKILLS, "description", "another_way_pitch")


def without_sound(items: list[Item]) -> list[Item]:
    """The questions a video file without a sound track can still answer."""
    return [i for i in items if i.qa.skill not in NEEDS_SOUND]


EVAL_MAX_NEW_TOKENS = 96  # a description of three shapes and the sound fits; longer answers are cut


def engine_answerer(model_dir: Path, max_new_tokens: int = EVAL_MAX_NEW_TOKENS, use_audio: bool = True,
                    settings: GenerationSettings | None = None) -> Callable[[str, str], str]:
    """A function (media path, question) -> answer, through the chat engine; without
    ``use_audio`` each video is given as the engine gives a file that has no sound track.

    ``settings``: greedy by default; given (the folder's defaults), sampling is seeded (seed 0 for
    every question) so a run repeats, and answers are cut at ``max_new_tokens`` as greedy ones are.
    """
    from model.chat.engine import ChatEngine
    from model.weights.checkpoint import load_model

    engine = ChatEngine({"eval": load_model(model_dir)}, media_cache_items=8)
    if settings is None:
        settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False, temperature=0.0, seed=0)
    else:
        settings = replace(settings, max_new_tokens=min(settings.max_new_tokens, max_new_tokens), seed=0)

    def answer(path: str, question: str) -> str:
        conv = engine.new_conversation()
        engine.attach_media(conv, path, use_audio=use_audio)
        return "".join(engine.ask(conv, question, settings))

    return answer


def oracle_text_answerer(model_dir: Path, contexts: dict[str, dict],
                         max_new_tokens: int = 48) -> Callable[[str, str], str]:
    """The model's frozen LLM alone, with each media slot replaced by the scene as text.

    The same template and media message as the engine, greedy: what the LLM makes, zero-shot,
    of perfect perception handed over as words (the adapters also steer its answers, so this
    is a reference point, not a bound).
    """
    import torch

    from model.chat.builder import Dialogue, build_prompt
    from model.chat.prompts import IMAGE_SLOT, get_template, media_message, stop_strings
    from model.config import VideoLlamaConfig
    from model.llm import load_llm

    cfg = VideoLlamaConfig.from_file(Path(model_dir) / "config.json")
    llm, tok = load_llm(cfg.llm, root=model_dir)
    template = get_template(cfg.llm.template)
    stops = stop_strings(template, tok)

    @torch.no_grad()
    def answer(path: str, question: str) -> str:
        message, slots = media_message("video", with_audio=True)
        for slot in slots:  # the slots in order, each replaced by its text
            message = message.replace(IMAGE_SLOT, contexts[path][slot], 1)
        prompt = build_prompt(template, Dialogue(turns=[(question, None)], media_kind="video",
                                                 media_message=message), tok)
        ids = torch.tensor([[i for part in prompt.parts(tok) for i in part.ids]])  # (1, L): no slots left
        out = llm.generate(ids.to(llm.device), max_new_tokens=max_new_tokens, do_sample=False)
        text = tok.decode(out[0, ids.shape[1]:])
        for stop in stops:
            text = text.split(stop)[0]
        return text.strip()

    return answer


def evaluate(answer: Callable[[str, str], str], items: list[Item], progress: bool = True) -> tuple[dict, list]:
    """Ask every item; returns the score and a per-item record (for --dump)."""
    answers, records = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="eval", unit="q", file=sys.stderr)
    for item in items:
        text = answer(item.path, item.qa.question)
        answers.append(text)
        records.append({"path": item.path, "skill": item.qa.skill, "kind": item.qa.kind,
                        "question": item.qa.question, "expected": item.qa.answer, "answer": text,
                        "right": score_answer(item.qa, text), "shapes": item.shapes})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return score(items, answers), records


# -- command ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="toy-world", choices=SUITES, help="what to evaluate on")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model folder (default: the bundled one)")
    add_toy_arguments(parser)


def add_toy_arguments(parser: argparse.ArgumentParser) -> None:
    """The toy world's own options (``launch.py eval`` adds them beside the runner's)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object {accuracy, n, by_form, says_yes}")
    parser.add_argument("--clips", type=int, default=60, help="held-out clips (about 17 questions each)")
    parser.add_argument("--split", choices=tuple(SPLITS), default="new-clips",
                        help="new-clips: unseen scenes drawn like the training ones; new-pairs: every scene "
                             "holds a colour/shape pair never trained on (default %(default)s)")
    parser.add_argument("--no-another-way", action="store_true", help="skip the ffmpeg-drawn clips")
    parser.add_argument("--media-dir", type=Path, default=Path("runs") / "eval-media",
                        help="where the rendered clips are kept between runs")
    parser.add_argument("--dump", type=Path, default=None, help="write every question and answer (JSONL)")
    parser.add_argument("--no-sound", action="store_true",
                        help="give each video without its sound (as a file with no sound track) and ask only "
                             "the questions that need no sound")
    parser.add_argument("--images", action="store_true",
                        help="ask about one frame of each held-out clip, given as a still PNG image "
                             "(colour, shape and count)")
    parser.add_argument("--greedy-only", action="store_true",
                        help="skip the second pass with the model folder's own generation settings "
                             "(generation_config.json; reported as with_defaults)")
    parser.add_argument("--oracle-text", action="store_true",
                        help="ask the frozen LLM alone with the scene's caption in place of the media: "
                             "what the LLM makes of a perfect description, zero-shot")


def main(args: argparse.Namespace) -> int:
    if args.clips < 1:
        raise SystemExit("--clips must be at least 1")
    if args.images and (args.no_sound or args.oracle_text):
        raise SystemExit("--images asks about still images; it does not combine with --no-sound or --oracle-text")
    args.media_dir.mkdir(parents=True, exist_ok=True)
    if args.images:
        items = image_items(args.media_dir, args.clips, split=args.split)
        result, records = evaluate(engine_answerer(args.model), items, progress=not args.json)
        with_defaults(args, result, items, use_audio=True)
        return _report(args, result, records)
    items = heldout_items(args.media_dir, args.clips, split=args.split)
    if args.oracle_text:
        answerer = oracle_text_answerer(args.model, {i.path: i.context for i in items})
    else:
        if not args.no_another_way:
            items += another_way_items(args.media_dir)
        answerer = engine_answerer(args.model, use_audio=not args.no_sound)
    if args.no_sound:
        items = without_sound(items)
    result, records = evaluate(answerer, items, progress=not args.json)
    if not args.oracle_text:
        with_defaults(args, result, items, use_audio=not args.no_sound)
    return _report(args, result, records)


def with_defaults(args: argparse.Namespace, result: dict, items: list[Item], use_audio: bool) -> None:
    """Add ``result["with_defaults"]``: accuracy with the model folder's own generation settings
    (its generation_config.json), what chat, batch and the app start from. When those are greedy
    the answers are the greedy ones, so the greedy accuracy is reported without asking again."""
    if args.greedy_only:
        return
    defaults = load_generation_defaults(args.model)
    entry: dict = {"settings": asdict(defaults)}
    if defaults.greedy:
        entry.update(same_as_greedy=True, accuracy=dict(result["accuracy"]), n=result["n"])
    else:
        answerer = engine_answerer(args.model, use_audio=use_audio, settings=defaults)
        scored, _ = evaluate(answerer, items, progress=not args.json)
        entry.update(same_as_greedy=False, accuracy=scored["accuracy"], n=scored["n"])
    result["with_defaults"] = entry


def _report(args: argparse.Namespace, result: dict, records: list) -> int:
    if args.dump:
        args.dump.write_text("".join(json.dumps(r) + "\n" for r in records))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'skill':20s} {'all':>6s} {'open':>6s} {'yes/no':>6s} {'1 shape':>7s} {'2':>6s} {'3':>6s}")
        for skill, acc in sorted(result["accuracy"].items()):
            forms, shapes = result["by_form"][skill], result["by_shapes"].get(skill, {})
            cells = [f"{forms[k]:6.3f}" if k in forms else f"{'-':>6s}" for k in ("open", "yes_no")]
            cells += [f"{shapes[k]:{w}.3f}" if k in shapes else f"{'-':>{w}s}" for k, w in (("1", 7), ("2", 6), ("3", 6))]
            print(f"{skill:20s} {acc:6.3f} {' '.join(cells)}")
        print(f"{'questions':20s} {result['n']:6d}")
        defaults = result.get("with_defaults")
        if defaults is not None:
            how = "the same answers as greedy" if defaults["same_as_greedy"] else "sampled, seed 0"
            print(f"with the folder's generation settings ({how}): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in sorted(defaults["accuracy"].items())))
        for name, rate in result["says_yes"].items():
            print(f"says yes to {name.replace('_', ' ')}: {rate:.3f}")
    return 0
