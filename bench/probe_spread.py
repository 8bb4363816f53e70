"""How much the stage-0 probe's numbers move between fits: one 80/20 split against 5-fold.

    python -m bench.probe_spread [--model checkpoints/toy-world] [--clips 400] [--steps 400] [--seeds 3]

The stage-0 probe (train/probe.py) fits a small attention probe on the frozen features of
held-out toy-world clips. Its shape row once gave 0.977 on one model folder and 0.947 on
another, then the reverse with 800 probe steps instead of 400: the fit, not the features, moved
it by 0.03, as much as a 0.95 threshold can afford. This script renders and encodes the clips
once, then fits the probe with ``--seeds`` different seeds under both protocols, side by side:

- ``one split``: train on the first 80% of the clips, score the last 20% (the protocol before);
- ``5-fold``: five probes, each scoring the fifth of the clips it did not train on, so every
  clip is scored once (the protocol now).

It prints each row's accuracy per seed, the spread (max - min over seeds) per protocol, the
number of held-out questions per protocol, and the seconds each protocol took.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from train import probe


def spreads(runs: list[list[probe.ProbeRow]]) -> dict[str, tuple[list[float], int]]:
    """Row name -> (accuracy per seed, held-out questions) over the runs of one protocol."""
    out: dict[str, tuple[list[float], int]] = {}
    for rows in runs:
        for r in rows:
            accs, _ = out.setdefault(r.name, ([], r.n))
            accs.append(r.accuracy)
    return out


def format_spread(single: dict, folds: dict) -> str:
    lines = [f"| {'row':36s} | one split: per seed | spread | n | 5-fold: per seed | spread | n |",
             "|---|---|---|---|---|---|---|"]
    for name in probe.ROWS:
        if name not in single or name not in folds:
            continue
        (a, na), (b, nb) = single[name], folds[name]
        lines.append(f"| {name:36s} | {' '.join(f'{x:.3f}' for x in a)} | {max(a) - min(a):.3f} | {na} | "
                     f"{' '.join(f'{x:.3f}' for x in b)} | {max(b) - min(b):.3f} | {nb} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from model.weights.checkpoint import load_model

    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=root / "checkpoints" / "toy-world", help="model folder")
    parser.add_argument("--clips", type=int, default=400, help="held-out clips rendered")
    parser.add_argument("--steps", type=int, default=400, help="probe training steps per fit")
    parser.add_argument("--seeds", type=int, default=3, help="probe seeds per protocol")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be 2 or more: a spread needs two fits")
    clips = probe.encode_clips(load_model(args.model, device="cpu"), args.clips)
    protocols = {"one split": probe.holdout_mask(args.clips), "5-fold": probe.fold_masks(args.clips)}
    results, seconds = {}, {}
    for name, held in protocols.items():
        t0 = time.time()
        runs = [probe.probe_features(clips.video, clips.audio, clips.frame_objs, clips.scenes, args.steps,
                                      held=held, seed=s)
                for s in range(args.seeds)]
        seconds[name] = time.time() - t0
        results[name] = spreads(runs)
    print(f"probe spread of {args.model}: {args.clips} clips (seed {probe.PROBE_SEED}), {args.steps} steps per fit, "
          f"probe seeds 0..{args.seeds - 1}")
    print(format_spread(results["one split"], results["5-fold"]))
    print(" ".join(f"{name}: {seconds[name] / args.seeds:.0f} s per seed;" for name in protocols))
    worst = {name: max(max(a) - min(a) for a, _ in results[name].values()) for name in protocols}
    print(f"largest spread of any row: one split {worst['one split']:.3f}, 5-fold {worst['5-fold']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
