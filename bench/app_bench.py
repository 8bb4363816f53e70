"""Load test of the web app: N concurrent gradio_client clients on loopback.

Each client opens its own session, uploads a clip with its first question and asks a
follow-up about it (two questions), through the documented `chat` endpoint. Reports p50 and
p95 of the time to first token (first non-empty streamed update, upload included) and to
the full answer, per question, and the failures.

    python -m bench.app_bench                        # serve checkpoints/toy-world in-process
    python -m bench.app_bench --model DIR --clients 8
    python -m bench.app_bench --preset tiny --random-weights   # checks the plumbing only
    python -m bench.app_bench --url http://127.0.0.1:7860/   # an app that is already running
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from model.commands.common import add_model_arguments

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent

QUESTIONS = ("What colour is the shape?", "Which way does it move?")


@dataclass
class Timing:
    question: int  # 0: first question (with upload), 1: follow-up
    first_token: float
    total: float
    chars: int


@dataclass
class Results:
    timings: list[Timing] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def ask(client, media, question: str, settings: dict) -> Timing:
    start = time.perf_counter()
    job = client.submit(media, question, settings, api_name="/chat")
    first = None
    for update in job:
        if first is None and update:
            first = time.perf_counter() - start
    answer = job.outputs()[-1] if job.outputs() else ""
    total = time.perf_counter() - start
    if not answer:
        raise RuntimeError("empty answer")
    return Timing(0, first if first is not None else total, total, len(answer))


def run_client(client, clip: Path, settings: dict, results: Results, barrier: threading.Barrier) -> None:
    from gradio_client import handle_file

    try:
        barrier.wait()  # every client starts asking at the same moment
        for index, question in enumerate(QUESTIONS):
            media = handle_file(str(clip)) if index == 0 else None
            timing = ask(client, media, question, settings)
            timing.question = index
            with results.lock:
                results.timings.append(timing)
    except Exception as err:  # noqa: BLE001 - a failure is a result to report, not a crash
        with results.lock:
            results.failures.append(f"{type(err).__name__}: {err}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def report(results: Results, wall: float, clients: int) -> None:
    print(f"\n{clients} clients x {len(QUESTIONS)} questions in {wall:.1f} s wall; "
          f"failures: {len(results.failures)}")
    for failure in results.failures[:10]:
        print(f"  failure: {failure}")
    print(f"{'question':<22}{'n':>3}{'TTFT p50':>10}{'TTFT p95':>10}{'full p50':>10}{'full p95':>10}{'chars':>7}")
    for index, label in enumerate(("1st (with upload)", "2nd (follow-up)")):
        rows = [t for t in results.timings if t.question == index]
        if not rows:
            continue
        first, total = [t.first_token for t in rows], [t.total for t in rows]
        print(f"{label:<22}{len(rows):>3}{percentile(first, 50):>9.2f}s{percentile(first, 95):>9.2f}s"
              f"{percentile(total, 50):>9.2f}s{percentile(total, 95):>9.2f}s"
              f"{statistics.median(t.chars for t in rows):>7.0f}")
    everything = results.timings
    if everything:
        print(f"{'all':<22}{len(everything):>3}{percentile([t.first_token for t in everything], 50):>9.2f}s"
              f"{percentile([t.first_token for t in everything], 95):>9.2f}s"
              f"{percentile([t.total for t in everything], 50):>9.2f}s"
              f"{percentile([t.total for t in everything], 95):>9.2f}s")


def start_server(args: argparse.Namespace):
    """Serve the app in this process (background thread); returns (demo, url)."""
    from app.ui import build_demo, serve
    from model.chat.engine import ChatEngine
    from model.commands.common import load_models as load_from_args

    models = load_from_args(args)  # --model / --preset [--random-weights], as every command
    engine = ChatEngine(models, concurrency=args.concurrency, queue_size=args.queue_size)
    demo = build_demo(engine, votes_path=ROOT / "runs" / "bench_votes.jsonl", concurrency=args.concurrency,
                      max_frames=min(m.config.max_frame_pos for m in models.values()))
    _, url, _ = serve(demo, port=args.port, concurrency=args.concurrency, queue_size=args.queue_size,
                      votes_path=ROOT / "runs" / "bench_votes.jsonl", block=False, quiet=True)
    return demo, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an app that is already running (else one is started here)")
    add_model_arguments(parser)  # default: the bundled checkpoints/toy-world
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--clip", default=str(ROOT / "assets" / "red_square_low_tone.mp4"))
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=2, help="server: answers generated at once")
    parser.add_argument("--queue-size", type=int, default=32)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()

    demo, url = (None, args.url) if args.url else start_server(args)
    settings = {"max_new_tokens": args.max_new_tokens, "temperature": 0.7, "seed": 0}
    print(f"app at {url}; {args.clients} clients; clip {Path(args.clip).name}; settings {settings}; "
          f"server concurrency {args.concurrency if not args.url else '?'}")
    from gradio_client import Client

    # Connecting reads the app's API description (slow-ish): done up front, not timed.
    clients = [Client(url, verbose=False, httpx_kwargs={"timeout": 120}) for _ in range(args.clients)]
    results = Results()
    barrier = threading.Barrier(args.clients)
    threads = [threading.Thread(target=run_client, args=(client, Path(args.clip), settings, results, barrier))
               for client in clients]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report(results, time.perf_counter() - start, args.clients)
    if demo is not None:
        demo.close()
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
