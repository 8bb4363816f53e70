"""The stage-0 probe: rows, thresholds, and the WARNING for any attribute the features miss."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from tests.tiny import tiny_model
from train import probe
from train.world.scene import SoundSegment


def test_untrained_tiny_encoders_fall_short_and_every_row_under_threshold_warns(tmp_path, capsys):
    from train.toy_pipeline import run_probe

    model = tiny_model(with_llm=False)
    recipe = SimpleNamespace(world={"probe_clips": 10, "probe_steps": 5})
    run_probe(model, recipe, tmp_path)
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "probe.json").read_text())
    assert {r["name"] for r in rows} >= {"colour (one shape)", "colour-shape binding (2-3 shapes)"}
    short = [r for r in rows if not r["ok"]]
    assert short  # random encoders and 5 probe steps: nothing near 0.95
    for r in rows:
        assert (f"WARNING: stage-0 probe: {r['name']} is" in out) == (not r["ok"])
    assert "WARNING" in (tmp_path / "probe.txt").read_text()


def test_table_warns_only_under_the_threshold():
    rows = [probe.ProbeRow("colour (one shape)", 0.97, 100, 0.95, 0.14),
            probe.ProbeRow("count (2-3 shapes)", 0.85, 100, 0.9, 0.5),
            probe.ProbeRow("pitch (audio)", 0.95, 40, 0.95, 0.5)]
    text = probe.format_table(rows)
    assert text.count("WARNING") == 1 and "WARNING: stage-0 probe: count (2-3 shapes) is 0.850" in text
    assert [r.ok for r in rows] == [True, False, True]


def test_features_that_hold_the_answer_pass_and_noise_does_not():
    """Audio rows: a clip-window token that carries the pitch and pattern is read right; noise is not."""
    torch.manual_seed(0)
    beep = SoundSegment(0.0, 4.0, "beeping", "high", 1000.0, 1000.0)
    steady = SoundSegment(0.0, 4.0, "steady", "low", 300.0, 300.0)
    scenes = [SimpleNamespace(sounds=[beep if i % 2 else steady]) for i in range(200)]
    items = probe.audio_items(scenes)
    assert {it.row for it in items} == {"pitch (audio)", "pattern (audio)"}
    informative = torch.randn(200, 4, 16) * 0.1
    informative[1::2, :, 0] += 3.0  # the beeping high clips
    good = probe.probe_features(None, informative, None, scenes, steps=150)
    noise = probe.probe_features(None, torch.randn(200, 4, 16), None, scenes, steps=150)
    assert all(r.ok for r in good)
    assert not any(r.ok for r in noise)


def test_folds_hold_out_every_clip_exactly_once_in_contiguous_blocks():
    masks = probe.fold_masks(12, 5)
    assert len(masks) == 5
    counts = torch.stack(masks).sum(0)
    assert counts.tolist() == [1] * 12  # each clip scored once
    for m in masks:
        idx = m.nonzero()[:, 0]
        assert len(idx) >= 2 and (idx.diff() == 1).all()
    (single,) = probe.holdout_mask(10)
    assert single.nonzero()[:, 0].tolist() == [8, 9]


def test_cross_validation_scores_every_clips_questions_and_one_split_a_fifth():
    """5-fold: the held-out count is every question of the branch; one split: those of the last 20%."""
    beep = SoundSegment(0.0, 4.0, "beeping", "high", 1000.0, 1000.0)
    scenes = [SimpleNamespace(sounds=[beep]) for _ in range(50)]
    audio = torch.randn(50, 4, 8)
    rows = {r.name: r.n for r in probe.probe_features(None, audio, None, scenes, steps=2)}
    assert rows == {"pitch (audio)": 50, "pattern (audio)": 50}
    single = {r.name: r.n for r in probe.probe_features(None, audio, None, scenes, steps=2,
                                                        held=probe.holdout_mask(50))}
    assert single == {"pitch (audio)": 10, "pattern (audio)": 10}


def test_probe_spread_table_reports_max_minus_min_per_protocol():
    from bench.probe_spread import format_spread, spreads

    def rows(acc):
        return [probe.ProbeRow("shape (one shape)", acc, 263, 0.95, 0.25)]

    single, folds = spreads([rows(0.977), rows(0.947)]), spreads([rows(0.96), rows(0.965)])
    line = next(ln for ln in format_spread(single, folds).splitlines() if "shape (one shape)" in ln)
    cells = [c.strip() for c in line.split("|")]
    assert cells[2:4] == ["0.977 0.947", "0.030"] and cells[5:7] == ["0.960 0.965", "0.005"]
