"""Stage-0 probe: do the frozen encoders' features hold what the world's questions ask?

    python -m train.probe [--model checkpoints/toy-world] [--clips 400] [--steps 400]

Renders held-out toy-world clips (a seed no recipe trains on), encodes them with the frozen
encoders (the features stages 1 and 2 train on), and fits small attention probes by 5-fold
cross-validation (each clip scored once, by a probe trained on the other 80%): a learned question
query ("colour of the triangle", "count", "pitch") attends over one frame's image-query tokens
(video) or one clip's window embeddings (audio), and a linear read-out answers.
Held-out accuracy per attribute is compared with what the LLM stages need:

================================  =========  ======
attribute                         threshold  chance
================================  =========  ======
colour, shape, count (0-1 shape)  0.95       1/7, 1/4, 1/2
colour-shape binding (2-3 shapes) 0.90       ~1/5
count (2-3 shapes)                0.90       1/2
position (x, y bin of a shape)    0.90       1/5
pitch, pattern (audio)            0.95       1/2, 1/5
================================  =========  ======

Binding asks the colour of a named shape and the shape of a named colour in frames with
several shapes: whether the features say which colour goes with which shape. Position asks in
which of the stage-0 descriptions' 5 bins along x and along y a named shape is: motion is a change
of position from frame to frame, so features without it leave motion unanswerable. No reader (Q-Former,
LLM) can answer better than the features allow, so a row under its threshold is printed with a
WARNING: stage 0 is what to fix. ``train --recipe toy-world`` runs this right after stage 0.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from train.world.pool import POSITION_BINS
from train.world.scene import COLOURS, PATTERNS, PITCHES, SHAPES

PROBE_SEED = 23  # a render seed no training recipe uses
MAX_VALUES = 8  # question values (shape / colour index) per kind; colours are 7
SINGLE, MULTI, AUDIO = 0.95, 0.9, 0.95
# row name -> (threshold, chance); the order is the table's
ROWS = {
    "colour (one shape)": (SINGLE, 1 / len(COLOURS)),
    "shape (one shape)": (SINGLE, 1 / len(SHAPES)),
    "count (0-1 shapes)": (SINGLE, 1 / 2),
    "colour-shape binding (2-3 shapes)": (MULTI, 0.5 * (1 / len(COLOURS) + 1 / len(SHAPES))),
    "count (2-3 shapes)": (MULTI, 1 / 2),
    "position (x, y bin of a shape)": (MULTI, 1 / POSITION_BINS),
    "pitch (audio)": (AUDIO, 1 / len(PITCHES)),
    "pattern (audio)": (AUDIO, 1 / len(PATTERNS)),
}
VIDEO_KINDS = ("colour of shape", "shape of colour", "count", "x of shape", "y of shape")
AUDIO_KINDS = ("pitch", "pattern")
# Cross-validation folds: one 80/20 split scored 80 clips, and its shape row moved by 0.03 between
# fits (400 or 800 steps), as much as a stage 0 gains; five folds score every clip, each by a
# probe that never saw it (bench/probe_spread.py prints both protocols' spread over seeds).
FOLDS = 5


@dataclass
class Item:
    """One probe question: which token set (``clip``, ``frame``), which question, its answer,
    and the table row it counts for."""

    clip: int
    frame: int
    kind: int  # index into the kinds of its branch
    value: int  # which shape / colour is asked about (0 for count, pitch, pattern)
    answer: int
    row: str


@dataclass
class ProbeRow:
    name: str
    accuracy: float
    n: int  # held-out questions
    threshold: float
    chance: float

    @property
    def ok(self) -> bool:
        return self.accuracy >= self.threshold


def video_items(frame_objs: list[list[list[tuple]]]) -> list[Item]:
    """Questions about every sampled frame: its count; the colour and place (x and y bin) of each
    shape that is unique in the frame and the shape of each colour that is unique (else the question
    has no one answer).
    ``frame_objs``: clip x frame x objects (size, colour, shape, x bin, y bin)."""
    items = []
    for c, frames in enumerate(frame_objs):
        for t, objs in enumerate(frames):
            n = len(objs)
            several = n >= 2
            items.append(Item(c, t, 2, 0, min(n, 3), "count (2-3 shapes)" if several else "count (0-1 shapes)"))
            shapes, colours = [o[2] for o in objs], [o[1] for o in objs]
            for _, colour, shape, x, y in objs:
                if shapes.count(shape) == 1:
                    row = "colour-shape binding (2-3 shapes)" if several else "colour (one shape)"
                    items.append(Item(c, t, 0, SHAPES.index(shape), COLOURS.index(colour), row))
                    items.append(Item(c, t, 3, SHAPES.index(shape), x, "position (x, y bin of a shape)"))
                    items.append(Item(c, t, 4, SHAPES.index(shape), y, "position (x, y bin of a shape)"))
                if colours.count(colour) == 1:
                    row = "colour-shape binding (2-3 shapes)" if several else "shape (one shape)"
                    items.append(Item(c, t, 1, COLOURS.index(colour), SHAPES.index(shape), row))
    return items


def audio_items(scenes) -> list[Item]:
    """The clip's pitch when all its tones share one, and its pattern when it has one kind of
    sound (silence counts as the pattern "silent"), as the world's open sound questions ask."""
    items = []
    for c, scene in enumerate(scenes):
        pitches = {s.pitch for s in scene.sounds if s.pitch is not None}
        if len(pitches) == 1 and all(s.pitch is not None for s in scene.sounds):
            items.append(Item(c, 0, 0, 0, PITCHES.index(next(iter(pitches))), "pitch (audio)"))
        patterns = {s.pattern for s in scene.sounds} or {"silent"}
        if len(patterns) == 1:
            items.append(Item(c, 0, 1, 0, PATTERNS.index(next(iter(patterns))), "pattern (audio)"))
    return items


class AttentionProbe(nn.Module):
    """A question query attends over a token set; a small MLP reads the answer."""

    def __init__(self, width: int, kinds: int, answers: int = 8, heads: int = 4) -> None:
        super().__init__()
        self.question = nn.Embedding(kinds * MAX_VALUES, width)  # (kind, value) pairs
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads if width % heads == 0 else 1, batch_first=True)
        self.out = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, answers))

    def forward(self, tokens: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        q = self.question(question)[:, None]  # (B, 1, W)
        kv = self.norm(tokens)  # (B, Q, W)
        pooled, _ = self.attn(q, kv, kv)  # (B, 1, W)
        return self.out(pooled[:, 0] + q[:, 0])  # (B, answers)


def fit_probe(tokens: torch.Tensor, items: list[Item], kinds: int, held: torch.Tensor, steps: int,
              seed: int = 0, batch: int = 512) -> torch.Tensor:
    """Train on the items of the clips not in ``held``; return right/wrong (bool) per held-out item,
    in the order of ``items``.

    ``tokens``: (clips, frames, Q, W) for video or (clips, 1, Q, W) for audio; ``held``: (clips,) bool.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clip = torch.tensor([it.clip for it in items])
    x = tokens[clip, torch.tensor([it.frame for it in items])].float()  # (items, Q, W)
    question = torch.tensor([it.kind * MAX_VALUES + it.value for it in items])
    answer = torch.tensor([it.answer for it in items])
    is_held = held[clip]
    probe = AttentionProbe(x.shape[-1], kinds)
    opt = torch.optim.AdamW(probe.parameters(), lr=3e-3, weight_decay=1e-4)
    rows = (~is_held).nonzero()[:, 0]
    for _ in range(steps):
        pick = rows[torch.randint(len(rows), (min(batch, len(rows)),), generator=g)]
        loss = F.cross_entropy(probe(x[pick], question[pick]), answer[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
    probe.eval()
    with torch.no_grad():
        return probe(x[is_held], question[is_held]).argmax(-1) == answer[is_held]


def fold_masks(n_clips: int, folds: int = FOLDS) -> list[torch.Tensor]:
    """``folds`` contiguous blocks of clips, each held out once: every clip is scored, by a probe
    that never trained on it."""
    block = torch.arange(n_clips) * folds // n_clips  # (clips,) fold index
    return [block == k for k in range(folds)]


def holdout_mask(n_clips: int, train_share: float = 0.8) -> list[torch.Tensor]:
    """One split: the last ``1 - train_share`` of the clips held out (the probe before cross-validation)."""
    return [torch.arange(n_clips) >= int(train_share * n_clips)]


def probe_features(video: torch.Tensor | None, audio: torch.Tensor | None, frame_objs, scenes, steps: int,
                   held: list[torch.Tensor] | None = None, seed: int = 0) -> list[ProbeRow]:
    """Probe accuracy per row of ``ROWS`` over the held-out clips of every split in ``held``
    (default ``fold_masks``: each clip once).

    ``video``: (N, T, Qi, H) frozen frame features; ``audio``: (N, C, E) clip-window embeddings
    (either may be None for a model without that branch). Rows without a held-out question are left out.
    """
    splits = fold_masks(len(scenes)) if held is None else held
    results: dict[str, list[bool]] = {name: [] for name in ROWS}
    for tokens, items, kinds in ((video, video_items(frame_objs) if video is not None else [], len(VIDEO_KINDS)),
                                 (audio[:, None] if audio is not None else None,
                                  audio_items(scenes) if audio is not None else [], len(AUDIO_KINDS))):
        if tokens is None or not items:
            continue
        for mask in splits:
            is_held = mask.tolist()  # a list: indexing a tensor per item is slow
            held_items = [it for it in items if is_held[it.clip]]
            if not held_items or len(held_items) == len(items):
                continue  # nothing to score, or nothing to train on
            right = fit_probe(tokens, items, kinds, mask, steps, seed)
            for it, ok in zip(held_items, right.tolist(), strict=True):
                results[it.row].append(ok)
    return [ProbeRow(name, sum(v) / len(v), len(v), *ROWS[name]) for name, v in results.items() if v]


def format_table(rows: list[ProbeRow]) -> str:
    """The probe's table, then one WARNING line per row under its threshold."""
    lines = [f"  {'attribute':36s} {'held-out':>9s} {'(n)':>6s} {'needs':>6s} {'chance':>7s}"]
    for r in rows:
        flag = "" if r.ok else "  <-- under threshold"
        lines.append(f"  {r.name:36s} {r.accuracy:9.3f} {r.n:6d} {r.threshold:6.2f} {r.chance:7.2f}{flag}")
    lines += [f"WARNING: stage-0 probe: {r.name} is {r.accuracy:.3f}, under its threshold {r.threshold:.2f}: "
              "the frozen features do not hold it well enough for stages 1 and 2 to answer it"
              for r in rows if not r.ok]
    return "\n".join(lines)


def save_report(rows: list[ProbeRow], folder: Path, header: str = "") -> None:
    """``probe.json`` (rows) and ``probe.txt`` (the printed table) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = [{**asdict(r), "ok": r.ok} for r in rows]
    (folder / "probe.json").write_text(json.dumps(data, indent=2) + "\n")
    (folder / "probe.txt").write_text((header + "\n" if header else "") + format_table(rows) + "\n")


def describe(clips: int, steps: int, seconds: float, folds: int = FOLDS) -> str:
    """The table's header line: what was probed and how."""
    return (f"{clips} held-out clips (seed {PROBE_SEED}), {folds}-fold: each scored by a probe trained on the "
            f"other {clips - clips // folds} clips for {steps} steps, {seconds:.0f} s")


@dataclass
class ProbeClips:
    """Held-out clips encoded once, to probe as often as wanted (``probe_features`` arguments)."""

    video: torch.Tensor | None  # (N, T, Qi, H)
    audio: torch.Tensor | None  # (N, C, E)
    frame_objs: list
    scenes: list


def encode_clips(model, clips: int, seed: int = PROBE_SEED) -> ProbeClips:
    """Render ``clips`` held-out clips and encode them with ``model``'s frozen encoders."""
    from train.world.pool import precompute, render_pool

    pool = render_pool(model.config, clips, seed)
    feats = precompute(model, pool)
    return ProbeClips(feats.get("video"), feats.get("audio"), pool.frame_objs, pool.scenes)


def probe_model(model, clips: int, steps: int, seed: int = PROBE_SEED) -> list[ProbeRow]:
    """Render and encode ``clips`` held-out clips, probe their features."""
    c = encode_clips(model, clips, seed)
    return probe_features(c.video, c.audio, c.frame_objs, c.scenes, steps)


def main(argv: list[str] | None = None) -> int:
    import time

    from model.weights.checkpoint import load_model

    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=root / "checkpoints" / "toy-world", help="model folder")
    parser.add_argument("--clips", type=int, default=400, help="held-out clips (5 folds: each scored once)")
    parser.add_argument("--steps", type=int, default=400, help="probe training steps (batches of 512 questions)")
    parser.add_argument("--out", type=Path, default=None, help="also write probe.json and probe.txt here")
    args = parser.parse_args(argv)
    t0 = time.time()
    model = load_model(args.model, device="cpu")
    rows = probe_model(model, args.clips, args.steps)
    header = f"stage-0 probe of {args.model}: " + describe(args.clips, args.steps, time.time() - t0)
    print(header)
    print(format_table(rows))
    if args.out is not None:
        save_report(rows, args.out, header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
