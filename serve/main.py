"""`python launch.py serve`: the OpenAI-compatible API on one process, or on Ray Serve replicas.

Without ``--replicas`` the app runs under uvicorn in this process; the server answers
``/health`` (status "loading", HTTP 503) while the models load. With ``--replicas N`` (or the
autoscaling bounds) each replica is a Ray Serve process with its own engine, behind Ray's
HTTP proxy; ``--ray-address`` joins an existing cluster, otherwise a local Ray instance
starts and stops with the command.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from model.commands.common import add_model_arguments, first_missing
from serve.app import MAX_BODY_BYTES, Backend, build_app
from serve.loading import build_engine
from serve.media import FETCH_TIMEOUT_S, MAX_MEDIA_BYTES, MediaPolicy

log = logging.getLogger("serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)  # --model, --preset, --random-weights, --precision (--load-4bit/8bit), --device
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=1, help="answers generated at once per engine")
    parser.add_argument("--queue-size", type=int, default=16,
                        help="requests waiting per engine; beyond that the server answers 429")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per process (default: torch's choice; replicas on CPU: 1)")
    media = parser.add_argument_group("media")
    media.add_argument("--allowed-media-dir", action="append", default=[], metavar="DIR",
                       help="accept local paths and file:// URLs inside DIR (repeatable; default: none)")
    media.add_argument("--allow-remote-media", action="store_true", help="fetch http(s) media URLs")
    media.add_argument("--max-media-mb", type=float, default=MAX_MEDIA_BYTES / 2**20,
                       help="largest media file accepted (413 beyond)")
    media.add_argument("--max-body-mb", type=float, default=MAX_BODY_BYTES / 2**20,
                       help="largest request body accepted (413 beyond)")
    media.add_argument("--media-timeout", type=float, default=FETCH_TIMEOUT_S,
                       help="seconds allowed to fetch a remote media URL")
    ray = parser.add_argument_group("Ray Serve (any of these runs replicas)")
    ray.add_argument("--replicas", type=int, default=None, help="fixed number of engine replicas")
    ray.add_argument("--min-replicas", type=int, default=None, help="autoscaling: fewest replicas")
    ray.add_argument("--max-replicas", type=int, default=None, help="autoscaling: most replicas")
    ray.add_argument("--target-queue", type=float, default=2.0,
                     help="autoscaling: requests in flight per replica that Ray Serve aims at")
    ray.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs reserved per replica")
    ray.add_argument("--ray-address", default=None, help="join this Ray cluster (e.g. auto, ray://head:10001)")


def media_policy(args: argparse.Namespace) -> MediaPolicy:
    return MediaPolicy(allowed_dirs=tuple(Path(d).resolve() for d in args.allowed_media_dir),
                       allow_remote=args.allow_remote_media, max_bytes=int(args.max_media_mb * 2**20),
                       fetch_timeout_s=args.media_timeout)


def uses_ray(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.replicas, args.min_replicas, args.max_replicas, args.ray_address))


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    problem = first_missing(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if uses_ray(args):
        from serve.ray_app import run_replicas

        return run_replicas(args, media_policy(args))
    return run_single(args, media_policy(args))


def run_single(args: argparse.Namespace, policy: MediaPolicy) -> int:
    import uvicorn

    from model.chat import heap

    heap.limit_arenas()  # before uvicorn, the loader and the engine start threads (model/chat/heap.py)
    backend = Backend(policy=policy, max_body_bytes=int(args.max_body_mb * 2**20))
    server = uvicorn.Server(uvicorn.Config(build_app(backend), host=args.host, port=args.port, log_level="info"))
    failure: list[str] = []

    def load() -> None:
        try:
            backend.engine = build_engine(args)
            log.info("models loaded: %s; serving http://%s:%d/v1", ", ".join(backend.engine.model_names),
                     args.host, args.port)
        except (FileNotFoundError, ValueError) as err:  # checkpoint errors say what to run
            failure.append(str(err))
            server.should_exit = True

    threading.Thread(target=load, name="model-loader", daemon=True).start()
    server.run()
    if backend.engine is not None:
        backend.engine.close()
    if failure:
        print(f"error: {failure[0]}", file=sys.stderr)
        return 2
    return 0
