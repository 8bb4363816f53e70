"""The chat engine's errors. Each message says what is wrong and what to do; the app and the
command line show it as it is."""

from __future__ import annotations


class ChatError(ValueError):
    """Base class of the engine's errors; the message says what to do."""


class BadRequest(ChatError):
    """The request cannot be served as given (empty question, missing file, ...)."""


class EngineBusy(ChatError):
    """The request queue is full; try again shortly."""


class NonFiniteOutput(ChatError):
    """The language model produced NaN or infinite scores (damaged weights or input): no token can be drawn."""
