"""The API as a Ray Serve deployment: N replicas, each its own process with its own engine.

Each replica loads the models and builds the same FastAPI app as the single-process server
(``serve/app.py``), given to Ray Serve as the replica's ingress once the models are loaded
(``__serve_build_asgi_app__``); Ray's HTTP proxy spreads requests over the replicas. A replica
takes one GPU when the cluster has GPUs, CPUs otherwise (``--replica-cpus``, one torch thread
each unless ``--threads`` says otherwise). Replicas are fixed (``--replicas``) or autoscaled by
requests in flight (``--min-replicas``/``--max-replicas``/``--target-queue``). A conversation
named in the ``X-Session-Id`` header stays on one replica, where its media is cached
(``serve/ray_router.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from ray import serve
from ray.serve.config import RequestRouterConfig

from model.chat import heap
from serve.app import Backend, build_app
from serve.loading import build_engine
from serve.media import MediaPolicy
from serve.ray_router import SessionAffinityRouter

log = logging.getLogger("serve.ray")

APP_NAME = "videollama"


@serve.deployment
@serve.ingress()
class VideoLlamaReplica:
    """One engine replica (Ray calls ``__serve_build_asgi_app__`` after ``__init__``)."""

    def __init__(self, args: argparse.Namespace, policy: MediaPolicy):
        heap.limit_arenas()  # before the engine starts its threads (Ray's own already run)
        self.backend = Backend(engine=build_engine(args), policy=policy,
                               max_body_bytes=int(args.max_body_mb * 2**20))

    def __serve_build_asgi_app__(self):
        return build_app(self.backend)

    def __del__(self):
        engine = getattr(getattr(self, "backend", None), "engine", None)
        if engine is not None:
            engine.close(timeout=5)


def deployment_options(args: argparse.Namespace, gpus: float) -> dict:
    """Ray Serve options from the command line: replicas or autoscaling, resources, queue bounds."""
    options: dict = {"ray_actor_options": {"num_cpus": args.replica_cpus, "num_gpus": 1 if gpus else 0},
                     # Ray queues no more than the engine would accept: the engine's 429 comes first.
                     "max_ongoing_requests": args.concurrency + args.queue_size,
                     "request_router_config": RequestRouterConfig(request_router_class=SessionAffinityRouter)}
    if args.min_replicas is not None or args.max_replicas is not None:
        low = args.min_replicas if args.min_replicas is not None else 1
        high = args.max_replicas if args.max_replicas is not None else max(low, args.replicas or 1)
        if not 0 <= low <= high or high < 1:
            raise ValueError(f"autoscaling bounds must satisfy 0 <= --min-replicas <= --max-replicas, >= 1; "
                             f"got {low} and {high}")
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                         "initial_replicas": max(low, 1),
                                         "target_ongoing_requests": args.target_queue}
    else:
        replicas = args.replicas if args.replicas is not None else 1
        if replicas < 1:
            raise ValueError(f"--replicas must be at least 1, got {replicas}")
        options["num_replicas"] = replicas
    return options


SLOW_MACHINE_PROXY_TIMEOUTS = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
                               "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}


def start(args: argparse.Namespace, policy: MediaPolicy) -> None:
    """Connect to (or start) Ray, start Serve's proxy on --host/--port and deploy the replicas."""
    import ray

    if args.threads is None and not _has_gpu():
        args.threads = 1  # replicas share the machine's cores; one thread each avoids oversubscription
    if args.ray_address:
        ray.init(address=args.ray_address)
    else:
        # Ray Serve gives its HTTP proxy 5 s to report ready and 10 s per health check; on a loaded
        # 2-core machine the proxy's start-up takes longer, and Serve kills it and gives up. The
        # local cluster started here inherits these (a user's own values win; a cluster given by
        # --ray-address keeps its own settings).
        for name, seconds in SLOW_MACHINE_PROXY_TIMEOUTS.items():
            os.environ.setdefault(name, seconds)
        replicas = max(args.replicas or 0, args.max_replicas or 0, 1)
        ray.init(num_cpus=max(os.cpu_count() or 1, int(replicas * args.replica_cpus) + 1),
                 include_dashboard=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    serve.start(http_options={"host": args.host, "port": args.port})
    app = VideoLlamaReplica.options(**deployment_options(args, gpus)).bind(args, policy)
    serve.run(app, name=APP_NAME, route_prefix="/")
    log.info("serving http://%s:%d/v1 through Ray Serve", args.host, args.port)


def stop(args: argparse.Namespace) -> None:
    import ray

    if args.ray_address:
        serve.delete(APP_NAME)  # the cluster and its Serve instance belong to someone else
    else:
        serve.shutdown()
    ray.shutdown()


def run_replicas(args: argparse.Namespace, policy: MediaPolicy) -> int:
    """Deploy, then wait for Ctrl-C or SIGTERM and take everything down again."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        start(args, policy)
        done.wait()
    except ValueError as err:
        print(f"error: {err}")
        return 2
    finally:
        stop(args)
    return 0


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
