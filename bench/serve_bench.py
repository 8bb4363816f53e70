"""The API server under load, and what the API costs over the in-process engine.

    .venv/bin/python -m bench.serve_bench                       # the bundled model, everything
    .venv/bin/python -m bench.serve_bench --modes single,ray-2 --conversations 8
    .venv/bin/python -m bench.serve_bench --modes ray-2,ray-2-sessions --skip-in-process \
        --clips-dir runs/eval-bench-media --conversations 6 --turns 4   # session affinity, a clip per viewer

With the official ``openai`` client against ``launch.py serve`` on the bundled model
(checkpoints/toy-world), one clip with sound:

1. load: ``--conversations`` concurrent streaming conversations of ``--turns`` turns each
   (every follow-up resends the conversation, as OpenAI clients do), against each server
   mode: ``single`` (one process, uvicorn), ``ray-1`` and ``ray-2`` (Ray Serve replicas behind
   Ray's proxy; on a CPU each of 2 replicas gets 1 torch thread, 1 replica gets 2), and
   ``ray-2-sessions`` (ray-2 with each conversation named in ``X-Session-Id``, so its turns
   stay on one replica: serve/ray_router.py). Prints failures, p50/p95 time to first token
   (TTFT) and to the last token, the follow-ups' p50 TTFT, requests per minute;
2. API overhead: the same requests (one fresh question each) through the single server and
   through an in-process engine (the same stateless path the server runs), TTFT side by
   side. Target: within 50 ms;
3. a follow-up that resends the conversation, TTFT with the caches the first turn left
   against the same request with every cache cleared (in-process). Target ratio <= 0.3.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

from model.chat.cache import FeatureCache, LRUCache
from model.chat.engine import ChatEngine, GenerationSettings
from model.chat.stateless import MediaFile, Message, start_conversation
from model.weights.checkpoint import load_model

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "assets" / "red_square_low_tone.mp4"
QUESTIONS = ["What is moving in the video?", "What do you hear?"]
# Server flags per mode; ``--threads`` (torch threads per engine process) is added for single and ray-1.
MODE_FLAGS = {"single": [], "ray-1": ["--replicas", "1"], "ray-2": ["--replicas", "2", "--threads", "1"]}
MODE_FLAGS["ray-2-sessions"] = MODE_FLAGS["ray-2"]  # the same servers; only the clients differ
SESSION_MODES = {"ray-2-sessions"}  # conversations send X-Session-Id


@dataclass
class Timed:
    ttft: float | None = None  # seconds to the first content delta
    total: float | None = None  # seconds to the end of the stream
    text: str = ""
    error: str | None = None
    turn: int = 0  # 0: the first question; 1 and on: follow-ups that resend the conversation


@dataclass
class LoadResult:
    mode: str
    requests: list[Timed] = field(default_factory=list)
    wall: float = 0.0


# -- the server ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``launch.py serve FLAGS`` on a free loopback port in a subprocess, its output in ``log_path``
    (a file, not a pipe: Ray logs a lot and nobody reads a pipe); ``stop`` sends SIGINT, which
    takes Serve and its local Ray instance down too. The slow Ray test uses it as well."""

    def __init__(self, flags: list[str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_path.open("w")
        cmd = [sys.executable, "launch.py", "serve", "--port", str(self.port), *flags]
        self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 400) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise RuntimeError(f"the server was not ready after {timeout} s; see {self.log.name}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


# -- requests --------------------------------------------------------------------------
def clip_part(path: Path = CLIP) -> dict:
    data = base64.b64encode(path.read_bytes()).decode()
    return {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{data}"}}


def stream_once(client: openai.OpenAI, model: str, messages: list[dict], max_tokens: int,
                session: str | None = None) -> Timed:
    out, start = Timed(), time.perf_counter()
    try:
        stream = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                temperature=0, stream=True,
                                                extra_headers={"X-Session-Id": session} if session else None)
        for chunk in stream:
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                out.ttft = out.ttft if out.ttft is not None else time.perf_counter() - start
                out.text += delta
        out.total = time.perf_counter() - start
    except openai.APIError as err:
        out.error = f"{type(err).__name__}: {err}"
    return out


def conversation(client: openai.OpenAI, model: str, turns: int, max_tokens: int, index: int,
                 sessions: bool = False, clip: Path = CLIP) -> list[Timed]:
    """One client: ``turns`` questions about ``clip``, each request resending what came before
    (named ``viewer-<index>`` in X-Session-Id when ``sessions``)."""
    messages: list[dict] = []
    results = []
    for turn in range(turns):
        question = f"{QUESTIONS[turn % len(QUESTIONS)]} (viewer {index})"
        content = [clip_part(clip), {"type": "text", "text": question}] if turn == 0 else question
        messages.append({"role": "user", "content": content})
        result = stream_once(client, model, messages, max_tokens, f"viewer-{index}" if sessions else None)
        result.turn = turn
        results.append(result)
        if result.error:
            break
        messages.append({"role": "assistant", "content": result.text})
    return results


def load_test(url: str, model: str, conversations: int, turns: int, max_tokens: int, mode: str,
              clips: list[Path] | None = None) -> LoadResult:
    """``clips``: viewer i asks about clips[i % len(clips)] (default: all about ``CLIP``)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=900)
    conversation(client, model, 1, 4, -1)  # warm-up: first-call costs are not what is measured
    result = LoadResult(mode)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(conversations) as pool:
        sessions = mode in SESSION_MODES
        clips = clips or [CLIP]
        for timed in pool.map(lambda i: conversation(client, model, turns, max_tokens, i, sessions,
                                                     clips[i % len(clips)]),
                              range(conversations)):
            result.requests += timed
    result.wall = time.perf_counter() - start
    return result


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


def print_load(result: LoadResult, expected: int) -> None:
    done = [r for r in result.requests if r.error is None and r.total is not None]
    failures = expected - len(done)
    ttft = [r.ttft for r in done if r.ttft is not None]
    follow = [r.ttft for r in done if r.ttft is not None and r.turn > 0]
    last = [r.total for r in done]
    print(f"{result.mode:>7}: {len(done)}/{expected} answered, failures {failures}; "
          f"TTFT p50 {pct(ttft, .5):.2f} s p95 {pct(ttft, .95):.2f} s (follow-ups p50 {pct(follow, .5):.2f} s); "
          f"last token p50 {pct(last, .5):.2f} s "
          f"p95 {pct(last, .95):.2f} s; {len(done) / result.wall * 60:.1f} requests/min "
          f"({result.wall:.1f} s wall, load average {os.getloadavg()[0]:.1f})")
    for r in result.requests:
        if r.error:
            print(f"         error: {r.error[:200]}")


# -- in-process comparisons ----------------------------------------------------------------
def engine_ttft(engine: ChatEngine, messages: list[Message], max_tokens: int) -> float:
    start = time.perf_counter()
    conv, question = start_conversation(engine, messages, media=MediaFile(str(CLIP)))
    deltas = engine.ask(conv, question, GenerationSettings(max_new_tokens=max_tokens, temperature=0))
    first = None
    for delta in deltas:
        if delta and first is None:
            first = time.perf_counter() - start
    return first if first is not None else float("nan")


def clear_caches(engine: ChatEngine) -> None:
    """Every cache a request could hit: decoded files, frozen features, shared prompt prefixes."""
    engine.loaded = LRUCache(engine.loaded.max_items)
    engine.features = FeatureCache(engine.features.max_items)
    engine.prefixes.clear()


def overhead(engine: ChatEngine, url: str, model: str, repeats: int, max_tokens: int) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=900)
    local, remote = [], []
    for i in range(repeats + 1):  # the first of each is a warm-up
        question = f"Question {i}: what is in the video?"
        local.append(engine_ttft(engine, [Message("user", question)], max_tokens))
        remote.append(stream_once(client, model, [{"role": "user", "content": [
            clip_part(), {"type": "text", "text": question}]}], max_tokens).ttft)
    local, remote = statistics.median(local[1:]), statistics.median(remote[1:])
    print(f"API overhead (median of {repeats}, warm media caches, fresh question each): in-process TTFT "
          f"{local * 1000:.0f} ms, through the API {remote * 1000:.0f} ms, "
          f"difference {(remote - local) * 1000:+.0f} ms (target within 50 ms)")


def follow_up(engine: ChatEngine, repeats: int, max_tokens: int) -> None:
    warm, cold = [], []
    for i in range(repeats):
        clear_caches(engine)
        first = [Message("user", f"{QUESTIONS[0]} (run {i})")]
        conv, question = start_conversation(engine, first, media=MediaFile(str(CLIP)))
        answer = "".join(engine.ask(conv, question, GenerationSettings(max_new_tokens=max_tokens, temperature=0)))
        resend = [*first, Message("assistant", answer), Message("user", QUESTIONS[1])]
        warm.append(engine_ttft(engine, resend, max_tokens))
        clear_caches(engine)
        cold.append(engine_ttft(engine, resend, max_tokens))
    w, c = statistics.median(warm), statistics.median(cold)
    print(f"follow-up resend (median of {repeats}): TTFT {w * 1000:.0f} ms with the first turn's caches, "
          f"{c * 1000:.0f} ms with every cache cleared: ratio {w / c:.2f} (target <= 0.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "checkpoints" / "toy-world")
    parser.add_argument("--modes", default="single,ray-1,ray-2", help=f"comma-separated: {', '.join(MODE_FLAGS)}")
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="requests per side in the overhead and follow-up runs")
    parser.add_argument("--clips-dir", type=Path, default=None,
                        help="load runs: viewer i asks about the i-th .mp4 here (default: every viewer "
                             "asks about assets/red_square_low_tone.mp4, so caches hit across viewers)")
    parser.add_argument("--skip-in-process", action="store_true",
                        help="only the load runs: no in-process follow-up and API-overhead comparisons")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the in-process engine and of the single and ray-1 servers "
                             "(1: on a shared 2-core machine, two spinning OpenMP threads lose to everyone else)")
    args = parser.parse_args()
    name = args.model.resolve().name
    logs = Path(tempfile.mkdtemp(prefix="serve_bench-"))
    print(f"model {name}; {os.cpu_count()} CPU cores (shared with other work; load average "
          f"{os.getloadavg()[0]:.1f}); {args.threads} torch thread(s) per engine but ray-2's (1 each); "
          f"server logs in {logs}")
    import torch

    torch.set_num_threads(args.threads)
    engine = ChatEngine({name: load_model(args.model)})
    try:
        if not args.skip_in_process:
            follow_up(engine, args.repeats, args.max_tokens)
        for mode in args.modes.split(","):
            flags = ["--model", str(args.model), "--queue-size", "64", "--replica-cpus", "0.5", *MODE_FLAGS[mode]]
            if "--threads" not in flags:
                flags += ["--threads", str(args.threads)]
            server = Server(flags, logs / f"serve-{mode}.log")
            try:
                server.wait_ready()
                if mode == "single" and not args.skip_in_process:
                    overhead(engine, server.url, name, args.repeats, args.max_tokens)
                clips = sorted(args.clips_dir.glob("*.mp4")) if args.clips_dir else None
                result = load_test(server.url, name, args.conversations, args.turns, args.max_tokens, mode, clips)
                print_load(result, args.conversations * args.turns)
            finally:
                server.stop()
    finally:
        engine.close()


if __name__ == "__main__":
    main()
