"""Compare tab: the same media and question to two or more models, answers side by side.

Each model gets its own conversation. The engine's media cache keys encoded media by file
hash and encoder identity, so models that share frozen encoders encode the file once.
The answers stream at the same time: one thread per model pushes deltas into a queue that
the handler drains, so a fast model is not held up behind a slow one.
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from app.handlers import MODE_AV, MODE_VISION, error_text, make_settings, state_closer
from app.votes import TALLY_HEADERS, VOTES, VoteLog
from evaluation.ranking import RANK_HEADERS, rank, rank_rows
from evaluation.summary import tables_for

EVAL_RUNS = Path(__file__).resolve().parent.parent / "runs" / "eval"  # where `launch.py eval` writes by default

_DONE = object()  # a worker's end-of-stream marker


@dataclass
class CompareSession:
    """One tab's last comparison: what the votes refer to."""

    models: list[str] = field(default_factory=list)
    convs: dict[str, Any] = field(default_factory=dict)
    media_path: str | None = None
    question: str = ""
    answers: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    voted: bool = False


def close_compare(engine, session: CompareSession | None) -> None:
    if session is not None:
        for conv in session.convs.values():
            engine.clear(conv)


def _check_inputs(engine, models: list[str] | None, media_path: str | None, question: str) -> str | None:
    models = list(models or [])
    if len(models) < 2:
        return "Pick at least two models to compare."
    unknown = [m for m in models if m not in engine.model_names]
    if unknown:
        return f"Unknown model(s) {unknown}; available: {', '.join(engine.model_names)}."
    if not media_path:
        return "Upload a video, an image or an audio file to compare on."
    if not (question or "").strip():
        return "Type a question first."
    return None


def _worker(engine, conv, question: str, settings, index: int, out: queue.Queue) -> None:
    try:
        for delta in engine.ask(conv, question, settings):
            out.put((index, delta))
    except Exception as err:  # noqa: BLE001 - one model failing must not break the others
        out.put((index, f"\n⚠️ {error_text(err)}"))
    finally:
        out.put((index, _DONE))


def _attach_all(engine, session: CompareSession, use_audio: bool, num_frames: int) -> str | None:
    for name in session.models:
        conv = engine.new_conversation(name)
        session.convs[name] = conv
        try:
            engine.attach_media(conv, session.media_path, use_audio=use_audio,
                                num_frames=num_frames)
        except Exception as err:  # noqa: BLE001
            return f"⚠️ {name}: {error_text(err)}"
    return None


def run_compare(engine, session: CompareSession | None, models: list[str] | None, media_path: str | None,
                question: str, settings, mode: str, num_frames: int
                ) -> Iterator[tuple[CompareSession, list[str], str]]:
    """Yields (session, answers in model order, notice) as the answers grow."""
    close_compare(engine, session)  # the previous comparison's conversations are done with
    session = CompareSession()
    problem = _check_inputs(engine, models, media_path, question)
    if problem:
        yield session, [], f"⚠️ {problem}"
        return
    session.models, session.media_path, session.question = list(models), str(media_path), question.strip()
    session.settings = {**dataclasses.asdict(settings), "mode": mode, "num_frames": int(num_frames)}
    session.answers = [""] * len(session.models)
    problem = _attach_all(engine, session, use_audio=mode != MODE_VISION, num_frames=int(num_frames))
    if problem:
        yield session, session.answers, problem
        return
    yield session, session.answers, ""
    out: queue.Queue = queue.Queue()
    threads = [threading.Thread(target=_worker, daemon=True,
                                args=(engine, session.convs[name], session.question, settings, i, out))
               for i, name in enumerate(session.models)]
    # The first model starts alone: once it streams, the file's frozen features are in the
    # engine's cache, so models sharing its encoders skip encoding instead of racing it.
    threads[0].start()
    waiting, running = threads[1:], len(threads)
    try:
        while running:
            index, delta = out.get()
            for thread in waiting:
                thread.start()
            waiting = []
            if delta is _DONE:
                running -= 1
                continue
            session.answers[index] += delta
            yield session, session.answers, ""
        session.finished = True
        yield session, session.answers, "Done. Which answer is better?"
    finally:
        if running:  # stopped early: free every model's worker
            for conv in session.convs.values():
                engine.cancel(conv)
        # A comparison takes one question; what votes need is its text. Its conversations'
        # media and KV caches go now, not when the tab closes hours later: they are not among
        # the chat's capped live sessions (handlers.MAX_LIVE_SESSIONS).
        close_compare(engine, session)


def vote(log: VoteLog, session: CompareSession | None, choice: str) -> str:
    """Record a vote on the last finished comparison; returns the message for the page."""
    if session is None or not session.finished:
        return "⚠️ Run a comparison and let it finish before voting."
    if session.voted:
        return "⚠️ You already voted on this comparison; run a new one to vote again."
    log.append(choice, models=session.models, answers=session.answers, question=session.question,
               media_path=session.media_path, settings=session.settings)
    session.voted = True
    return f"Thanks! Recorded “{choice}” for {session.models[0]} vs {session.models[1]}."


# -- the tab ----------------------------------------------------------------------------


def _on_compare(engine, box_count: int, session, models, media_path, question, mode,
                temperature, top_p, max_new_tokens, num_beams, num_frames):
    settings = make_settings(temperature, top_p, max_new_tokens, num_beams)
    labelled = False
    for current, answers, notice in run_compare(engine, session, models, media_path, question,
                                                settings, mode, num_frames):
        if labelled:  # plain values: what API clients get back
            boxes = [answers[i] if i < len(answers) else gr.skip() for i in range(box_count)]
        else:  # once per run: name each box after its model, hide the unused ones
            boxes = [gr.update(value=answers[i], label=current.models[i], visible=True) if i < len(answers)
                     else gr.update(value="", visible=i < 2) for i in range(box_count)]
            labelled = bool(answers)
        yield current, *boxes, notice


def _on_stop(engine, session) -> None:
    if session is not None:
        for conv in session.convs.values():
            engine.cancel(conv)


def _on_vote(log: VoteLog, choice: str, session):
    try:
        note = vote(log, session, choice)
    except ValueError as err:
        note = f"⚠️ {err}"
    download = gr.update(value=str(log.path)) if log.path.exists() else gr.skip()
    return note, log.tally(), download


def ranking_rows(log: VoteLog) -> list[list]:
    """The votes as a Bradley-Terry ranking with 95% intervals (math: evaluation/ranking.py)."""
    return rank_rows(rank(log.records()))


def eval_tables(engine, runs_root: Path = EVAL_RUNS) -> str:
    text = tables_for(list(engine.model_names), runs_root)
    return text or (f"No evaluation run in `{runs_root}` names a loaded model yet: "
                    "`python launch.py eval --suite NAME --data DIR --model DIR` writes one.")


def build_tab(engine, log: VoteLog, controls, concurrency: int) -> None:
    """Lay out the Compare tab and wire its events (answer boxes: one per model, max)."""
    names = list(engine.model_names)
    state = gr.State(None, time_to_live=2 * 3600, delete_callback=state_closer(close_compare, engine))
    gr.Markdown("The same file and question go to every model you pick; the answers stream side by side. "
                "Votes compare the two leftmost answers and are saved with their inputs."
                + ("" if len(names) > 1 else "\n\n**Only one model is loaded.** Start the app with two or "
                   "more `--model DIR` / `--preset NAME` options to compare."))
    with gr.Row():
        with gr.Column(scale=2):
            models = gr.CheckboxGroup(names, value=names[:2], label="Models (two or more)", elem_id="cmp-models")
            media = gr.File(label="Video, image or audio file", file_types=["video", "image", "audio"],
                            height=120, elem_id="cmp-file")
            mode = gr.Radio([MODE_AV, MODE_VISION], value=MODE_AV, label="The models use")
            question = gr.Textbox(label="Question", placeholder="Ask every model the same thing…",
                                  elem_id="cmp-question")
            with gr.Row():
                run = gr.Button("Compare", variant="primary", elem_id="cmp-run")
                stop = gr.Button("Stop")
            notice = gr.Markdown("", elem_id="cmp-notice")
        with gr.Column(scale=3):
            with gr.Row():
                labels = names + [f"model {i + 1}" for i in range(len(names), 2)]  # two boxes even for one model
                boxes = [gr.Textbox(label=label, lines=10, max_lines=20, interactive=False, visible=i < 2,
                                    elem_id=f"cmp-answer-{i}") for i, label in enumerate(labels)]
            with gr.Row():
                buttons = {choice: gr.Button(label, size="sm") for choice, label in VOTES.items()}
            vote_note = gr.Markdown("", elem_id="cmp-vote-note")
            tally = gr.Dataframe(log.tally(), headers=TALLY_HEADERS, interactive=False, label="Votes so far")
            ranking = gr.Dataframe(ranking_rows(log), headers=RANK_HEADERS, interactive=False,
                                   label="Ranking from the votes (Bradley-Terry, Elo scale; ties count half)")
            download = gr.DownloadButton("Download votes (JSONL)", value=str(log.path) if log.path.exists()
                                         else None, size="sm")
    inputs = [state, models, media, question, mode, *controls.generation(), controls.num_frames]
    event = run.click(functools.partial(_on_compare, engine, len(boxes)), inputs, [state, *boxes, notice],
                      api_name="compare", concurrency_id="compare", concurrency_limit=concurrency,
                      api_description="Ask two or more models the same question about one media file.")
    # Cancel the engine's work now; cancelling the event also ends run_compare's generator.
    stop.click(functools.partial(_on_stop, engine), [state], None, cancels=[event],
               queue=False, api_visibility="undocumented")
    for choice, button in buttons.items():
        button.click(functools.partial(_on_vote, log, choice), [state], [vote_note, tally, download],
                     api_name=f"vote_{choice}", concurrency_id="votes"
                     ).then(functools.partial(ranking_rows, log), None, ranking, api_visibility="undocumented")
    with gr.Accordion("Benchmark results of the loaded models", open=False):
        gr.Markdown(eval_tables(engine), elem_id="cmp-eval-tables")
