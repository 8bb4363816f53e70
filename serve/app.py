"""The FastAPI application: routes, body limits, error objects and server-sent events.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``. The same app
runs under uvicorn (``launch.py serve``) and as Ray Serve's ingress (``serve/ray_app.py``).

Streaming uses FastAPI's own SSE support (``fastapi.sse``: ``EventSourceResponse`` and its
event encoder) rather than another package, returned from an ordinary endpoint: every check
that can fail (schema, model, media, a full queue) runs before the response starts, so a
failing streaming request gets a proper 4xx status and error object, as OpenAI's does.
A client that disconnects mid-stream cancels its generation (``engine.cancel``). After each
request the free malloc pages go back to the system (``model/chat/heap.py``), as the web app does,
so a long-running server's resident size follows what it holds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import ValidationError

from model.chat import heap
from serve import handlers
from serve.errors import ApiError, api_error
from serve.media import MediaPolicy
from serve.schema import ChatCompletionRequest, ErrorResponse, Health, ModelList

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 100 * 1024**2  # a base64 data: URL is 4/3 of the file


@dataclass
class Backend:
    """What the app serves: the engine (None while the models load) and the operator's limits."""

    engine: Any = None
    policy: MediaPolicy = field(default_factory=MediaPolicy)
    max_body_bytes: int = MAX_BODY_BYTES


def build_app(backend: Backend) -> FastAPI:
    app = FastAPI(title="Video-LLaMA", description="OpenAI-compatible chat completions about videos, "
                                                    "images and sounds")

    served_by = f"{socket.gethostname()}:{os.getpid()}"

    @app.middleware("http")
    async def _served_by(request: Request, call_next):  # which process answered (Ray replicas differ)
        response = await call_next(request)
        response.headers["x-served-by"] = served_by
        return response

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body.model_dump(), status_code=err.status, headers=err.headers)

    @app.get("/health", response_model=Health)
    async def health() -> Any:
        body = handlers.health(backend.engine)
        return JSONResponse(body.model_dump(), status_code=200 if body.models_loaded else 503)

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return handlers.list_models(_engine(backend))

    @app.post("/v1/chat/completions", responses={400: {"model": ErrorResponse}})
    async def chat_completions(request: Request) -> Any:
        engine = _engine(backend)
        body = await _read_body(request, backend.max_body_bytes)
        parsed = parse_request(body)
        try:
            prepared = await anyio.to_thread.run_sync(handlers.prepare, engine, parsed, backend.policy)
            deltas = handlers.open_answer(engine, prepared)
        except Exception as err:
            raise api_error(err) from None
        if parsed.stream:
            return EventSourceResponse(_sse(engine, prepared, deltas))
        try:
            result = await _complete_while_connected(request, engine, prepared, deltas)
        except Exception as err:
            raise api_error(err) from None
        finally:
            # No-op when done. Stops the work if the client left: under Ray Serve the proxy cancels
            # this call instead of sending http.disconnect to the watcher.
            engine.cancel(prepared.conv)
            heap.release_free_memory()  # the request's buffers are freed: give the pages back
        return JSONResponse(result.model_dump())

    return app


def parse_request(body: bytes) -> ChatCompletionRequest:
    """The request, or a 400 naming the first problem (OpenAI answers schema errors with 400)."""
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])  # e.g. messages.0.content
        if first["type"] == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {where}"
        elif first["type"] == "json_invalid":
            message = "the request body is not valid JSON; send a JSON object"
        else:
            message = f"invalid value for {where or 'the body'}: {first['msg']}"
        raise ApiError(400, message, param=where or None) from None


def _engine(backend: Backend) -> Any:
    if backend.engine is None:
        raise ApiError(503, "the model is still loading; try again shortly (GET /health says when it is ready)",
                       type="server_error", code="model_loading", headers={"Retry-After": "5"})
    return backend.engine


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _body_too_large(int(declared), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _body_too_large(len(body), limit)
    return bytes(body)


def _body_too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"the request body is {size / 2**20:.1f} MiB; this server accepts at most "
                         f"{limit / 2**20:.1f} MiB (--max-body-mb)", code="request_too_large")


DISCONNECT_POLL_S = 0.25  # a non-streaming request's watcher waits this long after an unexpected message


async def _complete_while_connected(request: Request, engine: Any, prepared: handlers.Prepared,
                                    deltas: Iterator[str]) -> Any:
    """The whole answer (``handlers.complete`` on a worker thread); a client that hangs up
    meanwhile cancels the engine's request, as closing a stream does, instead of leaving the
    worker busy with an answer nobody reads."""
    async with anyio.create_task_group() as group:
        async def watch() -> None:
            # The body is read, so the next ASGI message is the disconnect (Request.is_disconnected's
            # non-blocking peek never saw it under uvicorn 0.55).
            while (await request.receive())["type"] != "http.disconnect":
                await anyio.sleep(DISCONNECT_POLL_S)  # another message (none is expected): do not spin
            engine.cancel(prepared.conv)

        group.start_soon(watch)
        result = await anyio.to_thread.run_sync(handlers.complete, engine, prepared, deltas, abandon_on_cancel=True)
        group.cancel_scope.cancel()
    return result


async def _sse(engine: Any, prepared: handlers.Prepared, deltas: Iterator[str]) -> AsyncIterator[bytes]:
    """The chunks as SSE events, then ``[DONE]``. Each chunk is produced on a worker thread (the
    engine's iterator blocks); a disconnect cancels this generator and, through ``finally``, the
    engine's request."""
    items = handlers.chunks(engine, prepared, deltas)
    try:
        while True:
            try:
                chunk = await anyio.to_thread.run_sync(next, items, None, abandon_on_cancel=True)
            except Exception as err:  # the answer failed after the stream started
                error = api_error(err)
                yield format_sse_event(data_str=json.dumps(error.body.model_dump()))
                break
            if chunk is None:
                break
            yield format_sse_event(data_str=chunk.model_dump_json())
        yield format_sse_event(data_str="[DONE]")
    finally:
        engine.cancel(prepared.conv)
        heap.release_free_memory()
