"""What a model's frozen image encoder tells apart: a probe on the image Q-Former's output.

    python -m experiments.encoder_probe [--model checkpoints/toy-world] [--clips 600] [--steps 400]

Renders toy-world clips (the training split's generator with a seed training never used),
encodes every sampled frame with the model folder's frozen vision encoder + image Q-Former,
and fits a small probe on 80% of the clips: one learned question query (for example "colour
of the triangle") attending over the frame's query tokens, then a linear read-out. It prints
held-out accuracy per question kind, for frames holding one shape and frames holding two or
three. The second column is attribute binding: whether the features say which colour goes
with which shape, not only which colours and shapes are present. The LLM stages cannot
answer better than the frozen features allow, so this separates the encoder's share of an
eval error from the adapters' and the LLM's.

Chance levels: colour 1/7, shape 1/4, count 1/4 (0 to 3 shapes).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from model.weights.checkpoint import load_model
from train.toy_pipeline import precompute
from train.world.pool import render_pool
from train.world.scene import COLOURS, SHAPES

ROOT = Path(__file__).resolve().parents[1]

PROBE_SEED = 23  # a render seed no training recipe uses
KINDS = ("colour of shape", "shape of colour", "count")


def probe_items(frame_objs: list[list[list[tuple]]]) -> list[tuple[int, int, str, int, int, int]]:
    """(clip, frame, kind, question value, answer, objects in frame) for every askable question.

    Colour-of-shape is asked only when the shape is unique in the frame (else it has no single
    answer); shape-of-colour likewise.
    """
    items = []
    for c, frames in enumerate(frame_objs):
        for t, objs in enumerate(frames):
            n = len(objs)
            items.append((c, t, "count", 0, n, n))
            shapes = [o[2] for o in objs]
            colours = [o[1] for o in objs]
            for _, colour, shape, _, _ in objs:
                if shapes.count(shape) == 1:
                    items.append((c, t, "colour of shape", SHAPES.index(shape), COLOURS.index(colour), n))
                if colours.count(colour) == 1:
                    items.append((c, t, "shape of colour", COLOURS.index(colour), SHAPES.index(shape), n))
    return items


class Probe(nn.Module):
    """A question query attends over one frame's tokens; a linear layer reads the answer."""

    def __init__(self, width: int, answers: int = 8) -> None:
        super().__init__()
        self.question = nn.Embedding(len(KINDS) * 8, width)  # (kind, value) pairs; values < 8
        self.attn = nn.MultiheadAttention(width, 4, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, answers))

    def forward(self, tokens: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        q = self.question(question)[:, None]  # (B, 1, W)
        kv = self.norm(tokens)  # (B, Qi, W)
        pooled, _ = self.attn(q, kv, kv)  # (B, 1, W)
        return self.out(pooled[:, 0] + q[:, 0])  # (B, answers)


def fit_and_score(feats: torch.Tensor, items: list, train_clips: int, steps: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    clip, frame, kind, value, answer, nobj = (list(col) for col in zip(*items, strict=True))
    kind_ids = torch.tensor([KINDS.index(k) for k in kind])
    question = kind_ids * 8 + torch.tensor(value)
    answer, nobj = torch.tensor(answer), torch.tensor(nobj)
    tokens = feats[torch.tensor(clip), torch.tensor(frame)]  # (items, Qi, H)
    is_train = torch.tensor(clip) < train_clips
    probe = Probe(feats.shape[-1])
    opt = torch.optim.AdamW(probe.parameters(), lr=3e-3, weight_decay=1e-4)
    rows = is_train.nonzero()[:, 0]
    for _ in range(steps):
        batch = rows[torch.randint(len(rows), (512,))]
        loss = F.cross_entropy(probe(tokens[batch], question[batch]), answer[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    probe.eval()
    with torch.no_grad():
        right = probe(tokens[~is_train], question[~is_train]).argmax(-1) == answer[~is_train]
    scores = defaultdict(dict)
    kinds, objs = kind_ids[~is_train], nobj[~is_train]
    for k, name in enumerate(KINDS):
        for label, sel in (("one shape", objs == 1), ("2-3 shapes", objs >= 2), ("all", objs >= 0)):
            mask = (kinds == k) & sel
            if mask.any():
                scores[name][label] = (float(right[mask].float().mean()), int(mask.sum()))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "toy-world"))
    parser.add_argument("--clips", type=int, default=600)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    t0 = time.time()
    pool = render_pool(model.config, args.clips, PROBE_SEED)
    feats = precompute(model, pool)["video"].float()  # (N, T, Qi, H), what stages 1 and 2 train on
    items = probe_items(pool.frame_objs)
    print(f"{args.model}: {args.clips} clips x {feats.shape[1]} frames encoded in {time.time() - t0:.0f} s; "
          f"{len(items)} questions, probe trained on the first {int(0.8 * args.clips)} clips")
    scores = fit_and_score(feats, items, int(0.8 * args.clips), args.steps)
    print(f"\nheld-out probe accuracy (questions)\n  {'question':18s} {'one shape':>16s} {'2-3 shapes':>16s} "
          f"{'all':>16s}")
    for name in KINDS:
        cells = [scores[name].get(label) for label in ("one shape", "2-3 shapes", "all")]
        print(f"  {name:18s} " + " ".join(f"{c[0]:10.2f} ({c[1]:4d})" if c else f"{'-':>16s}" for c in cells))


if __name__ == "__main__":
    main()
