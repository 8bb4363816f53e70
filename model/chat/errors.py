"""The chat engine's errors. Each message says what is wrong and what to do; the app and the
command line show it as it is."""

from __future__ import annotations


class ChatError(ValueError):
    """Base class of the engine's errors; the message says what to do."""


class BadRequest(ChatError):
    """The request cannot be served as given (empty question, missing file, ...)."""


class WrongMediaKind(BadRequest):
    """A file attached as one kind that is another (an audio file as a video, ...).

    ``found`` and ``asked`` are "video", "image" or "audio"; the message is the Python API's
    wording, and front ends with their own controls (the terminal's ``--audio``) word the fix
    themselves from these fields.
    """

    def __init__(self, path: str, found: str, asked: str):
        self.path, self.found, self.asked = path, found, asked
        article = "an" if found[0] in "aeiou" else "a"
        super().__init__(f"{path!r} is {article} {found} file, not {asked!r}; attach it as kind={found!r}")


class EngineBusy(ChatError):
    """The request queue is full; try again shortly."""


class NonFiniteOutput(ChatError):
    """The language model produced NaN or infinite scores (damaged weights or input): no token can be drawn."""
