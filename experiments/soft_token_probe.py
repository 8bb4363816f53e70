"""Where is a clip's colour, shape, motion or sound lost: in the Q-Formers or in the LLM's reading?

    python -m experiments.soft_token_probe [--model checkpoints/toy-world] [--clips 400] [--steps 400]
        [--round-to bfloat16]

Renders held-out clips (the stage-0 probe's seed), and fits the same kind of attention probe
(``train.probe.AttentionProbe``: a question query attends over a token set, a small MLP answers)
on two token sets of each clip, side by side:

* **frozen**: what the trainable branch reads, i.e. every sampled frame's image-query features
  (T*Qi tokens, each with a one-hot frame index appended so that order, and so motion, can be
  read) or the audio window embeddings;
* **soft tokens**: what the LLM reads, i.e. the Video Q-Former's 32 (or the Audio Q-Former's 8)
  projected tokens.

Questions are about the whole clip, as the eval's open questions are: the colour of a named shape,
the shape of a named colour, how many shapes, how a named shape moves, whether a named shape is
there from the start or appears later, and the sound's pitch and pattern. A row high on both sets
and low in the eval means the LLM does not read what the soft tokens hold (train stage 2
differently); a row that drops from frozen to soft tokens means the Q-Former loses it (train
stage 1 differently, or widen the Q-Former).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from train.probe import PROBE_SEED, ROWS, VIDEO_KINDS, Item, audio_items, fit_probe, video_items
from train.world.scene import COLOURS, MOTIONS, SHAPES

VIDEO_ROWS = ("colour of a named shape", "shape of a named colour", "count", "motion of a named shape")
AUDIO_ROWS = ("pitch (audio)", "pattern (audio)")  # train.probe's rows and questions
POSITION_ROW = "position (x, y bin of a shape)"  # train.probe's per-frame question
APPEAR_ROW = "start or later, a named shape"  # the eval's "When does X appear: at the start or later?"
CHANCE = {"colour of a named shape": 1 / len(COLOURS), "shape of a named colour": 1 / len(SHAPES),
          "count": 1 / 3, "motion of a named shape": 1 / len(MOTIONS),
          APPEAR_ROW: 1 / 2, **{r: ROWS[r][1] for r in (*AUDIO_ROWS, POSITION_ROW)}}


def clip_video_items(scenes) -> list[Item]:
    """Clip-level questions with one answer: a shape's colour or motion when no other shape of that
    kind is in the clip, a colour's shape when the colour is unique, and the number of shapes."""
    items = []
    for c, scene in enumerate(scenes):
        shapes = [s.shape for s in scene.shapes]
        colours = [s.colour for s in scene.shapes]
        items.append(Item(c, 0, 2, 0, min(len(shapes), 3) - 1, "count"))
        for s in scene.shapes:
            if shapes.count(s.shape) == 1:
                items.append(Item(c, 0, 0, SHAPES.index(s.shape), COLOURS.index(s.colour), VIDEO_ROWS[0]))
                items.append(Item(c, 0, 3, SHAPES.index(s.shape), MOTIONS.index(s.motion), VIDEO_ROWS[3]))
            if colours.count(s.colour) == 1:
                items.append(Item(c, 0, 1, COLOURS.index(s.colour), SHAPES.index(s.shape), VIDEO_ROWS[1]))
    return items


def appear_items(scenes) -> list[Item]:
    """Whether a shape (named, so unique in its clip) is visible from the first frame (0) or
    appears later (1)."""
    items = []
    for c, scene in enumerate(scenes):
        shapes = [s.shape for s in scene.shapes]
        for s in scene.shapes:
            if shapes.count(s.shape) == 1:
                items.append(Item(c, 0, 0, SHAPES.index(s.shape), int(s.appear > 0), APPEAR_ROW))
    return items


def with_frame_index(frame_feats: torch.Tensor) -> torch.Tensor:
    """(N, T, Qi, H) -> (N, 1, T*Qi, H+T): one token set per clip, each token tagged with its frame."""
    N, T, Q, H = frame_feats.shape
    onehot = torch.eye(T, dtype=frame_feats.dtype)[None, :, None, :].expand(N, T, Q, T)  # (N, T, Qi, T)
    return torch.cat([frame_feats, onehot], -1).reshape(N, 1, T * Q, H + T)


def soft_tokens(model, video: torch.Tensor, audio: torch.Tensor, chunk: int = 32):
    """The projected Q-Former outputs for every clip: (N, 1, Qv, D) and (N, 1, Qa, D), fp32."""
    vs, aus = [], []
    with torch.no_grad():
        for i in range(0, len(video), chunk):
            vs.append(model.video_tokens(video[i:i + chunk].float()).float().cpu())
            aus.append(model.audio_tokens(audio[i:i + chunk].float()).float().cpu())
    return torch.cat(vs)[:, None], torch.cat(aus)[:, None]


def accuracy(tokens: torch.Tensor, items: list[Item], kinds: int, train_clips: int, steps: int) -> dict[str, tuple]:
    """Held-out accuracy and count per row, and per expected motion ("motion: up", ...)."""
    # Normalise each token set's scale so one learning rate suits both token sets.
    tokens = tokens / tokens.float().pow(2).mean().sqrt().clamp_min(1e-6)
    right = fit_probe(tokens, items, kinds, torch.arange(tokens.shape[0]) >= train_clips, steps)
    held = [it for it in items if it.clip >= train_clips]
    rows: dict[str, list[bool]] = {}
    for it, ok in zip(held, right.tolist(), strict=True):
        rows.setdefault(it.row, []).append(ok)
        if it.row == VIDEO_ROWS[3]:
            # The eval's open motion answers are right for left/right far more often than for up/down
            # or still; this says whether the tokens already hold them unevenly.
            rows.setdefault(f"motion: {MOTIONS[it.answer]}", []).append(ok)
    return {name: (sum(v) / len(v), len(v)) for name, v in rows.items()}


def main(argv: list[str] | None = None) -> int:
    from model.weights.checkpoint import load_model
    from train.world.pool import precompute, render_pool

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("checkpoints/toy-world"))
    parser.add_argument("--clips", type=int, default=400, help="held-out clips (80%% fit the probes)")
    parser.add_argument("--steps", type=int, default=400, help="probe training steps (batches of 512)")
    parser.add_argument("--round-to", choices=("bfloat16", "float16"), default=None,
                        help="round the soft tokens to this dtype first, as the LLM receives them in training")
    args = parser.parse_args(argv)
    t0 = time.time()
    model = load_model(args.model, device="cpu")
    model.eval()
    pool = render_pool(model.config, args.clips, PROBE_SEED)
    feats = precompute(model, pool)
    video_soft, audio_soft = soft_tokens(model, feats["video"], feats["audio"])
    if args.round_to:
        # Stages 1 and 2 feed the soft tokens to a bf16 LLM where the CPU has native bf16: whatever
        # the rounding removes, the LLM never saw while it learned to read them.
        dtype = getattr(torch, args.round_to)
        video_soft, audio_soft = video_soft.to(dtype).float(), audio_soft.to(dtype).float()
    train_clips = int(0.8 * args.clips)
    v_items, a_items = clip_video_items(pool.scenes), audio_items(pool.scenes)
    # Motion is a change of position: first whether one frame's features say where a shape is.
    where = [it for it in video_items(pool.frame_objs) if it.row == POSITION_ROW]
    position = accuracy(feats["video"].float(), where, len(VIDEO_KINDS), train_clips, args.steps)
    # Appear time gets a probe of its own, so the other rows fit exactly as before it was added.
    timing = appear_items(pool.scenes)
    frames = with_frame_index(feats["video"].float())
    table = {
        "frozen": {**accuracy(frames, v_items, 4, train_clips, args.steps),
                   **accuracy(frames, timing, 1, train_clips, args.steps),
                   **accuracy(feats["audio"].float()[:, None], a_items, 2, train_clips, args.steps)},
        "soft tokens": {**accuracy(video_soft, v_items, 4, train_clips, args.steps),
                        **accuracy(video_soft, timing, 1, train_clips, args.steps),
                        **accuracy(audio_soft, a_items, 2, train_clips, args.steps)},
    }
    rounded = f", soft tokens rounded to {args.round_to}" if args.round_to else ""
    print(f"soft-token probe of {args.model}{rounded}: {args.clips} held-out clips (seed {PROBE_SEED}), "
          f"probes fitted on {train_clips} for {args.steps} steps, {time.time() - t0:.0f} s")
    print(f"  {'question':32s} {'frozen':>8s} {'soft tokens':>12s} {'n':>5s} {'chance':>7s}")
    for row in (*VIDEO_ROWS, APPEAR_ROW, *AUDIO_ROWS):
        if row in table["frozen"]:
            (fa, n), (sa, _) = table["frozen"][row], table["soft tokens"][row]
            print(f"  {row:32s} {fa:8.3f} {sa:12.3f} {n:5d} {CHANCE[row]:7.2f}")
    for motion in MOTIONS:
        row = f"motion: {motion}"
        if row in table["frozen"]:
            (fa, n), (sa, _) = table["frozen"][row], table["soft tokens"][row]
            print(f"    {row:30s} {fa:8.3f} {sa:12.3f} {n:5d}")
    if POSITION_ROW in position:
        (pa, n) = position[POSITION_ROW]
        print(f"  {POSITION_ROW:32s} {pa:8.3f} {'-':>12s} {n:5d} {CHANCE[POSITION_ROW]:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
