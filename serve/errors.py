"""Errors the server answers with, in the OpenAI error schema, and how engine errors map to them."""

from __future__ import annotations

import logging

from model.chat.errors import ChatError, EngineBusy
from model.media import MediaError, MediaTooLarge
from serve.schema import ErrorBody, ErrorResponse

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2  # what a 429 asks the client to wait; one short answer on the bundled model


class ApiError(Exception):
    """An HTTP error with an OpenAI error object (``type`` as OpenAI names them)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(error=ErrorBody(message=message, type=type, param=param, code=code))
        self.headers = headers or {}


def api_error(err: BaseException) -> ApiError:
    """The HTTP error for anything a request raised (unexpected ones are logged, as 500)."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, MediaTooLarge):
        return ApiError(413, str(err), code="media_too_large")
    if isinstance(err, MediaError):
        return ApiError(400, str(err), code="invalid_media")
    if isinstance(err, EngineBusy):
        return ApiError(429, f"{err}; retry after {RETRY_AFTER_S} s", type="rate_limit_error",
                        code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(err, ChatError):
        return ApiError(400, str(err))
    log.error("unexpected error while answering a request", exc_info=err)
    return ApiError(500, f"the server failed to answer ({type(err).__name__}: {err}); it is still running, "
                         "try again", type="server_error")
