"""The Gradio page: Chat, Compare and Under-the-hood tabs over one chat engine.

`build_demo(engine, ...)` only lays out components and wires events to the plain
functions in handlers.py / compare.py / inspect_view.py; `serve(...)` starts it with a
bounded queue. Nothing here loads a model: the engine is passed in.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no internet, no analytics

import gradio as gr  # noqa: E402

from app import compare, handlers, inspect_view  # noqa: E402
from app.handlers import MODE_AV, MODES  # noqa: E402
from app.votes import VoteLog  # noqa: E402
from model.chat import heap  # noqa: E402
from model.media import MAX_FRAMES, LoadOptions  # noqa: E402

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SESSION_TTL_S = 2 * 3600  # a tab idle this long loses its conversation (frees memory)
# Per-tab states kept at most (the oldest are dropped first). Each holds Gradio's copy of the page
# config, ~0.13 MB measured by bench.soak --probe, and a ChatSession; only handlers.MAX_LIVE_SESSIONS
# of those keep a conversation, the rest keep just their "expired" mark for the next question.
MAX_SESSIONS = 256
MAX_UPLOAD = "512mb"  # uploads above this are refused by the server before they reach the loader

CSS = """
#notice p, #media-note p { margin: 0.2em 0; }
#notice { min-height: 1.5em; }
footer { display: none !important; }
"""

API_DESCRIPTION = (
    "Ask about a media file. Inputs: media (a video, image or audio file; send none to ask a "
    "follow-up in the same client's conversation), question (text), settings (optional JSON "
    'object, e.g. {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 200, "num_beams": 1, '
    '"seed": 0, "num_frames": 8, "mode": "Vision only", "model": "<name>", "system": "<system prompt>"}). '
    "Streams the growing answer text."
)


@dataclass
class Controls:
    """The sidebar's generation controls, shared by the Chat and Compare tabs."""

    temperature: gr.Slider
    top_p: gr.Slider
    max_new_tokens: gr.Slider
    num_beams: gr.Slider
    num_frames: gr.Slider

    def generation(self) -> list[gr.components.Component]:
        return [self.temperature, self.top_p, self.max_new_tokens, self.num_beams]


def load_examples(folder: Path = ASSETS) -> list[dict[str, Any]]:
    """assets/examples.json entries whose file exists, with absolute paths."""
    listing = folder / "examples.json"
    if not listing.exists():
        return []
    out = []
    for item in json.loads(listing.read_text()):
        path = folder / item["file"]
        if path.exists():
            out.append({"path": str(path), "questions": list(item.get("questions", []))})
    return out


def _controls(max_frames: int, defaults) -> Controls:
    """The sidebar, starting from ``defaults``: the (first) model folder's generation settings."""
    with gr.Sidebar(label="Settings", open=True):
        gr.Markdown("### Generation")
        temperature = gr.Slider(0.0, 2.0, value=0.0 if defaults.greedy else defaults.temperature, step=0.05,
                                label="Temperature (0 = greedy)")
        top_p = gr.Slider(0.1, 1.0, value=defaults.top_p, step=0.05, label="Top-p")
        max_new_tokens = gr.Slider(8, 1024, value=defaults.max_new_tokens, step=8, label="Max new tokens")
        num_beams = gr.Slider(1, 10, value=defaults.num_beams, step=1, label="Beams (1 = sampling)")
        gr.Markdown("### Media")
        num_frames = gr.Slider(1, max_frames, value=min(LoadOptions.num_frames, max_frames), step=1,
                               label="Number of frames",
                               info="Frames sampled uniformly from a video; changing it re-reads the file.")
    return Controls(temperature, top_p, max_new_tokens, num_beams, num_frames)


def _settings(temperature, top_p, max_new_tokens, num_beams):
    return handlers.make_settings(temperature, top_p, max_new_tokens, num_beams)


# -- chat tab: event functions (thin adapters from handler results to component updates)


def _media_outputs(session: handlers.ChatSession, status: handlers.MediaStatus) -> tuple:
    path = session.media_path
    kind = status.kind
    return (
        session,
        gr.update(value=status.mode, interactive=status.mode_enabled, info=status.mode_info or None),
        status.note,
        session.messages(),
        gr.update(value=path if kind == "video" else None, visible=kind == "video"),
        gr.update(value=path if kind == "image" else None, visible=kind == "image"),
        gr.update(value=path if kind == "audio" else None, visible=kind == "audio"),
        "",
    )


def _on_media(engine, session, path, mode, num_frames, model):
    if not path and session is not None and session.media_path:
        return (gr.skip(),) * 8  # a cleared upload box keeps the loaded file
    try:
        session, status = handlers.load_media(engine, session, path, mode, num_frames, model)
    finally:
        heap.release_free_memory()  # decoding's buffers are freed: give the pages back
    return _media_outputs(session, status)


def _on_mode(engine, session, mode, num_frames):
    session, note = handlers.change_mode(engine, session, mode, num_frames)
    return session, note or gr.skip(), session.messages()


def _on_ask(engine, session, question, *gen):
    settings = _settings(*gen)
    try:
        for current, notice in handlers.ask(engine, session, question, settings):
            yield current, current.messages(), notice, ("" if not notice else gr.skip())
    finally:
        heap.release_free_memory()  # the request's buffers are freed: give the pages back


def _on_regenerate(engine, session, *gen):
    try:
        for current, notice in handlers.regenerate(engine, session, _settings(*gen)):
            yield current, current.messages(), notice
    finally:
        heap.release_free_memory()


def _on_system(engine, session, text):
    session, notice = handlers.set_system(engine, session, text)
    return session, session.messages(), notice or gr.skip()


def _on_small(fn, engine, session):
    session, notice = fn(engine, session)
    return session, session.messages(), notice


def _on_api(engine, session, media, question, settings):
    try:
        yield from handlers.api_chat(engine, session, media, question, settings)
    except ValueError as err:
        raise gr.Error(str(err)) from err
    finally:
        heap.release_free_memory()


# -- layout ---------------------------------------------------------------------------


def _media_column(model_names: list[str]) -> dict[str, Any]:
    c: dict[str, Any] = {}
    c["model"] = gr.Dropdown(model_names, value=model_names[0], label="Model",
                             visible=len(model_names) > 1, elem_id="chat-model")
    c["file"] = gr.File(label="Video, image or audio file", elem_id="media-file",
                        file_types=["video", "image", "audio"], height=120)
    c["video"] = gr.Video(label="Video", interactive=False, visible=False, height=240)
    c["image"] = gr.Image(label="Image", interactive=False, visible=False, type="filepath", height=240)
    c["audio"] = gr.Audio(label="Audio", interactive=False, visible=False, type="filepath")
    with gr.Accordion("Record from the webcam or microphone", open=False):
        c["webcam"] = gr.Video(sources=["webcam"], include_audio=True, label="Webcam")
        c["mic"] = gr.Audio(sources=["microphone"], type="filepath", label="Microphone")
    c["mode"] = gr.Radio(list(MODES), value=MODE_AV, label="The model uses", elem_id="mode")
    c["note"] = gr.Markdown("Upload a video, an image or an audio file to start.", elem_id="media-note")
    return c


def _chat_column() -> dict[str, Any]:
    c: dict[str, Any] = {}
    c["chatbot"] = gr.Chatbot(label="Conversation", elem_id="chatbot", height=440,
                              buttons=["copy"], placeholder="Answers stream here.")
    c["notice"] = gr.Markdown("", elem_id="notice")
    with gr.Row():
        c["question"] = gr.Textbox(placeholder="Ask about the video…", show_label=False, scale=5,
                                   elem_id="question", lines=1, max_lines=4)
        c["send"] = gr.Button("Send", variant="primary", scale=1, elem_id="send")
    with gr.Row():
        c["stop"] = gr.Button("Stop", elem_id="stop", size="sm")
        c["regenerate"] = gr.Button("Regenerate", elem_id="regenerate", size="sm")
        c["undo"] = gr.Button("Undo", elem_id="undo", size="sm")
        c["clear"] = gr.Button("Clear", elem_id="clear", size="sm")
    with gr.Accordion("Advanced", open=False):
        c["system"] = gr.Textbox(label="System prompt", elem_id="system", lines=1, max_lines=6,
                                 placeholder="Empty: the model's default (press Enter to apply)",
                                 info="Replaces the system prompt; applying it starts a new conversation.")
    return c


def _examples(media_file: gr.File, question: gr.Textbox) -> None:
    items = load_examples()
    if not items:
        return
    rows = [[item["path"], q] for item in items for q in item["questions"][:2]]
    labels = [f"{Path(item['path']).stem.replace('_', ' ')}: {q}" for item in items for q in item["questions"][:2]]
    gr.Examples(rows, inputs=[media_file, question], label="Examples (clips from assets/)",
                example_labels=labels, examples_per_page=10)


def _wire_chat(engine, state: gr.State, m: dict, c: dict, controls: Controls, concurrency: int) -> None:
    e = functools.partial
    media_outputs = [state, m["mode"], m["note"], c["chatbot"], m["video"], m["image"], m["audio"], c["notice"]]
    for source in ("file", "webcam", "mic"):
        m[source].change(e(_on_media, engine), [state, m[source], m["mode"], controls.num_frames, m["model"]],
                         media_outputs, concurrency_id="media", api_visibility="undocumented")
    m["model"].change(e(_on_media, engine), [state, m["file"], m["mode"], controls.num_frames, m["model"]],
                      media_outputs, concurrency_id="media", api_visibility="undocumented")
    m["mode"].input(e(_on_mode, engine), [state, m["mode"], controls.num_frames],
                    [state, m["note"], c["chatbot"]], concurrency_id="media", api_visibility="undocumented")
    controls.num_frames.release(e(_on_mode, engine), [state, m["mode"], controls.num_frames],
                                [state, m["note"], c["chatbot"]], concurrency_id="media",
                                api_visibility="undocumented")
    gen = controls.generation()
    ask_args = dict(fn=e(_on_ask, engine), inputs=[state, c["question"], *gen],
                    outputs=[state, c["chatbot"], c["notice"], c["question"]],
                    concurrency_id="generate", concurrency_limit=concurrency, api_visibility="undocumented")
    ask_events = [c["send"].click(**ask_args), c["question"].submit(**ask_args)]
    regen = c["regenerate"].click(e(_on_regenerate, engine), [state, *gen], [state, c["chatbot"], c["notice"]],
                                  concurrency_id="generate", concurrency_limit=concurrency,
                                  api_visibility="undocumented")
    c["stop"].click(e(handlers.stop, engine), [state], [c["notice"]], cancels=[*ask_events, regen],
                    queue=False, api_visibility="undocumented")
    for event in (c["system"].submit, c["system"].blur):
        event(e(_on_system, engine), [state, c["system"]], [state, c["chatbot"], c["notice"]],
              concurrency_id="media", api_visibility="undocumented")
    for name, fn in (("undo", handlers.undo), ("clear", handlers.clear)):
        c[name].click(e(_on_small, fn, engine), [state], [state, c["chatbot"], c["notice"]],
                      concurrency_id="media", api_visibility="undocumented")


def _api_endpoint(engine, concurrency: int) -> None:
    """The scriptable `chat` endpoint, on hidden components with its own per-client state."""
    state = gr.State(None, time_to_live=SESSION_TTL_S,
                     delete_callback=handlers.state_closer(handlers.close_session, engine))
    with gr.Row(visible=False):
        media = gr.File(label="media")
        question = gr.Textbox(label="question")
        settings = gr.JSON(value={}, label="settings")
        answer = gr.Textbox(label="answer")
        button = gr.Button("chat")
    button.click(functools.partial(_on_api, engine), [state, media, question, settings], [state, answer],
                 api_name="chat", api_description=API_DESCRIPTION, concurrency_id="generate",
                 concurrency_limit=concurrency)


def build_demo(engine, *, votes_path: str | Path = "runs/votes.jsonl", max_frames: int = MAX_FRAMES,
               concurrency: int = 1, title: str = "Video-LLaMA") -> gr.Blocks:
    """The whole page over `engine`. Every tab's state is per browser tab."""
    names = list(engine.model_names)
    votes = VoteLog(Path(votes_path))
    # delete_cache: uploaded files older than 2 h are removed every hour (bounded disk).
    with gr.Blocks(title=title, delete_cache=(3600, SESSION_TTL_S)) as demo:
        gr.Markdown(f"# {title}\nChat about a video, an image or a sound: the model sees the frames "
                    "and hears the audio. Upload a file or pick an example below.")
        controls = _controls(max_frames, engine.generation_defaults())
        chat_state = gr.State(None, time_to_live=SESSION_TTL_S,
                              delete_callback=handlers.state_closer(handlers.close_session, engine))
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                with gr.Row():
                    with gr.Column(scale=2):
                        media = _media_column(names)
                    with gr.Column(scale=3):
                        chat = _chat_column()
                _examples(media["file"], chat["question"])
            with gr.Tab("Compare", id="compare"):
                compare.build_tab(engine, votes, controls, concurrency)
            with gr.Tab("Under the hood", id="inspect") as inspect:
                inspect_view.build_tab(chat_state, inspect, engine)
        _wire_chat(engine, chat_state, media, chat, controls, concurrency)
        _api_endpoint(engine, concurrency)
    return demo


def _patient_url_ok(url: str) -> bool:
    """Whether the page answers, retried for up to 30 s.

    ``launch()`` refuses to start when its own check fails, and that check gives up on the first
    3-second timeout. With the LLM loaded, a page request on a busy 2-core machine was seen to
    take 2-3 s, so the app sometimes refused to start. This check waits patiently instead.
    """
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.head(url, timeout=10).status_code < 400:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def serve(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
          concurrency: int = 1, queue_size: int = 16, votes_path: str | Path = "runs/votes.jsonl",
          block: bool = True, quiet: bool = False):
    """Start the server with a bounded queue; returns (app, local_url, share_url)."""
    # Generation events carry their own limit (build_demo); light events may run a few at once.
    demo.queue(max_size=queue_size, default_concurrency_limit=max(2, concurrency))
    votes_dir = Path(votes_path).resolve().parent
    votes_dir.mkdir(parents=True, exist_ok=True)
    gr.networking.url_ok = _patient_url_ok  # see _patient_url_ok: the stock check is too impatient
    return demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                       ssr_mode=False, quiet=quiet, show_error=True, allowed_paths=[str(votes_dir)],
                       max_file_size=MAX_UPLOAD, state_session_capacity=MAX_SESSIONS,
                       theme=gr.themes.Soft(), css=CSS, footer_links=["api"])
