"""What a model's frozen encoders tell apart: the stage-0 probe on an existing model folder.

    python -m experiments.encoder_probe [--model checkpoints/toy-world] [--clips 400] [--steps 400] [--out DIR]

The probe itself (held-out clips, attention probes on the frozen image-query tokens and the
audio clip embeddings, thresholds, the WARNING lines) lives in ``train/probe.py``, where
``train --recipe toy-world`` runs it right after stage 0; this is the same probe for a model
folder that is already trained (e.g. the bundled one, as a baseline for stage-0 work). Rows:
colour, shape and count on frames with one shape, colour-shape binding and count among 2-3
shapes, pitch and pattern from the audio features.
"""

from __future__ import annotations

from train.probe import main

if __name__ == "__main__":
    raise SystemExit(main())
