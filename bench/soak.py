"""Memory soak of the web app: RSS while it serves many mixed requests.

    python -m bench.soak                      # 1,000 requests, bundled model, 4 clients at once
    python -m bench.soak --requests 300 --clients 2

Starts the app on the bundled model (a child process on 127.0.0.1), prints its starting
footprint stage by stage, the time to serve the page config (/config), then sends mixed
requests through gradio_client's ``chat`` endpoint from ``--clients`` threads: good questions
about the bundled examples (new file or follow-up), random-byte uploads, bad settings, and
requests cancelled mid-answer; each thread starts a fresh client (a new server session) every
``--session-every`` requests. Resident memory (VmRSS) of the app is printed every 100 requests;
the target is no growth beyond 10% after the first 100.

``--probe`` also reports where the memory goes after 100 requests and at the end (Python heap
by line, objects by type, malloc in use vs. free, Gradio sessions, engine caches;
``bench/_soak_probe.py``). Tracing makes the app slower and a little larger.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20
PROBE_FILE = Path("/tmp/videollama-soak/probe.txt")


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the server side (child process) ---------------------------------------------------------------
def serve(port: int, probe: bool = False) -> None:
    """Start the app stage by stage, printing the RSS each stage adds, then serve until killed."""
    from model.chat import heap

    heap.limit_arenas()  # as app/main.py does first
    last = rss_mb()
    print(f"footprint: python interpreter            {last:7.0f} MB", flush=True)

    def stage(name: str) -> None:
        nonlocal last
        now = rss_mb()
        print(f"footprint: {name:32s} +{now - last:6.0f} MB (total {now:6.0f} MB)", flush=True)
        last = now

    import torch  # noqa: F401
    stage("import torch")
    import gradio  # noqa: F401
    import transformers  # noqa: F401
    stage("import gradio, transformers")
    from model.weights import checkpoint as ck

    folder = ROOT / "checkpoints" / "toy-world"
    model = ck.load_model(folder, device="cpu", branches=[])  # the LLM alone (GGUF dequantised)
    stage("LLM (SmolLM2-135M, fp32)")
    model = ck.load_model(folder, device="cpu")  # the same LLM (shared) plus encoders and adapters
    stage("encoders and adapters")
    from app.ui import build_demo
    from app.ui import serve as serve_app
    from model.chat.engine import ChatEngine

    engine = ChatEngine({"toy-world": model})
    demo = build_demo(engine, votes_path="/tmp/videollama-soak/votes.jsonl")
    stage("engine and page")
    serve_app(demo, host="127.0.0.1", port=port, block=False, quiet=True)
    stage("server started")
    if probe:
        from bench._soak_probe import Probe

        Probe(PROBE_FILE, demo, engine).install()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


# -- the client side ---------------------------------------------------------------------------------
def _media(work: Path, seed: int) -> dict[str, list[Path]]:
    from bench.fuzz import random_uploads

    assets = ROOT / "assets"
    good = sorted(p for p in assets.iterdir() if p.suffix in (".mp4", ".png", ".wav"))
    return {"good": good, "bad": random_uploads(work / "random", 40, seed)}


class Soak:
    def __init__(self, url: str, pid: int, media: dict[str, list[Path]], session_every: int):
        self.url, self.pid, self.media, self.session_every = url, pid, media, session_every
        self.lock = threading.Lock()
        self.sent = 0
        self.outcomes: dict[str, int] = {}

    def _client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False)

    def run_thread(self, total: int, seed: int, report) -> None:
        from gradio_client import handle_file

        rng = random.Random(seed)
        client, used = self._client(), 0
        while True:
            with self.lock:
                if self.sent >= total:
                    return
                self.sent += 1
                n = self.sent
            if used >= self.session_every:
                client, used = self._client(), 0
            used += 1
            kind = rng.choice(["new", "new", "follow-up", "follow-up", "random-bytes", "bad-settings", "cancel"])
            media = None
            settings: dict = {"max_new_tokens": 8, "do_sample": False}
            if kind in ("new", "cancel") or (kind == "follow-up" and used == 1):
                media = handle_file(str(rng.choice(self.media["good"])))
            elif kind == "random-bytes":
                media = handle_file(str(rng.choice(self.media["bad"])))
            elif kind == "bad-settings":
                settings = rng.choice([{"temperature": "abc"}, {"seed": 2 ** 70}, {"do_sample": "no"},
                                       {"num_beams": 2.5}, {"top_p": None}, {"num_frames": "hot"}])
            if kind == "cancel":
                settings = {"max_new_tokens": 64}
            outcome = self._send(client, kind, media, settings)
            with self.lock:
                self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            report(n)

    def _send(self, client, kind: str, media, settings: dict) -> str:
        question = "What is in it?" if kind != "follow-up" else "And what colour is it?"
        try:
            if kind == "cancel":
                job = client.submit(media, question, settings, api_name="/chat")
                time.sleep(0.3)
                job.cancel()
                return "cancelled"
            client.predict(media, question, settings, api_name="/chat")
            return "answered"
        except Exception as err:  # noqa: BLE001 - refusals come back as errors; count them
            return "refused" if "AppError" in type(err).__name__ or "error" in str(err).lower() else type(err).__name__


def config_seconds(url: str, n: int = 5) -> float:
    import httpx

    times = []
    for _ in range(n):
        start = time.perf_counter()
        httpx.get(f"{url}/config", timeout=60).raise_for_status()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _print_probe(child: subprocess.Popen, timeout: float = 300) -> None:
    """Ask the app for its last probe report and print both (the first was asked for at 100)."""
    child.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and PROBE_FILE.read_text().count("== probe report") < 2:
        time.sleep(1)
    print(PROBE_FILE.read_text(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4, help="threads sending at once")
    parser.add_argument("--session-every", type=int, default=10, help="requests per client session")
    parser.add_argument("--port", type=int, default=7957)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe", action="store_true",
                        help="trace the app's memory (tracemalloc, gc, malloc) after 100 requests and at the end "
                             "(bench/_soak_probe.py; slower)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port, args.probe)
        return 0

    work = Path("/tmp/videollama-soak")
    work.mkdir(parents=True, exist_ok=True)
    print(f"(the app's own log: {work / 'server.log'})")
    child = subprocess.Popen([sys.executable, "-m", "bench.soak", "--serve", "--port", str(args.port),
                              *(["--probe"] if args.probe else [])],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True, stderr=(work / "server.log").open("w"),
                             env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        for line in child.stdout:
            print(line.rstrip(), flush=True)
            if line.strip() == "ready":
                break
        else:
            print("the app did not start")
            return 1
        url = f"http://127.0.0.1:{args.port}"
        print(f"config: /config served in {config_seconds(url):.3f} s (median of 5)", flush=True)
        soak = Soak(url, child.pid, _media(work, args.seed), args.session_every)
        marks: dict[int, float] = {0: rss_mb(child.pid)}
        start = time.perf_counter()
        print(f"rss: after 0 requests {marks[0]:7.0f} MB", flush=True)

        def report(n: int) -> None:
            if n % 100 == 0:
                marks[n] = rss_mb(child.pid)
                if args.probe and n == 100:
                    child.send_signal(signal.SIGUSR1)
                vs_100 = f", {100 * (marks[n] - marks[100]) / marks[100]:+.1f}% vs 100" if n > 100 else ""
                print(f"rss: after {n:5d} requests {marks[n]:7.0f} MB  ({time.perf_counter() - start:5.0f} s, "
                      f"{dict(sorted(soak.outcomes.items()))}{vs_100})", flush=True)

        threads = [threading.Thread(target=soak.run_thread, args=(args.requests, args.seed + i, report))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(2)
        final = rss_mb(child.pid)
        if args.probe:
            _print_probe(child)
        base = marks.get(100, marks[0])
        print(f"rss: final {final:.0f} MB; growth after the first 100 requests {100 * (final - base) / base:+.1f}% "
              f"(target at most +10%); peak of the marks {max([*marks.values(), final]):.0f} MB")
        print(f"outcomes: {dict(sorted(soak.outcomes.items()))}")
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
