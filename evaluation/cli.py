"""`python launch.py eval ...`: benchmarks through the runner, the toy-world report, and compare.

    launch.py eval --suite NAME --data DIR [--model DIR | --preset NAME]... [--limit N]
                   [--frames N] [--output DIR] [--judge-url URL --judge-model NAME]
                   [--prompt official|plain]   (MVBench: its notebook's prompt, or the question alone)
    launch.py eval --suite toy-world [--json] [--split ...] [--no-sound] [--images] [--dump F]
    launch.py eval --suite toy-world --output DIR [--model DIR]...   (the toy world through the runner)
    launch.py eval compare RUN_A RUN_B
    launch.py eval submission RUN      (EgoSchema: rewrite egoschema_submission.csv from RUN/answers.jsonl)

Suites: ``toy-world`` and those in ``evaluation/readers/__init__.py`` (``SUITES``). Without
``--output`` the toy world prints its per-skill report as before (``evaluation/toy_world.py``);
every other suite needs ``--data`` and writes a run folder (default ``runs/eval/<suite>``).
An EgoSchema run also writes the Kaggle submission file beside its summary
(``evaluation/submission.py``); ``eval submission RUN`` writes it again from the run's answers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluation import toy_world
from evaluation.readers import SUITES
from model.media import LoadOptions

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "checkpoints"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="run", choices=("run", "compare", "submission"),
                        help="run (default) a suite, compare two run folders, or write a run's EgoSchema "
                             "submission file")
    parser.add_argument("runs", nargs="*", type=Path, help="compare: RUN_A RUN_B; submission: RUN (run folders)")
    parser.add_argument("--suite", default="toy-world", choices=("toy-world", *SUITES), help="what to evaluate on")
    parser.add_argument("--data", type=Path, default=None, help="the benchmark's folder (layout: see README)")
    parser.add_argument("--model", action="append", type=Path, default=[], metavar="DIR",
                        help="model folder; repeat to ask several models the same questions")
    parser.add_argument("--preset", action="append", default=[], metavar="NAME",
                        help="the model folder checkpoints/NAME; repeatable")
    parser.add_argument("--limit", type=int, default=None, help="the first N questions only")
    parser.add_argument("--frames", type=int, default=LoadOptions.num_frames,
                        help="frames sampled per video (default %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default %(default)s)")
    parser.add_argument("--output", type=Path, default=None, help="run folder (answers.jsonl, summary.*); "
                        "a run stopped part-way resumes in the same folder")
    parser.add_argument("--judge-url", default=None, help="OpenAI-compatible API base URL for the GPT judge")
    parser.add_argument("--judge-model", default=None, help="the judge model's name on that server")
    parser.add_argument("--prompt", choices=("official", "plain"), default="official",
                        help="MVBench: its notebook's protocol (system prompt, answer pre-filled with "
                             "'Best option:(', default) or the question and options alone")
    parser.add_argument("--no-share-media", action="store_true",
                        help="give each model its own engine and caches (decode and encode per model)")
    toy_world.add_toy_arguments(parser)


def model_folders(args: argparse.Namespace) -> dict[str, Path]:
    """Name -> folder, in the order given; the bundled model if none. Names repeat as name#2."""
    folders = [Path(d) for d in args.model] + [CHECKPOINTS / n for n in args.preset] or [toy_world.DEFAULT_MODEL]
    out: dict[str, Path] = {}
    for folder in folders:
        name, k = folder.name, 2
        while name in out:
            name, k = f"{folder.name}#{k}", k + 1
        out[name] = folder
    return out


def main(args: argparse.Namespace) -> int:
    if args.action == "compare":
        if len(args.runs) != 2:
            raise SystemExit("usage: launch.py eval compare RUN_A RUN_B")
        from evaluation.compare import report

        print(report(args.runs[0], args.runs[1], as_json=args.json))
        return 0
    if args.action == "submission":
        return write_submission_files(args.runs)
    if args.runs:
        raise SystemExit(f"unexpected arguments {[str(r) for r in args.runs]}; did you mean `eval compare`?")
    folders = model_folders(args)
    if args.suite == "toy-world" and args.output is None:
        args.model = next(iter(folders.values()))  # the per-skill report asks one model
        return toy_world.main(args)
    return run_suite(args, folders)


def read_questions(args: argparse.Namespace) -> list:
    if args.suite == "toy-world":
        from evaluation.readers import toy

        return toy.read(args.media_dir, args.clips, args.split)
    if args.data is None:
        raise SystemExit(f"--suite {args.suite} needs --data DIR, the benchmark's folder")
    try:
        return SUITES[args.suite](args.data)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"cannot read {args.suite} from {args.data}: {err}") from err


def prompt_style(choice: str, questions: list) -> str | None:
    """The run's ``prompt`` setting: the choice when a question carries its benchmark's prompt
    protocol (MVBench), else None (every question is asked by its ``prompt`` alone)."""
    return choice if any(q.system is not None or q.prefill for q in questions) else None


def run_suite(args: argparse.Namespace, folders: dict[str, Path]) -> int:
    from evaluation.runner import ANSWERS, Runner, RunSettings, read_answers
    from evaluation.summary import markdown, write_summary
    from model.weights.checkpoint import load_model

    if args.judge_url and not args.judge_model or args.judge_model and not args.judge_url:
        raise SystemExit("--judge-url and --judge-model go together")
    questions = read_questions(args)
    if args.limit is not None:
        questions = questions[:max(0, args.limit)]
    output = args.output or ROOT / "runs" / "eval" / args.suite
    settings = RunSettings(suite=args.suite, models={k: str(v) for k, v in folders.items()},
                           data=str(args.data) if args.data else None, frames=args.frames,
                           use_audio=not args.no_sound, max_new_tokens=args.max_new_tokens, limit=args.limit,
                           judge_url=args.judge_url, judge_model=args.judge_model,
                           share_media=not args.no_share_media,
                           prompt=prompt_style(args.prompt, questions))
    judge = None
    if args.judge_url:
        from evaluation.scoring.judge import Judge

        judge = Judge(args.judge_url, args.judge_model)
    models = {name: load_model(folder) for name, folder in folders.items()}
    runner = Runner(models, settings, output, judge=judge, progress=not args.json)
    try:
        stats = runner.run(questions)
    finally:
        runner.close()
    keys = {q.key for q in questions}
    records = [r for r in read_answers(output / ANSWERS) if r.key in keys]
    summary = write_summary(output, records, list(folders))
    if args.suite == "egoschema":
        from evaluation.submission import describe, write_submissions

        for sub in write_submissions(output, records, list(folders)):
            print(describe(sub), file=sys.stderr)
    print(f"{stats.answered} answered now, {stats.skipped_done} earlier, {stats.bad_media} missing or bad media; "
          f"{output}/answers.jsonl, summary.md", file=sys.stderr)
    print(markdown(summary))
    return 0


def write_submission_files(runs: list[Path]) -> int:
    """``eval submission RUN``: EgoSchema's submission file(s) from the run folder's answers."""
    from evaluation.runner import ANSWERS, SETTINGS, read_answers
    from evaluation.submission import describe, write_submissions

    if len(runs) != 1:
        raise SystemExit("usage: launch.py eval submission RUN (a run folder holding answers.jsonl)")
    run = runs[0]
    if not (run / ANSWERS).is_file():
        raise SystemExit(f"no {ANSWERS} in {run}; give the folder an EgoSchema run wrote (--output)")
    models = None
    if (run / SETTINGS).is_file():
        models = list(json.loads((run / SETTINGS).read_text(encoding="utf-8")).get("models", {})) or None
    subs = write_submissions(run, read_answers(run / ANSWERS), models)
    if not subs:
        raise SystemExit(f"{run / ANSWERS} holds no EgoSchema answers; the submission file is for --suite egoschema")
    for sub in subs:
        print(describe(sub))
    return 0
