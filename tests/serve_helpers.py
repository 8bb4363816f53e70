"""Shared by the API-server tests: the server on 127.0.0.1 at a free port from a background
thread, over a real chat engine on tiny random models, and media as data: URLs."""

from __future__ import annotations

import base64
import mimetypes
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from serve.app import Backend, build_app
from serve.media import MediaPolicy
from tests.app_helpers import free_port


@dataclass
class RunningServer:
    url: str  # ends with /v1
    backend: Backend
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def start_server(engine, policy: MediaPolicy, max_body_bytes: int = 32 * 1024**2) -> RunningServer:
    backend = Backend(engine=engine, policy=policy, max_body_bytes=max_body_bytes)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(backend), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    return RunningServer(f"http://127.0.0.1:{port}/v1", backend, server, thread)


def data_url(path: Path) -> str:
    mime = mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def media_part(kind: str, path: Path) -> dict:
    """An OpenAI content part carrying ``path`` inline (vLLM's spelling for video)."""
    if kind == "audio":
        return {"type": "input_audio", "input_audio": {"data": base64.b64encode(Path(path).read_bytes()).decode(),
                                                       "format": Path(path).suffix.lstrip(".")}}
    field = {"video": "video_url", "image": "image_url"}[kind]
    return {"type": field, field: {"url": data_url(path)}}


def wait_for(condition, timeout: float = 30.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
