"""Summaries of a run: per model and per benchmark (or task), every metric with its count and a
95% interval, as JSON and as Markdown tables (one table per metric, never mixing metrics).

Shares use the Wilson score interval; the judge's mean score uses the normal interval of a
mean (mean +- 1.96 s / sqrt(n)). Columns: a benchmark with several tasks (MVBench's 20 tasks,
Video-MME's durations, the toy world's skills) gets one column per task and one for the whole
benchmark ("mvbench/all", every question weighing the same).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from evaluation.records import AnswerRecord

Z95 = 1.959964

# metric -> (what it is, "share" or "mean"). Order is the order of the tables.
METRICS: dict[str, tuple[str, str]] = {
    "official": ("multiple choice, the benchmark's own rule (comparable with published tables)", "share"),
    "corrected": ("multiple choice, the corrected reading (evaluation/scoring/choice.py)", "share"),
    "rules_differ": ("share of answers where the official and corrected verdicts differ", "share"),
    "no_option": ("share of answers that name no option (corrected reading)", "share"),
    "judge_accuracy": ("open-ended, GPT-judge protocol of Video-ChatGPT: share judged 'yes'", "share"),
    "judge_score": ("open-ended, GPT-judge protocol of Video-ChatGPT: mean score 0-5", "mean"),
    "string_match": ("open-ended without a judge: reference found in the answer (not a judged number)", "share"),
    "keyword": ("toy world: the world's keyword rule", "share"),
    "says_yes_false": ("toy world: share of 'yes' to yes/no questions whose claim is false (hallucination)",
                       "share"),
    "says_yes_true": ("toy world: share of 'yes' to yes/no questions whose claim is true", "share"),
}


def wilson(k: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a share k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return (mean, mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return (mean - Z95 * sd / math.sqrt(n), mean + Z95 * sd / math.sqrt(n))


def metric_values(record: AnswerRecord) -> dict[str, float]:
    """The values this answer contributes, by metric (a metric it does not count toward is absent)."""
    v = record.verdicts
    out: dict[str, float] = {}
    for name in ("official", "corrected", "rules_differ", "no_option", "string_match", "keyword"):
        if v.get(name) is not None:
            out[name] = float(v[name])
    if v.get("judge_yes") is not None:
        out["judge_accuracy"] = float(v["judge_yes"])
    if v.get("judge_score") is not None:
        out["judge_score"] = float(v["judge_score"])
    if v.get("says_yes") is not None:
        out["says_yes_true" if record.reference == "yes" else "says_yes_false"] = float(v["says_yes"])
    if "official" in out or "corrected" in out or "keyword" in out:
        out.pop("string_match", None)  # multiple choice and the toy world are scored by their own rules
    return out


def columns_of(record: AnswerRecord, multi_task: set[str]) -> list[str]:
    if record.benchmark in multi_task:
        return [f"{record.benchmark}/{record.task}", f"{record.benchmark}/all"]
    return [record.benchmark]


def summarize(records: list[AnswerRecord], models: list[str] | None = None) -> dict:
    """The summary dict: ``metrics[name][model][column] = {value, low, high, n}`` and ``counts``."""
    models = models or sorted({r.model for r in records})
    tasks: dict[str, set[str]] = defaultdict(set)
    for r in records:
        tasks[r.benchmark].add(r.task)
    multi = {b for b, t in tasks.items() if len(t) > 1 or t != {b}}
    values: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    counts: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for r in records:
        for column in columns_of(r, multi):
            counts[r.model][column][r.status] += 1
            if r.verdicts.get("unscored"):  # a key the benchmark keeps private (EgoSchema)
                counts[r.model][column]["unscored"] += 1
            if r.status == "answered":
                for name, value in metric_values(r).items():
                    values[name][r.model][column].append(value)
    metrics: dict = {}
    for name, (_, kind) in METRICS.items():
        if name not in values:
            continue
        metrics[name] = {}
        for model in models:
            cells = {}
            for column, vals in sorted(values[name][model].items()):
                low, high = wilson(sum(vals), len(vals)) if kind == "share" else mean_interval(vals)
                cells[column] = {"value": sum(vals) / len(vals), "low": low, "high": high, "n": len(vals)}
            metrics[name][model] = cells
    return {"models": models, "metrics": metrics,
            "counts": {m: {c: dict(v) for c, v in counts[m].items()} for m in models}}


def _cell(cell: dict | None, kind: str) -> str:
    if cell is None:
        return "-"
    if kind == "share":
        return f"{100 * cell['value']:.1f} [{100 * cell['low']:.1f}, {100 * cell['high']:.1f}] n={cell['n']}"
    return f"{cell['value']:.2f} [{cell['low']:.2f}, {cell['high']:.2f}] n={cell['n']}"


def markdown(summary: dict) -> str:
    """One table per metric: a row per model, a column per benchmark or task."""
    parts = []
    for name, per_model in summary["metrics"].items():
        about, kind = METRICS[name]
        columns = sorted({c for cells in per_model.values() for c in cells})
        unit = "% with 95% interval" if kind == "share" else "mean with 95% interval"
        parts.append(f"### {name}: {about} ({unit})\n")
        parts.append("| model | " + " | ".join(columns) + " |")
        parts.append("|---" * (len(columns) + 1) + "|")
        for model in summary["models"]:
            cells = per_model.get(model, {})
            parts.append(f"| {model} | " + " | ".join(_cell(cells.get(c), kind) for c in columns) + " |")
        parts.append("")
    parts.append("### questions per model (answered / missing or bad media; unscored: no local answer key)\n")
    columns = sorted({c for per in summary["counts"].values() for c in per})
    parts.append("| model | " + " | ".join(columns) + " |")
    parts.append("|---" * (len(columns) + 1) + "|")
    for model in summary["models"]:
        per = summary["counts"].get(model, {})
        cells = []
        for c in columns:
            got = per.get(c, {})
            cell = f"{got.get('answered', 0)} / {got.get('missing_media', 0) + got.get('bad_media', 0)}"
            cells.append(cell + (f" ({got['unscored']} unscored)" if got.get("unscored") else ""))
        parts.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(parts) + "\n"


def write_summary(output: Path, records: list[AnswerRecord], models: list[str] | None = None) -> dict:
    summary = summarize(records, models)
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (output / "summary.md").write_text(markdown(summary), encoding="utf-8")
    return summary


def tables_for(models: list[str], runs_root: Path) -> str:
    """Markdown of every saved run under ``runs_root`` (``*/summary.json``) restricted to ``models``
    (by name), one section per run; "" when no run has any of them (what the app's Compare tab shows)."""
    parts = []
    for path in sorted(Path(runs_root).glob("*/summary.json")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        kept = [m for m in summary.get("models", []) if m in models]
        if not kept:
            continue
        metrics = {name: {m: cells for m, cells in per.items() if m in kept}
                   for name, per in summary.get("metrics", {}).items() if name in METRICS}
        counts = {m: c for m, c in summary.get("counts", {}).items() if m in kept}
        parts.append(f"#### run `{path.parent.name}`\n\n"
                     + markdown({"models": kept, "metrics": metrics, "counts": counts}))
    return "\n".join(parts)
