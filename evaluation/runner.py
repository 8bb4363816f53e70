"""The evaluation runner: every model asked every question, one JSON line per answer, resumable.

A run lives in one output folder:

- ``settings.json``: what shapes the answers (suite, data, models, frames, sound, generation);
  written once, and a later run in the same folder must match it (else it stops and says so);
- ``answers.jsonl``: one ``AnswerRecord`` per (model, question), appended and flushed as each
  answer is written, so a crash or Ctrl-C loses at most the answer in flight. On restart the
  answered (model, question) pairs are skipped; missing or bad media are tried again;
- ``summary.json`` / ``summary.md`` (``evaluation/summary.py``) at the end.

Questions are taken in order of their media file and each file is asked of every model in
turn. With ``share_media`` (the default) all models sit in one ``ChatEngine``: the file is
decoded once (the engine's decoded-media cache) and, for checkpoints whose frozen encoders
are the same weights, encoded once (its feature cache); every model sees the same frames.
Without it each model gets its own engine (the baseline the bench compares against).
Decoding is greedy by default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.records import AnswerRecord, Question
from evaluation.scoring import score
from model.chat.engine import BadRequest, ChatEngine, GenerationSettings
from model.media import LoadOptions, MediaError

ANSWERS, SETTINGS = "answers.jsonl", "settings.json"
# Settings that do not change any answer: a resumed run may differ in these.
RESUMABLE_CHANGES = ("limit", "judge_url", "judge_model", "share_media")


@dataclass
class RunSettings:
    suite: str
    models: dict[str, str]  # name -> model folder (what was loaded)
    data: str | None = None
    frames: int = LoadOptions.num_frames  # the one default frame count
    use_audio: bool = True
    max_new_tokens: int = 64
    do_sample: bool = False  # greedy: the same answer on every run
    temperature: float = 0.0
    seed: int = 0
    limit: int | None = None
    judge_url: str | None = None
    judge_model: str | None = None
    share_media: bool = True
    variant: dict[str, Any] = field(default_factory=dict)  # ablation switches (e.g. zeroed frame positions)
    # "official": questions that carry their benchmark's prompt protocol (system prompt, pre-filled
    # answer: MVBench) are asked that way; "plain": their ``prompt`` alone. None: no question carries one.
    prompt: str | None = None

    def generation(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample,
                                  temperature=self.temperature, seed=self.seed)


@dataclass
class RunStats:
    answered: int = 0  # in this call
    skipped_done: int = 0  # answered by an earlier call
    bad_media: int = 0
    seconds: float = 0.0
    decodes: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def open_run(output: Path, settings: RunSettings) -> dict[tuple[str, str], AnswerRecord]:
    """Create or reopen the run folder; return the answered records by (model, question key)."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / SETTINGS
    current = dataclasses.asdict(settings)
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(saved) | set(current)
                         if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
        if changed:
            raise SystemExit(f"{output} holds a run with other settings ({', '.join(changed)} differ); "
                             "resume it with the same options or choose another --output")
    path.write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8")
    return {(r.model, r.key): r for r in read_answers(output / ANSWERS) if r.status == "answered"}


def read_answers(path: Path) -> list[AnswerRecord]:
    """Every readable line, the last one per (model, question) winning; a line cut by a crash is skipped."""
    if not path.exists():
        return []
    latest: dict[tuple[str, str], AnswerRecord] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = AnswerRecord.from_json(line)
        except (ValueError, TypeError):
            continue
        latest[(record.model, record.key)] = record
    return list(latest.values())


def build_engines(models: dict[str, Any], share_media: bool, cache_items: int = 16) -> dict[str, ChatEngine]:
    """Model name -> the engine serving it: one for all (shared caches) or one each."""
    if share_media:
        engine = ChatEngine(models, media_cache_items=cache_items)
        return dict.fromkeys(models, engine)
    return {name: ChatEngine({name: model}, media_cache_items=cache_items) for name, model in models.items()}


class Runner:
    """Ask ``questions`` of every model, writing answers into ``output`` as they come.

    Args:
        models: name -> loaded model (``load_model``), in the order they are asked.
        settings: the run's ``RunSettings`` (saved; checked on resume).
        judge: a callable (question, reference, prediction) -> ``JudgeVerdict`` for open-ended
            questions, or None (then only the judge-free metrics are written).
        interrupt: called after each written answer (tests use it to stop a run part-way).
    """

    def __init__(self, models: dict[str, Any], settings: RunSettings, output: Path, *,
                 judge: Callable | None = None, progress: bool = True, interrupt: Callable | None = None):
        self.names = list(models)
        self.settings, self.output = settings, Path(output)
        self.engines = build_engines(models, settings.share_media)
        self.judge, self.progress, self.interrupt = judge, progress, interrupt
        self.generation = settings.generation()

    def close(self) -> None:
        for engine in {id(e): e for e in self.engines.values()}.values():
            engine.close()

    def run(self, questions: list[Question]) -> RunStats:
        from tqdm.auto import tqdm

        done = open_run(self.output, self.settings)
        questions = sorted(questions, key=lambda q: q.media)  # stable: a file's questions stay in order
        todo = [(q, name) for q in questions for name in self.names if (name, q.key) not in done]
        stats = RunStats(skipped_done=len(questions) * len(self.names) - len(todo))
        bar = tqdm(total=len(todo), unit="answer", desc=f"eval {self.settings.suite}", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        start = time.perf_counter()
        path = self.output / ANSWERS
        _end_cut_line(path)
        try:
            with open(path, "a", encoding="utf-8") as out:
                for question, name in todo:
                    record = self.answer(name, question)
                    out.write(record.to_json() + "\n")
                    out.flush()
                    os.fsync(out.fileno())
                    _count(stats, record)
                    bar.update(1)
                    if self.interrupt is not None:
                        self.interrupt(record)
        finally:
            bar.close()
            stats.seconds = time.perf_counter() - start
        return stats

    def answer(self, name: str, question: Question) -> AnswerRecord:
        """One model's answer to one question (never raises for bad media or a refused question)."""
        record = AnswerRecord(model=name, key=question.key, benchmark=question.benchmark, task=question.task,
                              question=question.question, reference=question.reference, media=question.media)
        if not os.path.isfile(question.media):
            record.status, record.error = "missing_media", f"no such file: {question.media}"
            return record
        engine = self.engines[name]
        official = self.settings.prompt == "official"
        conv = engine.new_conversation(name, system=question.system if official else None)
        misses, t = engine.loaded.misses, time.perf_counter()
        try:
            engine.attach_media(conv, question.media, use_audio=self.settings.use_audio,
                                num_frames=self.settings.frames, window=question.window)
            attach = time.perf_counter() - t
            record.decoded = engine.loaded.misses > misses
            t = time.perf_counter()
            prefill = question.prefill if official else ""
            written = "".join(engine.ask(conv, question.prompt, self.generation, answer_prefix=prefill)).strip()
            # As the benchmark's script: the kept end of the pre-filled text, then what the model wrote.
            record.answer = (question.prefill_kept if prefill else "") + written
            wall = time.perf_counter() - t
        except (MediaError, BadRequest) as err:
            record.status, record.error = "bad_media", f"{type(err).__name__}: {err}"
            return record
        finally:
            trace = engine.trace(conv)
            engine.clear(conv)
        stages = dict(trace.timings.rows()) if trace is not None else {}
        record.timings = {"attach": attach, "answer": wall,
                          **{k: stages[k] for k in ("vision_encode", "audio_encode", "adapters", "embed",
                                                    "prefill", "generate") if k in stages}}
        record.verdicts, record.extracted = score(question, record.answer)
        if self.judge is not None and not question.options:
            verdict = self.judge(question.question, question.reference, record.answer)
            record.verdicts.update(judge_yes=verdict.yes, judge_score=verdict.score)
            record.error = verdict.error
        return record


def _count(stats: RunStats, record: AnswerRecord) -> None:
    if record.status != "answered":
        stats.bad_media += 1
        return
    stats.answered += 1
    stats.decodes += record.decoded
    for stage, seconds in record.timings.items():
        stats.stage_seconds[stage] = stats.stage_seconds.get(stage, 0.0) + seconds


def _end_cut_line(path: Path) -> None:
    """A crash can leave a last line without its newline: end it, so the next answer starts clean."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
